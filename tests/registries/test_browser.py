"""Instances in Debian's chromium: register, copy the secret once, test the connection, enable
acceleration through the confirmation, and see a pushed image explained on the Events page."""

import re

import pytest
from playwright.sync_api import expect

from core.roles import Role
from registries.models import Instance
from tests.registries.conftest import envelope, manifest_event
from tests.support.browser import login
from tests.support.users import PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.registry]


def test_register_instance_enable_acceleration_and_read_events(page, live_server, make_user, registry, client):
    make_user(Role.ADMIN, "alice")
    login(page, live_server.url, "alice", PASSWORD)

    page.get_by_role("navigation", name="Main").get_by_role("link", name="Instances").click()
    expect(page.get_by_role("heading", name="No registry instances yet")).to_be_visible()
    page.get_by_role("link", name="Register an instance").first.click()

    # A bad URL is refused at the field, and the typed password is not echoed back.
    page.get_by_label("Name", exact=False).and_(page.locator("#id_name")).fill("local")
    page.get_by_label("Registry URL").fill("ftp://nope")
    page.get_by_label("Password or token").fill("not-needed")
    page.get_by_role("button", name="Register instance").click()
    expect(page.locator("#field-url .errorlist")).to_contain_text("Use an http:// or https:// URL")
    expect(page.locator("#field-username .errorlist")).to_contain_text("Enter the username")
    expect(page.get_by_label("Password or token")).to_have_value("")

    page.get_by_label("Registry URL").fill(registry.url)
    page.get_by_role("button", name="Register instance").click()
    expect(page.get_by_role("heading", name=re.compile("^local"))).to_be_visible()
    instance = Instance.objects.get(name="local")
    expect(page.locator("#webhook-secret-value")).to_have_text(instance.webhook_secret)
    expect(page.locator("#config-distribution")).to_contain_text(f'Authorization: ["{instance.webhook_secret}"]')
    expect(page.locator("#webhook-url")).to_have_text(f"{live_server.url}/webhooks/registry/{instance.pk}/")
    expect(page).to_have_url(re.compile(rf"/instances/{instance.pk}/$"))

    page.get_by_role("button", name="Test connection").click()
    expect(page.locator("#connection-result .connection-ok")).to_contain_text("anonymously")

    # The secret is gone after a reload.
    page.reload()
    expect(page.locator("#webhook-secret-value")).to_have_count(0)
    assert instance.webhook_secret not in page.content()

    expect(page.locator("#acceleration-pill")).to_have_text("acceleration off")
    page.get_by_role("link", name="Enable acceleration").click()
    panel = page.locator("#acceleration-confirm")
    expect(panel).to_contain_text("Extra storage")
    page.get_by_role("button", name="Confirm: enable acceleration").click()
    # The browser insists on the tick box; the server would refuse without it as well.
    expect(page.locator("#acceleration-pill")).to_have_text("acceleration off")
    page.get_by_label("I understand that accelerated images use extra storage").check()
    page.get_by_role("button", name="Confirm: enable acceleration").click()
    expect(page.locator("#acceleration-pill")).to_have_text("acceleration on")
    expect(page.locator(".toast")).to_contain_text("Acceleration turned on")
    instance.refresh_from_db()
    assert instance.acceleration_enabled

    response = client.post(f"/webhooks/registry/{instance.pk}/", data=envelope(manifest_event("team/web", "2.0")),
                           content_type="application/json", HTTP_AUTHORIZATION=instance.webhook_secret)
    assert response.status_code == 202
    page.goto(f"{live_server.url}/instances/")
    page.get_by_role("link", name="Push events").click()
    row = page.locator("table.events tbody tr", has_text="team/web:2.0")
    expect(row).to_contain_text("No enabled rule matched")
    expect(row).to_contain_text("has no acceleration rules")
    page.get_by_label("Outcome").select_option("conversion_requested")
    page.get_by_role("button", name="Filter").click()
    expect(page.get_by_role("heading", name="No push event matches these filters")).to_be_visible()
