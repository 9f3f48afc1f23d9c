"""Send test event in Debian's chromium: an operator sends a real signed delivery to the console's own
webhook URL from the instance page, reads the outcome and the panel's new last delivery, then finds
the delivery on the Events page marked as a test, with no job."""

import re

import pytest
from playwright.sync_api import expect

from core.roles import Role
from pipeline.models import ConversionJob, PushEvent
from registries.models import Instance
from rules.models import Rule
from tests.support.browser import login
from tests.support.users import PASSWORD

pytestmark = pytest.mark.browser


def test_send_test_event_from_the_instance_page(page, live_server, make_user):
    instance = Instance.objects.create(name="harbor-like", url="http://registry.example:5000",
                                       acceleration_enabled=True)
    Rule.objects.create(instance=instance, name="everything", namespace="team")
    make_user(Role.OPERATOR, "olga")
    login(page, live_server.url, "olga", PASSWORD)
    page.goto(f"{live_server.url}/instances/{instance.pk}/")
    health = page.locator("#webhook-health")
    expect(health.locator("#webhook-last")).to_have_text("none received yet")

    health.get_by_role("button", name="Send test event").click()
    expect(page.locator("#webhook-test-outcome")).to_contain_text("The webhook answered 202")
    event = PushEvent.objects.get(instance=instance)
    expect(page.locator("#webhook-test-outcome")).to_have_text(
        f"The webhook answered 202: the test event was recorded as event #{event.pk}, marked as a test (never "
        "converted). See it in the events")
    expect(page.locator("#webhook-last")).to_have_text(
        re.compile(rf"^just now: 202 Test event recorded as event #{event.pk}\.$"))
    expect(page.locator("#webhook-accepted")).to_contain_text("1")

    page.get_by_role("link", name="See it in the events").click()
    row = page.locator(f"#event-{event.pk}")
    expect(row.locator(".test-event")).to_have_text("Test event")
    expect(row).to_contain_text("Test event (Send test event) · olga")
    expect(row).to_contain_text("Test event, never converted")
    expect(row.locator(".event-job")).to_have_count(0)
    assert not ConversionJob.objects.exists()
