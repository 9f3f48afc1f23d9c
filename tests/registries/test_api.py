"""REST API of instances and push events: write-only secrets, the acceleration switch, filters."""

import pytest

from core.roles import Role
from registries.models import Instance
from tests.registries.conftest import envelope, manifest_event

pytestmark = pytest.mark.django_db


@pytest.fixture
def api(api_as):
    return api_as(Role.ADMIN)


def test_create_returns_the_secret_once_and_never_the_password(api):
    response = api.post("/api/v1/instances/", {"name": "h", "url": "https://h.example", "username": "robot",
                                               "password": "tok-123"}, format="json")
    assert response.status_code == 201
    body = response.json()
    instance = Instance.objects.get()
    assert body["webhook_secret"] == instance.webhook_secret
    assert "password" not in body and body["has_password"] is True
    assert body["webhook_url"] == f"http://testserver/webhooks/registry/{instance.pk}/"
    assert body["acceleration_enabled"] is False
    for url in ("/api/v1/instances/", f"/api/v1/instances/{instance.pk}/"):
        text = api.get(url).content.decode()
        assert instance.webhook_secret not in text and "tok-123" not in text and "webhook_secret" not in text


def test_password_is_kept_cleared_or_replaced(api):
    instance = Instance.objects.create(name="h", url="https://h.example", username="robot", password="one")
    url = f"/api/v1/instances/{instance.pk}/"
    assert api.patch(url, {"description": "x"}, format="json").status_code == 200
    instance.refresh_from_db()
    assert instance.password == "one"
    assert api.patch(url, {"password": "two"}, format="json").status_code == 200
    instance.refresh_from_db()
    assert instance.password == "two"
    refused = api.patch(url, {"password": ""}, format="json")
    assert refused.status_code == 400 and "password" in refused.json()
    assert api.patch(url, {"password": "", "username": ""}, format="json").status_code == 200
    instance.refresh_from_db()
    assert (instance.username, instance.password) == ("", "")


@pytest.mark.parametrize("payload, field", [
    ({"name": "h", "url": "gopher://h"}, "url"),
    ({"name": "h", "url": "https://h.example", "ca_bundle": "junk"}, "ca_bundle"),
    ({"name": "h", "url": "https://h.example", "username": "u"}, "password"),
    ({"name": "h", "url": ["https://h.example"]}, "url"),
    ({"url": "https://h.example"}, "name"),
])
def test_invalid_instances_are_400_at_the_field(api, payload, field):
    response = api.post("/api/v1/instances/", payload, format="json")
    assert response.status_code == 400
    assert field in response.json()
    assert not Instance.objects.exists()


def test_acceleration_needs_confirm(api):
    instance = Instance.objects.create(name="h", url="https://h.example")
    url = f"/api/v1/instances/{instance.pk}/acceleration/"
    refused = api.post(url, {"enabled": True}, format="json")
    assert refused.status_code == 400
    assert "extra registry storage" in refused.json()["confirm"][0]
    instance.refresh_from_db()
    assert not instance.acceleration_enabled
    assert api.post(url, {"enabled": True, "confirm": False}, format="json").status_code == 400
    assert api.post(url, {}, format="json").status_code == 400
    enabled = api.post(url, {"enabled": True, "confirm": True}, format="json")
    assert enabled.status_code == 200 and enabled.json()["acceleration_enabled"] is True
    disabled = api.post(url, {"enabled": False}, format="json")
    assert disabled.status_code == 200 and disabled.json()["acceleration_enabled"] is False


def test_acceleration_cannot_be_set_through_patch(api):
    instance = Instance.objects.create(name="h", url="https://h.example")
    api.patch(f"/api/v1/instances/{instance.pk}/", {"acceleration_enabled": True}, format="json")
    instance.refresh_from_db()
    assert not instance.acceleration_enabled


