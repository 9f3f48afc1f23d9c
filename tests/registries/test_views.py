"""Instance pages: list, detail, forms (write-only password), switches, secret reveal, events page."""

import datetime

import pytest
from django.utils import timezone

from core.models import AuditEntry
from core.roles import Role
from pipeline.models import PushEvent
from registries.models import Instance
from tests.registries.conftest import envelope, manifest_event

pytestmark = pytest.mark.django_db
HTMX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def admin(client_as):
    return client_as(Role.ADMIN)


@pytest.fixture
def viewer(client_as):
    return client_as(Role.VIEWER)


def form_data(**overrides) -> dict:
    data = {"name": "harbor", "url": "https://harbor.example", "description": "", "username": "", "password": "",
            "verify_tls": "on", "ca_bundle": ""}
    data.update(overrides)
    return {key: value for key, value in data.items() if value is not None}


# --- List ----------------------------------------------------------------------------------------

def test_empty_list_tells_an_admin_what_to_do(admin):
    page = admin.get("/instances/").content.decode()
    assert "No registry instances yet" in page and "/instances/new/" in page


def test_empty_list_tells_a_viewer_to_ask_an_admin(viewer):
    page = viewer.get("/instances/").content.decode()
    assert "Ask one to register" in page and "/instances/new/" not in page


def test_list_search_sort_paginate_and_pill(viewer):
    for number in range(30):
        Instance.objects.create(name=f"reg-{number:02d}", url=f"https://r{number}.example",
                                acceleration_enabled=number == 3)
    page = viewer.get("/instances/").content.decode()
    assert "reg-00" in page and "reg-24" in page and "reg-25" not in page
    assert "Page 1 of 2" in page
    assert page.count('badge badge-green">on<') == 1
    descending = viewer.get("/instances/?sort=-name").content.decode()
    assert descending.index("reg-29") < descending.index("reg-28")
    found = viewer.get("/instances/?q=r7.example").content.decode()
    assert "reg-07" in found and "reg-08" not in found
    nothing = viewer.get("/instances/?q=zzz").content.decode()
    assert "No instance matches" in nothing
    partial = viewer.get("/instances/?q=reg-1", **HTMX).content.decode()
    assert partial.lstrip().startswith('<div id="results">') and "<html" not in partial
    for sort in ("last_push", "-last_push", "rules", "acceleration", "bogus", "-created", "--x"):
        assert viewer.get(f"/instances/?sort={sort}&page=999").status_code == 200


# --- Create / edit ---------------------------------------------------------------------------------

def test_create_shows_the_secret_once(admin):
    response = admin.post("/instances/new/", form_data(username="robot", password="hunter2-token"))
    assert response.status_code == 200
    instance = Instance.objects.get(name="harbor")
    page = response.content.decode()
    assert instance.webhook_secret in page
    assert f'Authorization: ["{instance.webhook_secret}"]' in page
    assert "hunter2-token" not in page
    assert instance.password == "hunter2-token" and instance.username == "robot"
    assert not instance.acceleration_enabled  # off by default
    again = admin.get(f"/instances/{instance.pk}/").content.decode()
    assert instance.webhook_secret not in again and "hunter2-token" not in again
    assert "Shown only when the instance is registered or the secret is rotated" in again
    assert f"http://testserver/webhooks/registry/{instance.pk}/" in again
    entry = AuditEntry.objects.get(model="instance", action="create")
    assert entry.actor_name == "web-admin" and entry.changes["password"]["new"] == "••••••"


def test_create_via_htmx_retargets_the_page(admin):
    response = admin.post("/instances/new/", form_data(), **HTMX)
    instance = Instance.objects.get()
    assert response["HX-Retarget"] == "#content"
    assert response["HX-Push-Url"] == f"/instances/{instance.pk}/"
    assert instance.webhook_secret in response.content.decode()


