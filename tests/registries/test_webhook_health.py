"""Webhook health per instance: the last delivery and its result, refused deliveries with the reason
(counted, the last 20 kept), on the instance page and in the API; and Send test event, a real signed
delivery to the console's own webhook URL that is recorded as a test and never converted."""

import re
from html import unescape

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from core.roles import Role
from pipeline.deliveries import REFUSED_COUNTERS
from pipeline.models import ConversionJob, PushEvent, RefusedDelivery, WebhookHealth
from registries.models import Instance
from tests.registries.conftest import blob_event, envelope, manifest_event

pytestmark = pytest.mark.django_db

RECORDED = "2 push(es) recorded, 1 conversion(s) requested; 1 other event(s) ignored (blobs, pulls, deletes)."


def refuse_each_way(instance, post_webhook, settings):
    """One delivery refused for each reason, oldest first."""
    assert post_webhook(instance, envelope(), secret="").status_code == 401
    assert post_webhook(instance, envelope(), secret="not-it").status_code == 401
    assert post_webhook(instance, b"{not json").status_code == 400
    assert post_webhook(instance, b'{"events": "push"}').status_code == 400
    settings.APPARATE_WEBHOOK_MAX_BYTES = 10
    assert post_webhook(instance, envelope(manifest_event("team/web"))).status_code == 413


REASONS = [  # newest first
    (413, "The body is larger than 10 bytes."),
    (400, "'events' must be a list."),
    (400, "The body is not valid JSON (JSONDecodeError)."),
    (401, "Wrong webhook secret in the Authorization header."),
    (401, "No Authorization header."),
]


def test_an_accepted_delivery_is_the_last_one_with_its_result(instance, make_rule, post_webhook):
    make_rule(instance, repository_pattern="web")
    body = envelope(manifest_event("team/web", "1.0"), manifest_event("team/api", "1.0"), blob_event("team/web"))
    assert post_webhook(instance, body).status_code == 202
    health = WebhookHealth.objects.get(instance=instance)
    assert (health.accepted, health.refused, health.last_status, health.last_result) == (1, 0, 202, RECORDED)
    assert health.last_received_at == health.last_accepted_at and health.last_refused_at is None


def test_refused_deliveries_are_counted_with_a_short_reason(instance, post_webhook, settings):
    refuse_each_way(instance, post_webhook, settings)
    health = WebhookHealth.objects.get(instance=instance)
    assert (health.accepted, health.refused, health.refused_unauthorized, health.refused_malformed,
            health.refused_too_large) == (0, 5, 2, 2, 1)
    assert (health.last_status, health.last_result) == REASONS[0]
    kept = list(instance.refused_deliveries.values_list("status", "reason", "client"))
    assert kept == [(status, reason, "127.0.0.1") for status, reason in REASONS]
    stored = " ".join(str(row) for row in RefusedDelivery.objects.values_list()) + str(health.__dict__)
    assert instance.webhook_secret not in stored and "not-it" not in stored and "not json" not in stored


def test_a_flood_of_refusals_keeps_counters_and_the_last_twenty(instance, post_webhook):
    for n in range(45):
        post_webhook(instance, envelope(), secret=f"guess-{n}")
    with CaptureQueriesContext(connection) as captured:
        assert post_webhook(instance, envelope(), secret="guess-45").status_code == 401
    # The instance by its URL, the counters (UPDATE … RETURNING), the ring's slot (one upsert).
    assert len(captured.captured_queries) == 3
    health = WebhookHealth.objects.get(instance=instance)
    assert (health.refused, health.refused_unauthorized) == (46, 46)
    assert RefusedDelivery.objects.filter(instance=instance).count() == 20
    assert sorted(RefusedDelivery.objects.values_list("slot", flat=True)) == list(range(20))
    assert post_webhook(instance, envelope()).status_code == 202  # intake still works, nothing else kept
    assert WebhookHealth.objects.get(instance=instance).accepted == 1


def test_unknown_instances_and_other_methods_record_nothing(client, instance):
    assert client.post("/webhooks/registry/999999/", data=envelope(), content_type="application/json").status_code \
        == 404
    assert client.get(f"/webhooks/registry/{instance.pk}/").status_code == 405
    assert not WebhookHealth.objects.exists() and not RefusedDelivery.objects.exists()


