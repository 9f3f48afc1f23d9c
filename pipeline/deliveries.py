"""Webhook health: what each instance's webhook endpoint received, and *Send test event*.

The intake (pipeline.views.webhook_intake) reports every delivery of a known instance here:
accepted ones with a one-line result, refused ones (401, 400, 413) with the console's own short
reason. Recording stays cheap and bounded under any flood: one UPDATE of the instance's counters
(WebhookHealth) per delivery, and for a refusal one upsert into a ring of REFUSED_KEPT rows
(RefusedDelivery). No secret and no body is ever kept.

A test delivery is a real one: signed with the instance's secret and posted to the console's own
webhook URL, so it proves the URL, the secret and the intake together; the intake stores it as a
test event, never converted.
"""

import json
import uuid
from dataclasses import dataclass

import requests
from django.conf import settings
from django.db import connection
from django.utils import timezone

from pipeline.choices import PushOutcome
from pipeline.intake import ParsedPayload, test_event
from pipeline.models import MAX_RESULT_LENGTH, REFUSED_KEPT, PushEvent, RefusedDelivery, WebhookHealth
from registries.models import Instance

# The counter of each refusal status.
REFUSED_COUNTERS = {401: "refused_unauthorized", 400: "refused_malformed", 413: "refused_too_large"}


def accepted_result(parsed: ParsedPayload, events: list[PushEvent]) -> str:
    """The result of an accepted delivery in one line, as the instance page shows it."""
    if events and all(event.is_test for event in events):
        return f"Test event recorded as event #{events[0].pk}."
    requested = sum(1 for event in events if event.outcome == PushOutcome.CONVERSION_REQUESTED)
    return (f"{len(events)} push(es) recorded, {requested} conversion(s) requested; {parsed.ignored} other "
            "event(s) ignored (blobs, pulls, deletes).")


def _count(instance: Instance, status: int, result: str, now) -> int:
    """Count one delivery in the instance's row, which the first creates (one upsert); returns the
    number of refusals so far."""
    table = WebhookHealth._meta.db_table
    counter = REFUSED_COUNTERS.get(status)
    counts = {"accepted": int(counter is None), "refused": int(counter is not None),
              **{name: int(name == counter) for name in REFUSED_COUNTERS.values()}}
    seen_at = "last_accepted_at" if counter is None else "last_refused_at"
    latest = ("last_received_at", "last_status", "last_result", seen_at)
    # Every name is the console's own; the values are parameters.
    sql = (f"INSERT INTO {table} (instance_id, {', '.join([*counts, *latest])}) "  # noqa: S608
           f"VALUES ({', '.join(['%s'] * (1 + len(counts) + len(latest)))}) ON CONFLICT (instance_id) DO UPDATE SET "
           + ", ".join([*(f"{name} = {table}.{name} + excluded.{name}" for name in counts),
                        *(f"{name} = excluded.{name}" for name in latest)])
           + " RETURNING refused")
    with connection.cursor() as cursor:
        cursor.execute(sql, [instance.pk, *counts.values(), now, status, result[:MAX_RESULT_LENGTH], now])
        return cursor.fetchone()[0]


def record_accepted(instance: Instance, result: str) -> None:
    """Count an accepted delivery and keep its result as the instance's last (one statement)."""
    _count(instance, 202, result, timezone.now())


def record_refused(instance: Instance, status: int, reason: str, client: str | None) -> None:
    """Count a refused delivery (401, 400 or 413) and keep it in the instance's ring of the last
    REFUSED_KEPT: two statements, whatever came before."""
    now = timezone.now()
    refused = _count(instance, status, reason, now)
    RefusedDelivery.objects.bulk_create(
        [RefusedDelivery(instance_id=instance.pk, slot=refused % REFUSED_KEPT, received_at=now, status=status,
                         reason=reason[:MAX_RESULT_LENGTH], client=(client or "")[:45])],
        update_conflicts=True, unique_fields=["instance", "slot"],
        update_fields=["received_at", "status", "reason", "client"],
    )


def health_of(instance: Instance) -> WebhookHealth:
    """The instance's webhook health (all zero, nothing received, when no delivery came yet)."""
    return WebhookHealth.objects.filter(pk=instance.pk).first() or WebhookHealth(instance=instance)


def recent_refusals(instance: Instance) -> list[RefusedDelivery]:
    """The last REFUSED_KEPT refused deliveries, newest first."""
    return list(instance.refused_deliveries.all()[:REFUSED_KEPT])


@dataclass(frozen=True)
class TestOutcome:
    """What a test delivery got: whether the intake accepted it, its status, and a sentence."""

    ok: bool
    status: int | None
    summary: str
    event_id: int | None = None


def send_test_delivery(instance: Instance, url: str, user) -> TestOutcome:
    """POST a test delivery, signed with the instance's webhook secret, to the console's own webhook
    URL (one local call, APPARATE_WEBHOOK_TEST_TIMEOUT); the outcome. The test event itself names the
    sender, so nothing is audited (no configuration changes)."""
    body = json.dumps({test_event.KEY: {"id": f"test-{uuid.uuid4()}", "sent_by": getattr(user, "username", "")}})
    try:
        response = requests.post(url, data=body, timeout=settings.APPARATE_WEBHOOK_TEST_TIMEOUT, headers={
            "Authorization": f"Bearer {instance.webhook_secret}", "Content-Type": "application/json",
            "User-Agent": "apparate-webhook-test"})
    except requests.Timeout:
        return TestOutcome(False, None, f"The console's webhook URL {url} did not answer within "
                                        f"{settings.APPARATE_WEBHOOK_TEST_TIMEOUT:g} s.")
    except requests.RequestException as error:
        return TestOutcome(False, None, f"The console's webhook URL {url} could not be reached "
                                        f"({type(error).__name__}). Check APPARATE_PUBLIC_URL.")
    return _read_answer(url, response)


def _read_answer(url: str, response: requests.Response) -> TestOutcome:
    try:
        answer = response.json()
    except ValueError:
        answer = {}
    if not isinstance(answer, dict):
        answer = {}
    if response.status_code == 202:
        events = answer.get("events") or [{}]
        event_id = events[0].get("id") if isinstance(events[0], dict) else None
        return TestOutcome(True, 202, f"The webhook answered 202: the test event was recorded as event #{event_id}, "
                                      "marked as a test (never converted).", event_id)
    error = str(answer.get("error") or response.reason or "")[:MAX_RESULT_LENGTH]
    return TestOutcome(False, response.status_code, f"The webhook at {url} answered {response.status_code}: {error}")
