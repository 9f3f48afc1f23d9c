"""`reveal`: text from webhook payloads and registries cannot hide characters or pose as other names."""

import pytest
from django.template import Context, Template

from core.roles import Role
from core.text import is_hidden, reveal, script_of
from registries.models import Instance
from tests.registries.conftest import envelope, manifest_event

RLO, ZWSP, CYRILLIC_A = "\u202e", "\u200b", "\u0430"


def test_bidi_and_zero_width_characters_become_visible_markers():
    html = reveal(f"team/app{RLO}gnp.exe{ZWSP}")
    assert RLO not in html and ZWSP not in html
    assert '<span class="hidden-char" title="U+202E RIGHT-TO-LEFT OVERRIDE">\\u202e</span>' in html
    assert '<span class="hidden-char" title="U+200B ZERO WIDTH SPACE">\\u200b</span>' in html
    assert html.startswith("team/app<span") and "gnp.exe" in html


@pytest.mark.parametrize("character", ["\u2066", "\u200d", "\ufeff", "\u00a0", "\u3000", "\u3164", "\ufe0f",
                                       "\U000e0041", "\u2028", "\x85"])
def test_every_kind_of_invisible_character_is_hidden(character):
    assert is_hidden(character)
    assert character not in reveal(f"a{character}b")


def test_plain_text_is_only_escaped():
    assert reveal("team/app:1.0") == "team/app:1.0"
    assert reveal("<script>x</script> & 'q'") == "&lt;script&gt;x&lt;/script&gt; &amp; &#x27;q&#x27;"
    assert reveal("日本語のタグ") == "日本語のタグ"  # Han and kana together are one writing system
    assert reveal("Ελληνικά") == "Ελληνικά"  # one script, not Latin: nothing to flag
    assert reveal(None) == ""


def test_a_cyrillic_homoglyph_in_a_latin_name_is_flagged():
    html = reveal(f"{CYRILLIC_A}pp")
    assert '<mark class="foreign-letter" title="CYRILLIC SMALL LETTER A">' + CYRILLIC_A + "</mark>pp" in html
    assert 'title="Letters from several scripts (Cyrillic, Latin); some may imitate others.">mixed scripts' in html
    assert script_of(CYRILLIC_A) == "CYRILLIC" and script_of("a") == "LATIN" and script_of("1") is None
    assert "mixed scripts" in reveal("ｇoogle")  # fullwidth letters pose as Latin too


def test_the_filter_is_available_in_every_template():
    rendered = Template("{{ name|reveal }}").render(Context({"name": f"x{RLO}y"}))
    assert "\\u202e" in rendered and RLO not in rendered


def test_a_spoofing_webhook_payload_is_shown_revealed(client, client_as):
    """The real intake stores what the payload says; every page that shows it reveals the tricks."""
    instance = Instance.objects.create(name="main", url="http://registry.example:5000")
    repository = f"team/{CYRILLIC_A}pp{ZWSP}"
    tag = f"1.0{RLO}exe"
    event = manifest_event(repository, tag)
    event["actor"] = {"name": f"{CYRILLIC_A}dmin"}
    response = client.post(f"/webhooks/registry/{instance.pk}/", envelope(event), content_type="application/json",
                           HTTP_AUTHORIZATION=instance.webhook_secret)
    assert response.status_code == 202

    viewer = client_as(Role.VIEWER)
    for path in ("/instances/events/", "/"):
        page = viewer.get(path).content.decode()
        assert RLO not in page and ZWSP not in page, path
        assert f"<mark class=\"foreign-letter\" title=\"CYRILLIC SMALL LETTER A\">{CYRILLIC_A}</mark>pp" in page, path
        assert "\\u200b</span>" in page and "\\u202e</span>" in page, path
        assert "mixed scripts" in page, path
    events = viewer.get("/instances/events/").content.decode()
    assert f"<mark class=\"foreign-letter\" title=\"CYRILLIC SMALL LETTER A\">{CYRILLIC_A}</mark>dmin" in events