def test_every_refusal_status_has_a_counter():
    assert set(REFUSED_COUNTERS) == {400, 401, 413}


# --- The instance page ---------------------------------------------------------------------------

def panel(response) -> str:
    html = response.content.decode()
    start = html.index('<section class="card" id="webhook-health">')
    return html[start:html.index("</section>", start)]


def text(html: str) -> str:
    return unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)).strip())


def test_the_instance_page_before_any_delivery(client_as, instance):
    shown = text(panel(client_as(Role.OPERATOR).get(f"/instances/{instance.pk}/")))
    assert shown == ("Webhook health Send test event Last delivery none received yet Accepted 0 Refused 0 "
                     "(0 wrong or missing secret (401), 0 malformed (400), 0 too large (413))")


def test_the_instance_page_shows_the_last_delivery_and_the_refusals(client_as, instance, make_rule, post_webhook,
                                                                    settings):
    make_rule(instance, repository_pattern="web")
    post_webhook(instance, envelope(manifest_event("team/web", "1.0"), manifest_event("team/api", "1.0"),
                                    blob_event("team/web")))
    refuse_each_way(instance, post_webhook, settings)
    html = panel(client_as(Role.VIEWER).get(f"/instances/{instance.pk}/"))
    shown = text(html)
    assert "Send test event" not in shown  # operators send test events
    assert re.search(r"Last delivery just now : 413 The body is larger than 10 bytes\. Accepted 1 last just now "
                     r"Refused 5 \(2 wrong or missing secret \(401\), 2 malformed \(400\), 1 too large \(413\)\)",
                     shown), shown
    rows = re.findall(r"<tr><td[^>]*><time[^>]*>[^<]+</time></td><td>(\d+)</td><td>([^<]+)</td>"
                      r"<td[^>]*>([^<]+)</td></tr>", html)
    assert [(status, unescape(reason), client) for status, reason, client in rows] == [
        (str(status), reason, "127.0.0.1") for status, reason in REASONS]
    assert instance.webhook_secret not in html


# --- The API ---------------------------------------------------------------------------------------

def iso(value) -> str:
    return value.isoformat().replace("+00:00", "Z")


def test_api_webhook_health_before_any_delivery(api_as, instance):
    response = api_as(Role.VIEWER).get(f"/api/v1/instances/{instance.pk}/webhook-health/")
    assert response.status_code == 200
    assert response.json() == {
        "instance": instance.pk, "accepted": 0, "refused": 0, "refused_unauthorized": 0, "refused_malformed": 0,
        "refused_too_large": 0, "last_received_at": None, "last_status": None, "last_result": "",
        "last_accepted_at": None, "last_refused_at": None, "recent_refusals": [],
    }


def test_api_webhook_health_after_deliveries(api_as, instance, make_rule, post_webhook, settings):
    make_rule(instance, repository_pattern="web")
    post_webhook(instance, envelope(manifest_event("team/web", "1.0"), manifest_event("team/api", "1.0"),
                                    blob_event("team/web")))
    refuse_each_way(instance, post_webhook, settings)
    health = WebhookHealth.objects.get(instance=instance)
    refused = list(instance.refused_deliveries.all())
    assert api_as(Role.VIEWER).get(f"/api/v1/instances/{instance.pk}/webhook-health/").json() == {
        "instance": instance.pk, "accepted": 1, "refused": 5, "refused_unauthorized": 2, "refused_malformed": 2,
        "refused_too_large": 1, "last_received_at": iso(health.last_received_at), "last_status": 413,
        "last_result": "The body is larger than 10 bytes.", "last_accepted_at": iso(health.last_accepted_at),
        "last_refused_at": iso(health.last_refused_at),
        "recent_refusals": [{"received_at": iso(row.received_at), "status": status, "reason": reason,
                             "client": "127.0.0.1"} for row, (status, reason) in zip(refused, REASONS, strict=True)],
    }


def test_api_webhook_health_of_an_unknown_instance_is_404(api_as):
    assert api_as(Role.VIEWER).get("/api/v1/instances/999999/webhook-health/").status_code == 404


