"""Open redirects: every view that follows `next` stays on this site (core.htmx.next_url)."""

import pytest
from django.test import RequestFactory

from core.htmx import next_url
from core.roles import Role
from registries.models import Instance
from rules.models import Rule

OFF_SITE = ["https://evil.example/phish", "//evil.example/phish", "\\\\evil.example", "/\\evil.example",
            "javascript:alert(1)", "http://testserver.evil.example/"]


@pytest.mark.parametrize("target", OFF_SITE)
def test_next_url_refuses_other_hosts_and_schemes(target):
    request = RequestFactory().post("/rules/1/toggle/", {"next": target})
    assert next_url(request, "/rules/") == "/rules/"


def test_next_url_keeps_local_paths_and_this_host():
    factory = RequestFactory()
    assert next_url(factory.post("/x/", {"next": "/rules/?instance=2"}), "/rules/") == "/rules/?instance=2"
    assert next_url(factory.get("/x/", {"next": "http://testserver/clusters/"}), "/") == "http://testserver/clusters/"
    # Over HTTPS, a plain-http `next` on the same host would downgrade: refused.
    secure = factory.post("/x/", {"next": "http://testserver/rules/"}, secure=True)
    assert next_url(secure, "/rules/") == "/rules/"


@pytest.mark.parametrize("target", ["https://evil.example/phish", "//evil.example/phish"])
def test_rule_toggle_does_not_redirect_off_site(client_as, target):
    instance = Instance.objects.create(name="main", url="http://registry.example.com", acceleration_enabled=True)
    rule = Rule.objects.create(instance=instance, name="prod", namespace="team")
    web = client_as(Role.OPERATOR)
    response = web.post(f"/rules/{rule.pk}/toggle/", {"enabled": "false", "next": target})
    assert response.status_code == 302
    assert response["Location"] == "/rules/"
    rule.refresh_from_db()
    assert not rule.enabled  # the toggle itself still happened
    kept = web.post(f"/rules/{rule.pk}/toggle/", {"enabled": "true", "next": f"/rules/{rule.pk}/"})
    assert kept["Location"] == f"/rules/{rule.pk}/"


@pytest.mark.parametrize("target", ["//evil.example/phish", "https://evil.example/phish"])
def test_cluster_label_does_not_redirect_off_site(client_as, target):
    # No node selected: the form is refused and the view sends the user back to `next`.
    response = client_as(Role.OPERATOR).post("/clusters/label/", {"operation": "label", "next": target})
    assert response.status_code == 302
    assert response["Location"] == "/clusters/nodes/"