def test_webhook_url_uses_public_url_when_set(admin, settings):
    settings.APPARATE_PUBLIC_URL = "https://apparate.example.com"
    instance = Instance.objects.create(name="r", url="https://r.example")
    page = admin.get(f"/instances/{instance.pk}/").content.decode()
    assert f"https://apparate.example.com/webhooks/registry/{instance.pk}/" in page


@pytest.mark.parametrize("overrides, field, message", [
    ({"url": "ftp://x"}, "url", "Use an http:// or https:// URL"),
    ({"url": "https://user:pw@x.example"}, "url", "credentials in the username"),
    ({"url": "https://x.example/v2/"}, "url", "without a path"),
    ({"username": "robot"}, "password", "Enter the password or token"),
    ({"password": "token"}, "username", "Enter the username"),
    ({"ca_bundle": "not a cert"}, "ca_bundle", "not valid PEM"),
    ({"name": ""}, "name", "This field is required"),
])
def test_invalid_form_rerenders_with_the_error_at_the_field(admin, overrides, field, message):
    response = admin.post("/instances/new/", form_data(**overrides), **HTMX)
    assert response.status_code == 200
    page = response.content.decode()
    assert message in page
    assert f'id="field-{field}"' in page
    assert 'value="token"' not in page  # a typed password is not echoed back
    assert not Instance.objects.exists()


def test_edit_keeps_clears_or_replaces_the_password(admin):
    instance = Instance.objects.create(name="harbor", url="https://harbor.example", username="robot",
                                       password="first-secret")
    page = admin.get(f"/instances/{instance.pk}/edit/").content.decode()
    assert "first-secret" not in page and "A password is stored" in page and "clear_password" in page

    response = admin.post(f"/instances/{instance.pk}/edit/", form_data(username="robot", description="kept"), **HTMX)
    assert response.status_code == 200 and response["HX-Redirect"] == f"/instances/{instance.pk}/"
    instance.refresh_from_db()
    assert (instance.password, instance.description) == ("first-secret", "kept")

    admin.post(f"/instances/{instance.pk}/edit/", form_data(username="robot", password="second-secret"))
    instance.refresh_from_db()
    assert instance.password == "second-secret"

    both = admin.post(f"/instances/{instance.pk}/edit/",
                      form_data(username="", password="x", clear_password="on"))
    assert "Either type a new password or clear it" in both.content.decode()
    instance.refresh_from_db()
    assert instance.password == "second-secret"

    admin.post(f"/instances/{instance.pk}/edit/", form_data(username="", clear_password="on"))
    instance.refresh_from_db()
    assert (instance.username, instance.password) == ("", "")


def test_clearing_the_password_but_keeping_the_username_is_refused(admin):
    instance = Instance.objects.create(name="h", url="https://h.example", username="robot", password="pw")
    response = admin.post(f"/instances/{instance.pk}/edit/", form_data(name="h", username="robot",
                                                                        clear_password="on"))
    assert "Enter the password or token" in response.content.decode()
    instance.refresh_from_db()
    assert instance.password == "pw"


# --- Acceleration ----------------------------------------------------------------------------------

def test_enable_acceleration_needs_the_confirmation(admin):
    instance = Instance.objects.create(name="h", url="https://h.example")
    confirm_page = admin.get(f"/instances/{instance.pk}/acceleration/?enabled=true").content.decode()
    assert "both stored" in confirm_page and "extra storage" in confirm_page.lower()
    refused = admin.post(f"/instances/{instance.pk}/acceleration/", {"enabled": "true"})
    assert refused.status_code == 400
    assert "Tick the confirmation" in refused.content.decode()
    instance.refresh_from_db()
    assert not instance.acceleration_enabled and instance.acceleration_changed_at is None
    assert not AuditEntry.objects.filter(action="update", model="instance").exists()

    response = admin.post(f"/instances/{instance.pk}/acceleration/", {"enabled": "true", "confirm": "true"}, **HTMX)
    assert response["HX-Redirect"] == f"/instances/{instance.pk}/"
    instance.refresh_from_db()
    assert instance.acceleration_enabled and instance.acceleration_changed_at is not None
    entry = AuditEntry.objects.get(action="update", model="instance")
    assert entry.changes["acceleration_enabled"] == {"old": False, "new": True}