def test_viewers_cannot_send_test_events(api_as, client_as, instance):
    assert api_as(Role.VIEWER).post(f"/api/v1/instances/{instance.pk}/webhook-health/test/").status_code == 403
    assert client_as(Role.VIEWER).post(f"/instances/{instance.pk}/webhook/test/").status_code == 403
    assert not PushEvent.objects.exists() and not WebhookHealth.objects.exists()


# --- Send test event: a real delivery to the console's own URL --------------------------------------

@pytest.fixture
def console_url(live_server, settings):
    """The console's webhook URLs point at the live server, as APPARATE_PUBLIC_URL would in production."""
    settings.APPARATE_PUBLIC_URL = live_server.url
    return live_server.url


@pytest.mark.django_db(transaction=True)
def test_api_send_test_event_records_a_test_never_converted(api_as, console_url, make_user):
    instance = Instance.objects.create(name="tested", url="http://registry.example:5000", acceleration_enabled=True)
    operator = api_as(Role.OPERATOR)
    response = operator.post(f"/api/v1/instances/{instance.pk}/webhook-health/test/")
    assert response.status_code == 200
    event = PushEvent.objects.get(instance=instance)
    assert response.json() == {
        "ok": True, "status": 202, "event_id": event.pk,
        "summary": f"The webhook answered 202: the test event was recorded as event #{event.pk}, marked as a test "
                   "(never converted).",
    }
    assert (event.source, event.outcome, event.reason, event.actor, event.job_id) == (
        "test", "skipped", "test_event", "api-operator", None)
    assert event.reason_detail == ("A test delivery sent from the console (api-operator): the webhook URL and secret "
                                   "work. Test events are never converted.")
    assert not ConversionJob.objects.exists()
    health = WebhookHealth.objects.get(instance=instance)
    assert (health.accepted, health.last_status, health.last_result) == (
        1, 202, f"Test event recorded as event #{event.pk}.")
    listed = operator.get("/api/v1/events/").json()["results"]
    assert [(e["id"], e["source"], e["reason"], e["matched_rule_name"]) for e in listed] == [
        (event.pk, "test", "test_event", None)]


@pytest.mark.django_db(transaction=True)
def test_send_test_event_says_when_the_console_cannot_reach_itself(client_as, settings):
    settings.APPARATE_PUBLIC_URL = "http://127.0.0.1:9"
    instance = Instance.objects.create(name="unreachable", url="http://registry.example:5000")
    response = client_as(Role.OPERATOR).post(f"/instances/{instance.pk}/webhook/test/", HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    found = re.search(r'id="webhook-test-outcome" role="status">([^<]+)<', response.content.decode())
    outcome = unescape(found.group(1))
    assert outcome == (f"The console's webhook URL http://127.0.0.1:9/webhooks/registry/{instance.pk}/ could not be "
                       "reached (ConnectionError). Check APPARATE_PUBLIC_URL.")
    assert not PushEvent.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_send_test_event_from_the_page_shows_the_outcome_and_the_test_in_the_events(client_as, console_url):
    instance = Instance.objects.create(name="paged", url="http://registry.example:5000", acceleration_enabled=True)
    operator = client_as(Role.OPERATOR)
    response = operator.post(f"/instances/{instance.pk}/webhook/test/", HTTP_HX_REQUEST="true")
    event = PushEvent.objects.get(instance=instance)
    shown = text(response.content.decode())
    assert shown.startswith(f"Webhook health Send test event The webhook answered 202: the test event was recorded as "
                            f"event #{event.pk}, marked as a test (never converted). See it in the events Last "
                            f"delivery just now : 202 Test event recorded as event #{event.pk}. Accepted 1")
    events_page = operator.get(f"/instances/events/?instance={instance.pk}").content.decode()
    row = events_page[events_page.index(f'<tr id="event-{event.pk}"'):]
    row = text(row[:row.index("</tr>")])
    assert ("Test event (Send test event) · web-operator paged Test event Skipped Test event, never converted "
            "A test delivery sent from the console (web-operator): the webhook URL and secret work.") in row
