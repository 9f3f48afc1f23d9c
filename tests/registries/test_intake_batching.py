"""Webhook intake in batches: a delivery costs a fixed number of SQL statements whatever its size,
records every push in order, decides each push exactly as a delivery of that push alone would, and
checks the webhook secret without decrypting it at each request."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from pipeline import actions
from pipeline.actions import request_conversion
from pipeline.choices import JobTrigger
from pipeline.models import ConversionJob, PushEvent
from registries import actions as registry_actions
from registries.models import Instance
from tests.registries.conftest import digest_of, envelope, manifest_event

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parents[2]

# What one delivery costs, whatever the number of pushes in it (in a test, atomic blocks are savepoints):
# the instance by its URL; SAVEPOINT, the instance locked, its earlier events of these deliveries or
# digests, its rules, the events in one INSERT, RELEASE; the webhook health counters.
NON_MATCHING_STATEMENTS = 8
# ... and for conversions the same, the events' INSERT skipping what the one-request-per-content
# constraint refuses (no savepoint), and the jobs INSERTed with each event's job set in the same statement.
MATCHING_STATEMENTS = 9


def statements(post_webhook, instance, body) -> list[str]:
    with CaptureQueriesContext(connection) as captured:
        response = post_webhook(instance, body)
    assert response.status_code == 202, response.content
    return [query["sql"] for query in captured.captured_queries]


def non_matching(n: int) -> list[dict]:
    return [manifest_event("team/other", f"1.{i}") for i in range(n)]


def matching(n: int) -> list[dict]:
    return [manifest_event("team/web", f"1.{i}") for i in range(n)]


def test_a_non_matching_push_costs_a_fixed_number_of_statements(instance, make_rule, post_webhook):
    for k in range(20):
        make_rule(instance, f"rule {k}", repository_pattern=f"web{k}")
    one = statements(post_webhook, instance, envelope(*non_matching(1)))
    assert len(one) == NON_MATCHING_STATEMENTS, "\n".join(one)
    assert len(statements(post_webhook, instance, envelope(*non_matching(200)))) == NON_MATCHING_STATEMENTS
    assert not [sql for sql in one if "password" in sql], "the instance's credentials are not read"


def test_a_matching_push_costs_a_fixed_number_of_statements(instance, make_rule, post_webhook):
    make_rule(instance, "web", repository_pattern="web")
    one = statements(post_webhook, instance, envelope(*matching(1)))
    assert len(one) == MATCHING_STATEMENTS, "\n".join(one)
    many = statements(post_webhook, instance, envelope(*[manifest_event("team/web", f"2.{i}") for i in range(200)]))
    assert len(many) == MATCHING_STATEMENTS
    assert ConversionJob.objects.count() == 201


def test_thousand_events_are_recorded_completely_and_in_order(instance, make_rule, post_webhook):
    make_rule(instance, "web", repository_pattern="web")
    events = [manifest_event("team/web" if i % 2 else "team/other", f"v{i}") for i in range(1000)]
    response = post_webhook(instance, envelope(*events))
    assert response.status_code == 202
    body = response.json()
    assert body["received"] == 1000
    stored = list(PushEvent.objects.order_by("id"))
    assert [event.delivery_id for event in stored] == [event["id"] for event in events]
    assert [event["id"] for event in body["events"]] == [event.pk for event in stored]
    assert [event.outcome for event in stored] == ["skipped", "conversion_requested"] * 500
    jobs = ConversionJob.objects.order_by("id")
    assert [job.source_tag for job in jobs] == [f"v{i}" for i in range(1, 1000, 2)]
    assert all(event.job.event_id == event.pk for event in stored if event.outcome == "conversion_requested")
    assert all(event.job_id is None for event in stored if event.outcome == "skipped")


def _mixed_pushes() -> list[dict]:
    """Every kind of decision, and pushes that refer to earlier ones of the same delivery."""
    same = digest_of("same content")
    repeated = manifest_event("team/web", "1.0", event_id="delivery-1")
    return [
        repeated,
        manifest_event("team/web", "1.1", same),
        manifest_event("team/web", "latest", same),  # a new tag of content requested just before
        repeated,  # a delivery id seen just before
        manifest_event("team/web", "1.2-rc1"),  # the closest rule fails on the tag
        manifest_event("team/api", "1.0"),
        manifest_event("team/web", tag=None),
        manifest_event("team/web", "1.0-apparate"),
        manifest_event("team/web", "2.0", media_type="application/vnd.in-toto+json"),
        manifest_event("alpine", "3.20"),
        manifest_event("team/web", "bad tag!"),
        manifest_event("team/web", "1.1", same, event_id="delivery-9"),  # same content, same tag
        manifest_event("team/web", "3.0"),
    ]


def _decisions(instance: Instance) -> list[tuple]:
    """Each event's decision, event numbers replaced by their place among the instance's events."""
    events = list(instance.push_events.order_by("id"))
    place = {event.pk: index for index, event in enumerate(events)}
    job_place = {job.pk: index for index, job in enumerate(instance.jobs.order_by("id"))}

    def renumber(text: str) -> str:
        text = re.sub(r"event #(\d+)", lambda match: f"event [{place[int(match.group(1))]}]", text)
        return re.sub(r"job #(\d+)", lambda match: f"job [{job_place[int(match.group(1))]}]", text)

    return [(e.outcome, e.reason, renumber(e.reason_detail), e.matched_rule.name if e.matched_rule else None,
             e.job.source_tag if e.job else None, sorted(e.job.twin_tags) if e.job else None) for e in events]


def test_per_event_decisions_are_those_of_one_delivery_per_push(make_rule, post_webhook):
    batched = Instance.objects.create(name="batched", url="http://registry.example:5000", acceleration_enabled=True)
    alone = Instance.objects.create(name="alone", url="http://registry.example:5000", acceleration_enabled=True)
    for instance in (batched, alone):
        make_rule(instance, "web releases", repository_pattern="web", tag_pattern=r"\d+\.\d+|latest")
    pushes = _mixed_pushes()
    post_webhook(batched, envelope(*pushes))
    for push in pushes:
        post_webhook(alone, envelope(push))
    decided = _decisions(batched)
    assert decided == _decisions(alone)
    assert [(outcome, reason) for outcome, reason, *_ in decided] == [
        ("conversion_requested", "rule_matched"), ("conversion_requested", "rule_matched"),
        ("skipped", "already_seen"), ("skipped", "already_seen"), ("skipped", "no_rule_matched"),
        ("skipped", "no_rule_matched"), ("skipped", "no_tag"), ("skipped", "accelerated_tag"),
        ("skipped", "not_image_manifest"), ("skipped", "invalid_reference"), ("skipped", "invalid_reference"),
        ("skipped", "already_seen"), ("conversion_requested", "rule_matched"),
    ]
    assert decided[2][2].startswith("team/web@" + digest_of("same content") + " was already requested for "
                                    "conversion (event [1], tag '1.1')")
    assert decided[2][5] == ["latest"]  # the new tag joined the job of its content
    assert decided[3][2].startswith("Delivery 'delivery-1' was already received (event [0]).")


def test_a_push_joins_a_job_made_by_convert_now(instance, make_rule, post_webhook):
    make_rule(instance, "web", repository_pattern="web")
    digest = digest_of("converted by hand")
    job, created = request_conversion(instance, "team/web:1.0", digest, trigger=JobTrigger.MANUAL)
    assert created
    post_webhook(instance, envelope(manifest_event("team/web", "1.0", digest), manifest_event("team/web", "2.0")))
    first, second = PushEvent.objects.order_by("id")
    assert (first.outcome, first.job_id) == ("conversion_requested", job.pk)
    assert ConversionJob.objects.count() == 2 and second.job_id not in (None, job.pk)
    job.refresh_from_db()
    assert job.trigger == JobTrigger.MANUAL and job.event_id is None  # the existing job is left as it was



def test_a_request_the_constraint_refuses_is_skipped_by_the_insert_and_stored_as_already_seen(
        instance, make_rule, post_webhook):
    """The backstop for a conversion request that raced past the instance lock: the batch's INSERT
    stores the others and hands it back; it is then stored as already seen."""
    make_rule(instance, "web", repository_pattern="web")
    post_webhook(instance, envelope(manifest_event("team/web", "1.0", digest_of("raced"))))
    first = PushEvent.objects.get()
    columns = {field.attname: getattr(first, field.attname) for field in PushEvent._meta.concrete_fields
               if not field.primary_key}
    raced = PushEvent(**{**columns, "delivery_id": "raced", "job_id": None})
    other = PushEvent(**{**columns, "delivery_id": "other", "digest": digest_of("other"), "job_id": None})
    assert actions._insert_events([raced, other]) == [raced]
    assert other.pk is not None and raced.pk is None
    actions._store_one(raced)
    stored = PushEvent.objects.get(delivery_id="raced")
    assert (stored.outcome, stored.reason) == ("skipped", "already_seen")
    assert stored.reason_detail == (f"team/web@{digest_of('raced')} was already requested for conversion by a "
                                    "concurrent delivery; the same content is converted once.")

# --- The webhook secret, decrypted once per process ------------------------------------------------

def test_the_secret_is_decrypted_once_not_per_request(instance, post_webhook):
    post_webhook(instance, envelope())
    before = registry_actions._secret_digest.cache_info()
    for _ in range(3):
        assert post_webhook(instance, envelope()).status_code == 202
    after = registry_actions._secret_digest.cache_info()
    assert (after.hits - before.hits, after.misses - before.misses) == (3, 0)


def test_a_rotated_secret_takes_effect_at_once(instance, post_webhook):
    old = instance.webhook_secret
    assert post_webhook(instance, envelope(), secret=old).status_code == 202  # the old secret is cached now
    new = registry_actions.rotate_webhook_secret(Instance.objects.get(pk=instance.pk))
    assert post_webhook(instance, envelope(), secret=old).status_code == 401
    assert post_webhook(instance, envelope(), secret=new).status_code == 202
    assert post_webhook(instance, envelope(), secret=f"Bearer {new}").status_code == 202


@pytest.mark.parametrize("wrong", ["", "wrong", "Bearer ", "x" * 43])
def test_a_wrong_secret_is_401_after_the_right_one_was_cached(instance, post_webhook, wrong):
    assert post_webhook(instance, envelope()).status_code == 202
    response = post_webhook(instance, envelope(manifest_event("team/web")), secret=wrong)
    assert response.status_code == 401
    assert response.json() == {"error": "Missing or wrong webhook secret in the Authorization header."}
    assert not PushEvent.objects.exists()


def test_the_secret_of_another_instance_stays_refused_when_both_are_cached(instance, post_webhook):
    other = Instance.objects.create(name="other", url="https://other.example")
    assert post_webhook(other, envelope()).status_code == 202
    assert post_webhook(instance, envelope()).status_code == 202
    assert post_webhook(instance, envelope(), secret=other.webhook_secret).status_code == 401


SQLITE_DELIVERY = """
import django
django.setup()
from django.core.management import call_command
call_command("migrate", verbosity=0)
from pipeline import actions
from pipeline.intake.records import PushRecord
from pipeline.models import ConversionJob
from registries.models import Instance
from rules.models import Rule
instance = Instance.objects.create(name="main", url="http://registry.example", acceleration_enabled=True)
Rule.objects.create(instance=instance, name="team", namespace="team")
pushes = [PushRecord("distribution", f"delivery-{tag}", "team", "app", tag, "sha256:" + digit * 64, "")
          for tag, digit in (("1.0", "a"), ("2.0", "b"), ("2.1", "b"))]
for event in actions.record_pushes(instance, pushes):
    print(event.tag, event.outcome, event.job.source_tag if event.job else None)
print("awaiting dispatch:", sorted(set(ConversionJob.objects.values_list("awaiting_dispatch", flat=True))))
from console.celery import app
with app.connection_for_write() as broker:
    print("messages:", broker.default_channel.queue_declare("celery", passive=True).message_count)
"""


def test_a_matching_delivery_is_recorded_on_sqlite_as_make_run_uses_it(tmp_path):
    """`make run` keeps its data in SQLite, which has no data-modifying WITH and no NOTIFY: the intake's
    writes work there too, and its jobs are sent after commit."""
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}", "CELERY_BROKER_URL": "memory://",
           "APPARATE_VAR_DIR": str(tmp_path), "DJANGO_SETTINGS_MODULE": "console.settings", "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, "-c", SQLITE_DELIVERY], env=env, cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.splitlines() == ["1.0 conversion_requested 1.0", "2.0 conversion_requested 2.0",
                                       "2.1 skipped 2.0",
                                       # no dispatcher without NOTIFY: the two jobs went out after commit,
                                       # in one fan-out message
                                       "awaiting dispatch: [False]", "messages: 1"]
