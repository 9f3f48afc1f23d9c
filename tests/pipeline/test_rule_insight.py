"""Rule insight: pushes matched per rule and when last (one aggregate query for the whole list),
and the rule form's live preview of the known tags a rule would match (bounded, with the pattern
compiler's message for an invalid pattern; the registry is never read)."""

import hashlib
import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from playwright.sync_api import expect

from core.roles import Role
from pipeline import catalogue
from pipeline.choices import PushOutcome, PushReason
from pipeline.models import PushEvent, RegistryTag
from registries.models import Instance
from rules.models import Rule
from tests.support.browser import login
from tests.support.users import PASSWORD


@pytest.fixture
def local(db) -> Instance:
    return Instance.objects.create(name="local", url="http://registry.invalid:5000", acceleration_enabled=True)


def add_event(instance, rule, tag: str, minutes_ago: int, delivery: str) -> PushEvent:
    event = PushEvent.objects.create(
        instance=instance, source="distribution", delivery_id=delivery, namespace="team", repository="app", tag=tag,
        digest="sha256:" + hashlib.sha256(delivery.encode()).hexdigest(),
        outcome=PushOutcome.CONVERSION_REQUESTED if rule else PushOutcome.SKIPPED,
        reason=PushReason.RULE_MATCHED if rule else PushReason.NO_RULE_MATCHED, reason_detail="test", matched_rule=rule)
    PushEvent.objects.filter(pk=event.pk).update(received_at=timezone.now() - timedelta(minutes=minutes_ago))
    return event


def add_tags(instance, namespace: str, repository: str, tags) -> None:
    RegistryTag.objects.bulk_create(RegistryTag(instance=instance, namespace=namespace, repository=repository, tag=tag,
                                                digest="sha256:" + "a" * 64) for tag in tags)


