"""Roles: viewers and operators are refused every admin-only change, and nothing changes.
Secrets (password, webhook secret) never appear in any page or API response."""

import pytest
from django.contrib.auth.models import User
from django.test import Client

from core.models import AuditEntry
from core.roles import Role
from pipeline.models import PushEvent
from registries.models import Instance
from tests.registries.conftest import envelope, manifest_event

pytestmark = pytest.mark.django_db
PASSWORD = "registry-pass-Zq81"


@pytest.fixture
def instance(db, make_rule):
    created = Instance.objects.create(name="h", url="https://h.example", username="robot", password=PASSWORD,
                                      acceleration_enabled=False)
    return created


def state() -> list:
    rows = [(i.pk, i.name, i.url, i.username, i.password, i.webhook_secret, i.acceleration_enabled, i.verify_tls,
             i.updated_at) for i in Instance.objects.order_by("pk")]
    return [rows, AuditEntry.objects.count(), PushEvent.objects.count()]


def ui_requests(pk: int) -> list[tuple[str, str, dict]]:
    edit = {"name": "taken-over", "url": "https://evil.example", "username": "", "password": ""}
    return [
        ("get", "/instances/new/", {}),
        ("post", "/instances/new/", {"name": "new", "url": "https://n.example"}),
        ("get", f"/instances/{pk}/edit/", {}),
        ("post", f"/instances/{pk}/edit/", edit),
        ("get", f"/instances/{pk}/delete/", {}),
        ("post", f"/instances/{pk}/delete/", {}),
        ("get", f"/instances/{pk}/acceleration/", {}),
        ("post", f"/instances/{pk}/acceleration/", {"enabled": "true", "confirm": "true"}),
        ("post", f"/instances/{pk}/acceleration/", {"enabled": "false"}),
        ("get", f"/instances/{pk}/rotate-secret/", {}),
        ("post", f"/instances/{pk}/rotate-secret/", {"confirm": "true"}),
    ]


def api_requests(pk: int) -> list[tuple[str, str, dict]]:
    return [
        ("post", "/api/v1/instances/", {"name": "new", "url": "https://n.example"}),
        ("put", f"/api/v1/instances/{pk}/", {"name": "x", "url": "https://x.example"}),
        ("patch", f"/api/v1/instances/{pk}/", {"password": "stolen"}),
        ("delete", f"/api/v1/instances/{pk}/", {}),
        ("post", f"/api/v1/instances/{pk}/acceleration/", {"enabled": True, "confirm": True}),
        ("post", f"/api/v1/instances/{pk}/rotate-secret/", {}),
    ]


@pytest.mark.parametrize("role", [Role.VIEWER, Role.OPERATOR, Role.NONE])
def test_non_admins_are_refused_every_admin_change(client_as, api_as, instance, role):
    # Make the instance's "off" state meaningful for the disable request too.
    Instance.objects.filter(pk=instance.pk).update(acceleration_enabled=True)
    web, api = client_as(role), api_as(role)  # users are created (and audited) before the snapshot
    before = state()
    for method, url, data in ui_requests(instance.pk):
        response = getattr(web, method)(url, data)
        assert response.status_code == 403, (method, url, response.status_code)
    for method, url, data in api_requests(instance.pk):
        response = getattr(api, method)(url, data, format="json")
        assert response.status_code == 403, (method, url, response.status_code)
    assert state() == before


def test_viewer_cannot_test_connections(client_as, api_as, instance):
    web, api = client_as(Role.VIEWER), api_as(Role.VIEWER)
    before = state()
    assert web.post(f"/instances/{instance.pk}/test-connection/").status_code == 403
    assert api.post(f"/api/v1/instances/{instance.pk}/test-connection/").status_code == 403
    assert state() == before


def test_anonymous_api_and_pages_are_refused(instance):
    before = state()
    anonymous = Client()
    assert anonymous.post("/instances/new/", {"name": "x", "url": "https://x.example"}).status_code == 302
    assert anonymous.post(f"/instances/{instance.pk}/delete/").status_code == 302
    assert anonymous.post("/api/v1/instances/", {"name": "x", "url": "https://x.example"}).status_code in (401, 403)
    assert anonymous.get("/api/v1/instances/").status_code in (401, 403)
    assert anonymous.get("/api/v1/events/").status_code in (401, 403)
    assert state() == before


def test_secrets_never_appear_in_pages_or_api(client_as, api_as, instance, make_rule, post_webhook):
    Instance.objects.filter(pk=instance.pk).update(acceleration_enabled=True)
    make_rule(instance)
    post_webhook(instance, envelope(manifest_event("team/web", "1.0")))
    # Change things so the audit log has entries that mention the secret fields.
    admin_web = client_as(Role.ADMIN)
    admin_web.post(f"/instances/{instance.pk}/edit/", {"name": "h", "url": "https://h.example", "username": "robot",
                                                        "password": PASSWORD + "2", "verify_tls": "on"})
    instance.refresh_from_db()
    secrets = [PASSWORD, PASSWORD + "2", instance.webhook_secret]
    superuser = User.objects.create_superuser("root", password="root-pass-123")
    admin_site = Client()
    admin_site.force_login(superuser)
    pages = [
        (admin_web, "/instances/"), (admin_web, f"/instances/{instance.pk}/"),
        (admin_web, f"/instances/{instance.pk}/edit/"), (admin_web, f"/instances/{instance.pk}/delete/"),
        (admin_web, f"/instances/{instance.pk}/acceleration/"), (admin_web, f"/instances/{instance.pk}/rotate-secret/"),
        (admin_web, "/instances/events/"), (admin_web, "/audit/"),
        (admin_site, "/admin/registries/instance/"), (admin_site, f"/admin/registries/instance/{instance.pk}/change/"),
        (admin_site, "/admin/registries/pushevent/"), (admin_site, "/admin/console/auditentry/"),
    ]
    api = api_as(Role.ADMIN)
    pages += [(api, "/api/v1/instances/"), (api, f"/api/v1/instances/{instance.pk}/"), (api, "/api/v1/events/"),
              (api, "/api/v1/schema/")]
    for client, url in pages:
        response = client.get(url)
        assert response.status_code in (200, 404), url  # 404: another app's page not built yet
        text = response.content.decode()
        for secret in secrets:
            assert secret not in text, (url, secret[:4])
    change = admin_site.get(f"/admin/registries/instance/{instance.pk}/change/").content.decode()
    assert 'name="password"' in change and "webhook_secret" not in change


def test_admin_change_form_keeps_the_password_when_blank(instance):
    superuser = User.objects.create_superuser("root", password="root-pass-123")
    admin_site = Client()
    admin_site.force_login(superuser)
    response = admin_site.post(f"/admin/registries/instance/{instance.pk}/change/", {
        "name": "renamed", "url": "https://h.example", "description": "", "username": "robot", "password": "",
        "verify_tls": "on", "ca_bundle": "",
    })
    assert response.status_code == 302
    instance.refresh_from_db()
    assert (instance.name, instance.password) == ("renamed", PASSWORD)