def test_disable_acceleration_deletes_nothing(admin, make_rule, post_webhook):
    instance = Instance.objects.create(name="h", url="https://h.example", acceleration_enabled=True)
    make_rule(instance)
    post_webhook(instance, envelope(manifest_event("team/web", "1.0")))
    page = admin.get(f"/instances/{instance.pk}/acceleration/?enabled=false").content.decode()
    assert "Nothing is deleted" in page
    response = admin.post(f"/instances/{instance.pk}/acceleration/", {"enabled": "false"}, follow=True)
    assert "Nothing was deleted" in response.content.decode()
    instance.refresh_from_db()
    assert not instance.acceleration_enabled
    assert instance.rules.count() == 1 and instance.push_events.count() == 1


def test_acceleration_confirmation_partial_for_htmx(admin):
    instance = Instance.objects.create(name="h", url="https://h.example")
    partial = admin.get(f"/instances/{instance.pk}/acceleration/?enabled=true", **HTMX).content.decode()
    assert partial.lstrip().startswith('<div id="acceleration-confirm">')


# --- Rotate secret and delete ----------------------------------------------------------------------

def test_rotate_secret_needs_confirmation_and_shows_the_new_one_once(admin, post_webhook):
    instance = Instance.objects.create(name="h", url="https://h.example")
    old = instance.webhook_secret
    assert "stops working" in admin.get(f"/instances/{instance.pk}/rotate-secret/").content.decode()
    assert admin.post(f"/instances/{instance.pk}/rotate-secret/", {}).status_code == 400
    instance.refresh_from_db()
    assert instance.webhook_secret == old
    response = admin.post(f"/instances/{instance.pk}/rotate-secret/", {"confirm": "true"})
    instance.refresh_from_db()
    assert instance.webhook_secret != old
    assert instance.webhook_secret in response.content.decode() and old not in response.content.decode()
    assert post_webhook(instance, envelope(), secret=old).status_code == 401
    assert post_webhook(instance, envelope()).status_code == 202
    assert instance.webhook_secret not in admin.get(f"/instances/{instance.pk}/").content.decode()


def test_delete_explains_and_removes_rules_and_events(admin, make_rule, post_webhook):
    instance = Instance.objects.create(name="h", url="https://h.example", acceleration_enabled=True)
    make_rule(instance)
    post_webhook(instance, envelope(manifest_event("team/web", "1.0")))
    page = admin.get(f"/instances/{instance.pk}/delete/").content.decode()
    assert "1 acceleration rule," in page and "1 recorded push event." in page
    assert "Nothing is deleted in the registry" in page
    response = admin.post(f"/instances/{instance.pk}/delete/", follow=True)
    assert "Nothing was deleted in the registry" in response.content.decode()
    assert not Instance.objects.exists() and not PushEvent.objects.exists()


# --- Detail and events page ------------------------------------------------------------------------

def test_detail_shows_settings_events_and_rules_link(viewer, make_rule, post_webhook):
    instance = Instance.objects.create(name="h", url="https://h.example:8443", username="robot", password="pw",
                                       verify_tls=False, acceleration_enabled=True)
    make_rule(instance)
    post_webhook(instance, envelope(manifest_event("team/web", "1.0")))
    page = viewer.get(f"/instances/{instance.pk}/").content.decode()
    assert "h.example:8443" in page and "verification off" in page and "password stored" in page
    assert f"/rules/?instance={instance.pk}" in page and "1 rule" in page
    assert "team/web:1.0" in page and "Conversion requested" in page
    assert "Edit" not in page and "Rotate secret" not in page and "Test connection" not in page
    assert "notifications:" in page and "Artifact pushed" in page and "&lt;webhook secret&gt;" in page


