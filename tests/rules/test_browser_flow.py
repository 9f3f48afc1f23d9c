"""End to end in Debian's chromium: register an instance, enable acceleration, add a rule, validate.

Drives the real pages (registries' instance form and acceleration confirmation, the rules form
with its live pattern check, the rule page's validation box) against the live test server.
"""

import re

import pytest
from django.contrib.auth.models import User
from playwright.sync_api import expect

from registries.models import Instance
from rules.models import Rule
from tests.support.browser import login

PASSWORD = "e2e-admin-password-7"


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_register_accelerate_add_rule_and_validate(page, live_server, registry):
    User.objects.create_superuser("admin", password=PASSWORD)
    login(page, live_server.url, "admin", PASSWORD)

    # Register the instance through the registries form.
    page.goto(f"{live_server.url}/instances/new/")
    page.get_by_label("Name").first.fill("local")
    page.get_by_label("Registry URL").fill(registry.url)
    page.get_by_role("button", name="Register instance").click()
    expect(page.locator("#acceleration-pill")).to_have_text("acceleration off")
    instance = Instance.objects.get(name="local")

    # With acceleration off, the rules page says what to do first.
    page.goto(f"{live_server.url}/rules/")
    expect(page.get_by_text("Turn on acceleration for an instance to add rules")).to_be_visible()

    # Enable acceleration: the confirmation warns about extra storage and needs the tick.
    page.goto(f"{live_server.url}/instances/{instance.pk}/")
    page.get_by_role("link", name="Enable acceleration").click()
    expect(page.get_by_text("Extra storage:", exact=True)).to_be_visible()
    page.get_by_label("I understand that accelerated images use extra storage").check()
    page.get_by_role("button", name="Confirm: enable acceleration").click()
    expect(page.locator("#acceleration-pill")).to_have_text("acceleration on")

    # Create a rule; an invalid pattern is flagged live, while typing, before submitting.
    page.goto(f"{live_server.url}/rules/")
    page.get_by_role("link", name="Add a rule").first.click()
    page.get_by_label("Instance").select_option(label="local")
    page.get_by_label("Name:", exact=True).fill("prod-only")
    page.get_by_label("Namespace").fill("team")
    page.get_by_label("Repository pattern").fill("app")
    tag = page.get_by_label("Tag pattern")
    tag.press_sequentially("(unclosed", delay=20)
    expect(page.locator("#check-tag_pattern")).to_contain_text("Invalid RE2 pattern: missing ): (unclosed.")
    assert not Rule.objects.exists()
    tag.fill("")
    tag.press_sequentially(r"\d+\.\d+", delay=20)
    expect(page.locator("#check-tag_pattern")).to_have_text("valid")
    expect(page.locator("#check-repository_pattern")).to_have_text("valid")
    page.get_by_role("button", name="Create rule").click()
    expect(page.get_by_role("heading", name="Rule prod-only")).to_be_visible()
    rule = Rule.objects.get()
    assert (rule.instance, rule.namespace, rule.repository_pattern, rule.tag_pattern) == (
        instance, "team", "app", r"\d+\.\d+",
    )

    # Validate an address that matches, one that does not, and one that does not parse.
    address = page.get_by_label("Image address")
    address.fill(f"{registry.host}/team/app:1.0")
    page.get_by_role("button", name="Validate").click()
    expect(page.locator(".verdict")).to_contain_text("Matched")
    expect(page.locator("[data-criterion][data-passed=true]")).to_have_count(5)

    page.get_by_label("Image address").fill(f"{registry.host}/team/app:1.0-rc1")
    page.get_by_role("button", name="Validate").click()
    expect(page.locator(".verdict")).to_contain_text("Not matched")
    expect(page.locator('[data-criterion="tag"]')).to_have_attribute("data-passed", "false")
    expect(page.locator('[data-criterion="tag"]')).to_contain_text(r"tag '1.0-rc1' does not fully match '\d+\.\d+'")
    expect(page.locator('[data-criterion="instance host"]')).to_have_attribute("data-passed", "true")
    expect(page.locator('[data-criterion="repository"]')).to_have_attribute("data-passed", "true")

    page.get_by_label("Image address").fill("https://example.com/team/app")
    page.get_by_role("button", name="Validate").click()
    expect(page.locator("#address-errors")).to_contain_text("Leave out the scheme")
    expect(page.locator(".verdict")).to_have_count(0)

    # Back on the list the rule can be switched off in place.
    page.goto(f"{live_server.url}/rules/")
    row = page.locator(f"#rule-{rule.pk}")
    row.get_by_role("button", name="Disable").click()
    expect(row.get_by_role("button", name="Enable")).to_be_visible()
    expect(row).to_contain_text(re.compile("disabled"))
    rule.refresh_from_db()
    assert not rule.enabled