def text(html: str) -> str:
    """The words of some HTML, tags dropped and spaces (also non-breaking ones) made single."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", html)).strip()


def figures(page: str) -> dict[str, str]:
    """Rule id → the text of its "Pushes matched" cell."""
    return {pk: text(cell) for pk, cell in re.findall(
        r'<tr id="rule-(\d+)">.*?<td class="num" data-pushes-matched="\d+">(.*?)</td>', page, re.S)}


def test_pushes_matched_per_rule_and_when_last(local, client_as):
    busy = Rule.objects.create(instance=local, name="busy", namespace="team", position=1)
    quiet = Rule.objects.create(instance=local, name="quiet", namespace="team", position=2)
    for number, minutes in enumerate((5, 90, 3000)):
        add_event(local, busy, f"1.{number}", minutes, f"d{number}")
    add_event(local, None, "nightly", 1, "unmatched")  # matched no rule: counted nowhere
    viewer = client_as(Role.VIEWER)
    page = viewer.get("/rules/").content.decode()
    assert figures(page) == {str(busy.pk): "3 last 5 min ago", str(quiet.pk): "0 none yet"}
    detail = viewer.get(f"/rules/{busy.pk}/").content.decode()
    shown = re.search(r'<dd id="rule-pushes-matched">(.*?)</dd>', detail, re.S)[1]
    assert text(shown) == "3 last 5 min ago"


def test_the_rule_list_costs_the_same_queries_for_two_rules_or_twenty(local, client_as):
    viewer = client_as(Role.VIEWER)
    viewer.get("/rules/")  # session and role lookups settle

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert viewer.get("/rules/").status_code == 200
        return len(captured)

    for number in range(2):
        rule = Rule.objects.create(instance=local, name=f"r{number}", namespace="team", position=number)
        add_event(local, rule, f"{number}", 1, f"a{number}")
    few = queries()
    for number in range(2, 20):
        rule = Rule.objects.create(instance=local, name=f"r{number}", namespace="team", position=number)
        add_event(local, rule, f"{number}", 1, f"b{number}")
    assert queries() == few


def test_preview_matches_known_tags_bounded(local):
    add_tags(local, "team", "app", [f"1.{n}" for n in range(60)] + ["nightly", "latest"])
    add_tags(local, "team", "app-tools", ["1.0"])
    add_tags(local, "other", "app", ["1.0"])
    preview = catalogue.preview_rule(local, "team", "app", r"\d+\.\d+", limit=50)
    assert (preview.total, preview.known, preview.more, preview.errors) == (60, 63, 10, {})
    assert preview.matches[:3] == [("team/app", "1.0"), ("team/app", "1.1"), ("team/app", "1.10")]
    assert len(preview.matches) == 50
    everything = catalogue.preview_rule(local, "team", "", "")
    assert (everything.total, everything.known) == (63, 63)
    assert catalogue.preview_rule(local, "team", "app-.*", "").matches == [("team/app-tools", "1.0")]


def test_preview_shows_what_is_wrong_with_each_field(local):
    add_tags(local, "team", "app", ["1.0"])
    preview = catalogue.preview_rule(local, "team", "(unclosed", "[z-a]")
    assert preview.errors == {"repository_pattern": "Invalid RE2 pattern: missing ): (unclosed.",
                              "tag_pattern": "Invalid RE2 pattern: invalid character class range: z-a."}
    assert (preview.total, preview.matches) == (0, [])
    assert catalogue.preview_rule(local, "", "", "").errors == {"namespace": "Enter the namespace."}
    assert catalogue.preview_rule(local, "team/sub", "", "").errors == {"namespace": (
        "Give exactly one namespace, without slashes; match deeper paths with the repository pattern.")}


def test_preview_view_for_a_new_rule_and_for_the_rule_being_edited(local, client_as):
    add_tags(local, "team", "app", ["1.0", "2.0", "nightly"])
    viewer = client_as(Role.VIEWER)
    answer = viewer.post("/rules/preview/", {"instance": local.pk, "rule": "", "namespace": "team",
                                             "repository_pattern": "app", "tag_pattern": r"\d\.0"})
    html = answer.content.decode()
    assert answer.status_code == 200
    assert text(re.search(r'<p id="rule-preview-summary">(.*?)</p>', html, re.S)[1]) == (
        "2 of 3 known tags in namespace team match.")
    assert re.findall(r"<li>([^<]+)</li>", html) == ["team/app:1.0", "team/app:2.0"]
    invalid = viewer.post("/rules/preview/", {"instance": local.pk, "namespace": "team", "tag_pattern": "(x"})
    assert ('<li data-field="tag_pattern">Tag pattern: Invalid RE2 pattern: missing ): (x.</li>'
            in invalid.content.decode())
    # editing: the instance comes from the rule (its field is disabled in the form, so not sent)
    rule = Rule.objects.create(instance=local, name="r", namespace="team")
    edited = viewer.post("/rules/preview/", {"rule": rule.pk, "namespace": "team", "tag_pattern": "nightly"})
    assert re.findall(r"<li>([^<]+)</li>", edited.content.decode()) == ["team/app:nightly"]
    nothing = viewer.post("/rules/preview/", {"instance": "", "namespace": "team"}).content.decode()
    assert "Choose an instance to see its tags." in nothing
    unknown = viewer.post("/rules/preview/", {"instance": local.pk, "namespace": "empty"}).content.decode()
    assert ("The console knows no tags in namespace empty of local (the instance has not been read yet: open its "
            "Images page).") in unknown
    assert viewer.get("/rules/preview/").status_code == 405


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_live_preview_while_typing_a_new_rule_and_editing_one(page, live_server, make_user):
    make_user(Role.OPERATOR, "preview-operator")
    local = Instance.objects.create(name="local", url="http://registry.invalid:5000", acceleration_enabled=True)
    add_tags(local, "team", "app", [f"1.{n}" for n in range(55)] + ["nightly"])
    add_tags(local, "team", "web", ["1.0"])
    login(page, live_server.url, "preview-operator", PASSWORD)

    page.goto(f"{live_server.url}/rules/new/?instance={local.pk}")
    summary = page.locator("#rule-preview-summary")
    page.get_by_label("Namespace").fill("team")
    expect(summary).to_have_text("57 of 57 known tags in namespace team match; the first 50 are listed.")
    expect(page.locator("#rule-preview-more")).to_have_text("and 7 more")
    page.get_by_label("Repository pattern").press_sequentially("app", delay=20)
    expect(summary).to_have_text("56 of 57 known tags in namespace team match; the first 50 are listed.")
    tag = page.get_by_label("Tag pattern")
    tag.press_sequentially("(1", delay=20)
    expect(page.locator('#rule-preview-errors [data-field="tag_pattern"]')).to_have_text(
        "Tag pattern: Invalid RE2 pattern: missing ): (1.")
    tag.press_sequentially(r")\.5\d", delay=20)
    expect(summary).to_have_text("5 of 57 known tags in namespace team match.")
    expect(page.locator(".rule-preview-tags li")).to_have_text(
        ["team/app:1.50", "team/app:1.51", "team/app:1.52", "team/app:1.53", "team/app:1.54"])
    assert not Rule.objects.exists()  # the preview saves nothing

    rule = Rule.objects.create(instance=local, name="web", namespace="team", repository_pattern="web")
    page.goto(f"{live_server.url}/rules/{rule.pk}/edit/")
    expect(summary).to_have_text("1 of 57 known tags in namespace team match.")
    page.get_by_label("Repository pattern").fill("app|web")
    expect(summary).to_have_text("57 of 57 known tags in namespace team match; the first 50 are listed.")
