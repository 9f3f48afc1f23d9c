"""The dispatcher (PostgreSQL): the jobs of webhook deliveries reach the queue through the database.

Each job is claimed by one dispatcher however many run; a claim whose messages cannot be sent stays
undone; a delivery's notification wakes a waiting dispatcher; and the intake answers 202 with the
broker down, its job kept for the dispatcher.
"""

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from django.db import connection
from django.test import Client

from pipeline import dispatch
from pipeline.models import ConversionJob
from registries.models import Instance
from rules.models import Rule
from tests.registries.conftest import envelope, manifest_event
from tests.support.worker import database_url

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def instance() -> Instance:
    instance = Instance.objects.create(name="main", url="http://registry.example:5000", acceleration_enabled=True)
    Rule.objects.create(instance=instance, name="team", namespace="team")
    return instance


def deliver(instance: Instance, *events: dict) -> int:
    response = Client().post(f"/webhooks/registry/{instance.pk}/", data=envelope(*events),
                             content_type="application/json", HTTP_AUTHORIZATION=instance.webhook_secret)
    assert response.status_code == 202, response.content
    return response.json()["events"][0]["id"]


def job_of(event_id: int) -> ConversionJob:
    return ConversionJob.objects.get(event_id=event_id)


def wait_dispatched(job_id: int, seconds: float = 30) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not ConversionJob.objects.get(pk=job_id).awaiting_dispatch:
            return True
        time.sleep(0.1)
    return False


def test_concurrent_dispatchers_claim_each_job_exactly_once(instance):
    deliver(instance, *[manifest_event(f"team/app{n}", "1.0") for n in range(30)])
    awaiting = sorted(ConversionJob.objects.filter(awaiting_dispatch=True).values_list("pk", flat=True))
    assert len(awaiting) == 30
    start, sent = threading.Barrier(3), []

    def dispatcher():
        try:
            start.wait()
            while batch := dispatch.dispatch_awaiting_jobs(limit=4):
                sent.extend(batch)
        finally:
            connection.close()

    threads = [threading.Thread(target=dispatcher) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(sent) == awaiting  # every job once: none twice, none left out
    assert not ConversionJob.objects.filter(awaiting_dispatch=True).exists()


def test_a_notification_wakes_a_waiting_dispatcher(instance):
    first = job_of(deliver(instance, manifest_event("team/app", "1.0")))
    stop = threading.Event()
    # polling only every 600 s: within the test's time, only the delivery's notification can wake it
    thread = threading.Thread(target=dispatch.run_dispatcher, args=(stop, 600), daemon=True)
    thread.start()
    try:
        assert wait_dispatched(first.pk), "the dispatcher's first round sends what was waiting already"
        second = job_of(deliver(instance, manifest_event("team/web", "1.0")))
        assert wait_dispatched(second.pk), "a delivery's commit woke the dispatcher"
    finally:
        stop.set()
        with connection.cursor() as cursor:
            cursor.execute(f"NOTIFY {dispatch.CHANNEL}")  # wakes it to see `stop`
        thread.join(30)
    assert not thread.is_alive()


BROKER_DOWN = """
import sys
import django
django.setup()
from django.test import Client
from pipeline.dispatch import dispatch_awaiting_jobs
response = Client().post(f"/webhooks/registry/{sys.argv[1]}/", data=sys.argv[2], content_type="application/json",
                         HTTP_AUTHORIZATION=sys.argv[3])
print(response.status_code, response.json()["events"][0]["outcome"])
try:
    dispatch_awaiting_jobs()
except Exception as error:
    print("dispatch:", type(error).__name__)
"""


def test_with_the_broker_down_a_delivery_is_accepted_and_its_job_waits_for_the_dispatcher(instance):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        dead_broker = f"redis://127.0.0.1:{probe.getsockname()[1]}/0"
    env = {**os.environ, "DATABASE_URL": database_url(), "CELERY_BROKER_URL": dead_broker,
           "ALLOWED_HOSTS": "testserver", "DJANGO_SETTINGS_MODULE": "console.settings", "LOG_LEVEL": "ERROR"}
    body = envelope(manifest_event("team/app", "1.0")).decode()
    run = subprocess.run([sys.executable, "-c", BROKER_DOWN, str(instance.pk), body, instance.webhook_secret],
                         env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.stdout.splitlines() == ["202 conversion_requested", "dispatch: OperationalError"], run.stderr[-2000:]
    job = ConversionJob.objects.get()
    assert job.awaiting_dispatch, "the claim whose message could not be sent was rolled back"
    assert dispatch.dispatch_awaiting_jobs() == [job.pk]  # the broker is back (this process's)