def test_events_page_filters_and_explains(viewer, make_rule, post_webhook):
    first = Instance.objects.create(name="first", url="https://a.example", acceleration_enabled=True)
    second = Instance.objects.create(name="second", url="https://b.example")
    make_rule(first)
    post_webhook(first, envelope(manifest_event("team/web", "1.0")))
    post_webhook(first, envelope(manifest_event("other/api", "2.0")))
    post_webhook(second, envelope(manifest_event("team/db", "3.0")))
    everything = viewer.get("/instances/events/").content.decode()
    assert all(image in everything for image in ("team/web:1.0", "other/api:2.0", "team/db:3.0"))
    assert "Acceleration is off for instance" in everything and "has no acceleration rules" not in everything

    def shown(query: str) -> set[str]:
        page = viewer.get(f"/instances/events/?{query}").content.decode()
        return {image for image in ("team/web:1.0", "other/api:2.0", "team/db:3.0") if image in page}

    assert shown(f"instance={second.pk}") == {"team/db:3.0"}
    assert shown("outcome=conversion_requested") == {"team/web:1.0"}
    assert shown("reason=no_rule_matched") == {"other/api:2.0"}
    assert shown("q=team") == {"team/web:1.0", "team/db:3.0"}
    assert shown("q=team/we") == {"team/web:1.0"}
    today = timezone.localdate()
    assert len(shown(f"received_after={today}")) == 3
    assert shown(f"received_before={today - datetime.timedelta(days=1)}") == set()
    assert "No push event matches" in viewer.get("/instances/events/?q=nothing-like-this").content.decode()
    for hostile in ("received_after=yesterday", "instance=abc", "outcome=weird", "page=-1", "instance=99999999"):
        assert viewer.get(f"/instances/events/?{hostile}").status_code == 200


def test_events_page_empty_state(viewer):
    page = viewer.get("/instances/events/").content.decode()
    assert "No push events yet" in page and "Register a registry instance first" in page


def test_pages_need_login(client):
    instance = Instance.objects.create(name="h", url="https://h.example")
    for url in ("/instances/", f"/instances/{instance.pk}/", "/instances/events/"):
        response = client.get(url)
        assert response.status_code == 302 and "/login/" in response["Location"]


# --- A new host needs the password again (issue 11 #12) ---------------------------------------------

@pytest.mark.parametrize("new_url", ["https://evil.example", "http://harbor.example", "https://harbor.example:8443"])
def test_moving_the_url_to_another_host_needs_the_password_again(admin, new_url):
    instance = Instance.objects.create(name="harbor", url="https://harbor.example", username="robot",
                                       password="first-secret")
    refused = admin.post(f"/instances/{instance.pk}/edit/", form_data(url=new_url, username="robot"), **HTMX)
    page = refused.content.decode()
    assert refused.status_code == 200
    assert "The registry URL now points at another host, port or scheme: type the password or token again" in page
    assert 'id="field-password"' in page
    instance.refresh_from_db()
    assert (instance.url, instance.password) == ("https://harbor.example", "first-secret")

    admin.post(f"/instances/{instance.pk}/edit/", form_data(url=new_url, username="robot", password="for-the-new-one"))
    instance.refresh_from_db()
    assert (instance.url, instance.password) == (new_url, "for-the-new-one")


def test_same_origin_edits_keep_the_password(admin):
    instance = Instance.objects.create(name="harbor", url="https://harbor.example", username="robot",
                                       password="first-secret")
    for same in ("https://HARBOR.example", "https://harbor.example:443/"):
        response = admin.post(f"/instances/{instance.pk}/edit/", form_data(url=same, username="robot"), **HTMX)
        assert response.status_code == 200 and response["HX-Redirect"] == f"/instances/{instance.pk}/"
        instance.refresh_from_db()
        assert (instance.url, instance.password) == (same, "first-secret")


def test_moving_the_url_with_the_password_cleared_is_allowed(admin):
    instance = Instance.objects.create(name="harbor", url="https://harbor.example", username="robot", password="pw")
    admin.post(f"/instances/{instance.pk}/edit/", form_data(url="https://other.example", clear_password="on"))
    instance.refresh_from_db()
    assert (instance.url, instance.username, instance.password) == ("https://other.example", "", "")
