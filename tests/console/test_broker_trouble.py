"""A task queue that does not answer: 503 + Retry-After (JSON for machines, a page for people),
or, for conversion jobs on PostgreSQL, the workers' dispatchers send them later; never a bare 500.

Real: the console runs in a subprocess whose CELERY_BROKER_URL names a Redis port nobody listens
on, against this test's PostgreSQL database. Work a request starts is handed to a worker after its
transaction commits.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from core.roles import Role
from pipeline.choices import JobStatus, OperationKind, OperationStatus
from pipeline.models import ConversionJob, Operation
from registries.models import Instance
from tests.support.worker import database_url

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.django_db(transaction=True)

BROKER_MESSAGE = ("The task queue (the message broker) is unavailable right now, so the work this request "
                  "started could not be handed to a worker. Try again in 10 seconds.")

REQUESTS = """
import json, sys
import django
django.setup()
from django.contrib.auth.models import User
from django.test import Client
from rest_framework.test import APIClient
user, instance, job = User.objects.get(username=sys.argv[1]), sys.argv[2], sys.argv[3]
page, api = Client(raise_request_exception=False), APIClient(raise_request_exception=False)
page.force_login(user)
api.force_authenticate(user)
for response in (page.post(f"/instances/{instance}/images/refresh/"),
                 api.post("/api/v1/images/refresh/", {"instance": int(instance)}, format="json"),
                 api.post(f"/api/v1/jobs/{job}/retry/")):
    print(json.dumps([response.status_code, response.get("Retry-After"), response["Content-Type"],
                      response.content.decode()]))
"""


def test_while_the_broker_is_down_work_is_refused_with_503_or_left_to_the_dispatcher(make_user):
    operator = make_user(Role.OPERATOR)
    instance = Instance.objects.create(name="main", url="http://registry.example:5000")
    failed = ConversionJob.objects.create(instance=instance, namespace="team", repository="app", source_tag="1.0",
                                          source_digest="sha256:" + "a" * 64, status=JobStatus.FAILED)
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        dead_broker = f"redis://127.0.0.1:{probe.getsockname()[1]}/0"
    env = {**os.environ, "DATABASE_URL": database_url(), "CELERY_BROKER_URL": dead_broker,
           "ALLOWED_HOSTS": "testserver", "DJANGO_SETTINGS_MODULE": "console.settings", "LOG_LEVEL": "WARNING"}
    run = subprocess.run([sys.executable, "-c", REQUESTS, operator.username, str(instance.pk), str(failed.pk)],
                         env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    page, api, retry = (json.loads(line) for line in run.stdout.splitlines())
    assert page[:3] == [503, "10", "text/html; charset=utf-8"]
    assert BROKER_MESSAGE in page[3]
    assert api[:3] == [503, "10", "application/json"]
    assert json.loads(api[3]) == {"detail": BROKER_MESSAGE}
    # each refresh ended as failed, with the reason, so the next request started a new one
    assert list(Operation.objects.order_by("id").values_list("kind", "status", "error")) == [
        (OperationKind.REFRESH_IMAGES, OperationStatus.FAILED,
         "The task queue (the message broker) was unavailable, so no worker started this. Try again.")] * 2
    assert f"task queue unavailable on POST /instances/{instance.pk}/images/refresh/" in run.stderr
    assert "task queue unavailable on POST /api/v1/images/refresh/" in run.stderr
    # a job is accepted: the dispatchers send it once the broker is back
    assert retry[0] == 200 and json.loads(retry[3])["status"] == JobStatus.QUEUED
    failed.refresh_from_db()
    assert failed.status == JobStatus.QUEUED and failed.awaiting_dispatch
    assert f"jobs=[{failed.pk}] action=left-to-dispatcher" in run.stderr
