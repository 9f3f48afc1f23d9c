"""Roles: a viewer reads and validates but every change is refused, and nothing changes."""

import pytest
from django.forms.models import model_to_dict

from core.models import AuditEntry
from core.roles import Role
from rules.models import Rule
from tests.rules.conftest import HOST


def snapshot():
    return [model_to_dict(rule) | {"updated_at": rule.updated_at} for rule in Rule.objects.order_by("pk")]


@pytest.fixture
def rules(make_rule):
    return make_rule("first"), make_rule("second", enabled=False)


def form_data(rule):
    return {"instance": rule.instance_id, "name": "hijacked", "namespace": "evil", "format": "estargz",
            "chunk_size": "4194304", "compression": "fast"}


def test_viewer_is_refused_every_mutating_web_endpoint(client_as, rules):
    first, second = rules
    client = client_as(Role.VIEWER)
    before, audit_before = snapshot(), AuditEntry.objects.count()
    requests = [
        ("/rules/new/", form_data(first)),
        (f"/rules/{first.pk}/edit/", form_data(first)),
        (f"/rules/{first.pk}/toggle/", {"enabled": "false"}),
        (f"/rules/{second.pk}/toggle/", {"enabled": "true"}),
        (f"/rules/{second.pk}/move/up/", {}),
        (f"/rules/{first.pk}/move/down/", {}),
        (f"/rules/{first.pk}/delete/", {}),
    ]
    for url, data in requests:
        assert client.post(url, data).status_code == 403, url
        assert client.post(url, data, HTTP_HX_REQUEST="true").status_code == 403, url
    for url in ("/rules/new/", f"/rules/{first.pk}/edit/", f"/rules/{first.pk}/delete/"):
        assert client.get(url).status_code == 403, url
    assert snapshot() == before
    assert AuditEntry.objects.count() == audit_before


def test_viewer_is_refused_every_mutating_api_endpoint(api_as, rules):
    first, second = rules
    api = api_as(Role.VIEWER)
    before = snapshot()
    data = {"instance": first.instance_id, "name": "x", "namespace": "team"}
    responses = [
        api.post("/api/v1/rules/", data, format="json"),
        api.put(f"/api/v1/rules/{first.pk}/", data, format="json"),
        api.patch(f"/api/v1/rules/{first.pk}/", {"enabled": False}, format="json"),
        api.patch(f"/api/v1/rules/{second.pk}/", {"enabled": True}, format="json"),
        api.post(f"/api/v1/rules/{second.pk}/move/", {"direction": "up"}, format="json"),
        api.delete(f"/api/v1/rules/{first.pk}/"),
    ]
    assert [response.status_code for response in responses] == [403] * len(responses)
    assert snapshot() == before


def test_viewer_reads_hidden_controls_and_validates(client_as, api_as, rules):
    first, _ = rules
    client = client_as(Role.VIEWER)
    page = client.get("/rules/").content.decode()
    assert "first" in page
    assert "/rules/new/" not in page and "Disable" not in page and "/move/" not in page and "/delete/" not in page
    detail = client.get(f"/rules/{first.pk}/").content.decode()
    assert "Validate" in detail and f"/rules/{first.pk}/edit/" not in detail
    before = snapshot()
    box = client.post(f"/rules/{first.pk}/validate/", {"address": f"{HOST}/team/app:1"}, HTTP_HX_REQUEST="true")
    assert box.status_code == 200 and "Matched" in box.content.decode()
    api = api_as(Role.VIEWER)
    assert api.get("/api/v1/rules/").json()["count"] == 2
    response = api.post(f"/api/v1/rules/{first.pk}/validate/", {"address": f"{HOST}/team/app:1"}, format="json")
    assert response.status_code == 200 and response.json()["matched"] is True
    assert snapshot() == before


def test_users_without_a_role_cannot_read(client_as, api_as, rules):
    first, _ = rules
    assert client_as(Role.NONE).get("/rules/").status_code == 403
    api = api_as(Role.NONE)
    assert api.get("/api/v1/rules/").status_code == 403
    assert api.post(f"/api/v1/rules/{first.pk}/validate/", {"address": f"{HOST}/team/app:1"}).status_code == 403


def test_anonymous_api_is_refused(client, rules):
    assert client.get("/api/v1/rules/").status_code in (401, 403)
    assert client.post("/rules/check-pattern/", {"field": "tag_pattern", "tag_pattern": "x"}).status_code == 302