def test_rotate_secret(api, post_webhook):
    instance = Instance.objects.create(name="h", url="https://h.example")
    old = instance.webhook_secret
    response = api.post(f"/api/v1/instances/{instance.pk}/rotate-secret/")
    assert response.status_code == 200
    instance.refresh_from_db()
    assert response.json() == {"webhook_secret": instance.webhook_secret} and instance.webhook_secret != old
    assert post_webhook(instance, envelope(), secret=old).status_code == 401


def test_delete_removes_rules_and_events(api, make_rule, post_webhook):
    instance = Instance.objects.create(name="h", url="https://h.example", acceleration_enabled=True)
    make_rule(instance)
    post_webhook(instance, envelope(manifest_event("team/web")))
    assert api.delete(f"/api/v1/instances/{instance.pk}/").status_code == 204
    assert not Instance.objects.exists()


def test_events_api_lists_and_filters(api_as, make_rule, post_webhook):
    viewer = api_as(Role.VIEWER)
    instance = Instance.objects.create(name="h", url="https://h.example", acceleration_enabled=True)
    rule = make_rule(instance)
    post_webhook(instance, envelope(manifest_event("team/web", "1.0"), manifest_event("other/db", "2.0")))
    listing = viewer.get("/api/v1/events/").json()
    assert listing["count"] == 2
    converted = viewer.get("/api/v1/events/?outcome=conversion_requested").json()["results"]
    assert [(e["repository"], e["matched_rule"], e["matched_rule_name"]) for e in converted] == [
        ("web", rule.pk, rule.name)]
    skipped = viewer.get(f"/api/v1/events/?instance={instance.pk}&reason=no_rule_matched").json()["results"]
    assert [e["namespace"] for e in skipped] == ["other"]
    assert "Closest rule" in skipped[0]["reason_detail"]
    assert viewer.get("/api/v1/events/?q=other/d").json()["count"] == 1
    assert viewer.get("/api/v1/events/?search=web").json()["count"] == 1
    assert viewer.get("/api/v1/events/?outcome=nonsense").status_code == 400
    assert viewer.get("/api/v1/events/?received_after=not-a-date").status_code == 400


def test_events_api_is_read_only(api):
    instance = Instance.objects.create(name="h", url="https://h.example")
    assert api.post("/api/v1/events/", {"instance": instance.pk}, format="json").status_code == 405


def test_schema_describes_the_endpoints(api):
    schema = api.get("/api/v1/schema/?format=json").json()
    assert "/api/v1/instances/{id}/acceleration/" in schema["paths"]
    assert "/api/v1/instances/{id}/test-connection/" in schema["paths"]
    assert "/api/v1/events/" in schema["paths"]


def test_moving_the_url_to_another_host_needs_the_password_again(api):
    instance = Instance.objects.create(name="h", url="https://h.example", username="robot", password="one")
    url = f"/api/v1/instances/{instance.pk}/"
    refused = api.patch(url, {"url": "https://evil.example"}, format="json")
    assert refused.status_code == 400
    assert refused.json() == {"password": [
        "The registry URL now points at another host, port or scheme: type the password or token again (or clear "
        "it). The stored one is only ever sent to the URL it was entered for."]}
    instance.refresh_from_db()
    assert (instance.url, instance.password) == ("https://h.example", "one")
    downgrade = api.put(url, {"name": "h", "url": "http://h.example", "username": "robot"}, format="json")
    assert downgrade.status_code == 400 and "password" in downgrade.json()

    assert api.patch(url, {"url": "https://h.example:443"}, format="json").status_code == 200
    moved = api.patch(url, {"url": "https://new.example", "password": "two"}, format="json")
    assert moved.status_code == 200
    instance.refresh_from_db()
    assert (instance.url, instance.password) == ("https://new.example", "two")
    anonymous = Instance.objects.create(name="anon", url="https://a.example")
    anonymous_url = f"/api/v1/instances/{anonymous.pk}/"
    assert api.patch(anonymous_url, {"url": "https://b.example"}, format="json").status_code == 200
