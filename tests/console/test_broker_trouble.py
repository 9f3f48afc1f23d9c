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

from clusters.choices import Compatibility, LabelResultStatus, SyncStatus
from clusters.choices import JobStatus as LabelStatus
from clusters.models import Cluster, LabelJob, Node
from core.queue import UNAVAILABLE_REASON
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
user, instance, job, cluster, node = User.objects.get(username=sys.argv[1]), *sys.argv[2:6]
page, api = Client(raise_request_exception=False), APIClient(raise_request_exception=False)
page.force_login(user)
api.force_authenticate(user)
for response in (page.post(f"/instances/{instance}/images/refresh/"),
                 api.post("/api/v1/images/refresh/", {"instance": int(instance)}, format="json"),
                 api.post(f"/api/v1/jobs/{job}/retry/"),
                 page.post(f"/clusters/{cluster}/sync/"),
                 api.post("/api/v1/label-jobs/", {"nodes": [int(node)]}, format="json")):
    print(json.dumps([response.status_code, response.get("Retry-After"), response["Content-Type"],
                      response.content.decode()]))
"""


def test_while_the_broker_is_down_work_is_refused_with_503_or_left_to_the_dispatcher(make_user):
    operator = make_user(Role.OPERATOR)
    instance = Instance.objects.create(name="main", url="http://registry.example:5000")
    cluster = Cluster.objects.create(name="prod", server="https://127.0.0.1:6443")
    node = Node.objects.create(cluster=cluster, name="node-1", compatibility=Compatibility.COMPATIBLE)
    failed = ConversionJob.objects.create(instance=instance, namespace="team", repository="app", source_tag="1.0",
                                          source_digest="sha256:" + "a" * 64, status=JobStatus.FAILED)
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        dead_broker = f"redis://127.0.0.1:{probe.getsockname()[1]}/0"
    env = {**os.environ, "DATABASE_URL": database_url(), "CELERY_BROKER_URL": dead_broker,
           "ALLOWED_HOSTS": "testserver", "DJANGO_SETTINGS_MODULE": "console.settings", "LOG_LEVEL": "WARNING"}
    arguments = [operator.username, *(str(row.pk) for row in (instance, failed, cluster, node))]
    run = subprocess.run([sys.executable, "-c", REQUESTS, *arguments], env=env, cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    page, api, retry, sync, label = (json.loads(line) for line in run.stdout.splitlines())
    assert page[:3] == [503, "10", "text/html; charset=utf-8"]
    assert BROKER_MESSAGE in page[3]
    assert api[:3] == [503, "10", "application/json"]
    assert json.loads(api[3]) == {"detail": BROKER_MESSAGE}
    # each refresh ended as failed, with the reason, so the next request started a new one
    assert list(Operation.objects.order_by("id").values_list("kind", "status", "error")) == [
        (OperationKind.REFRESH_IMAGES, OperationStatus.FAILED, UNAVAILABLE_REASON)] * 2
    assert UNAVAILABLE_REASON == ("The task queue (the message broker) was unavailable, so no worker started this. "
                                  "Try again.")
    assert f"task queue unavailable on POST /instances/{instance.pk}/images/refresh/" in run.stderr
    assert "task queue unavailable on POST /api/v1/images/refresh/" in run.stderr
    # a job is accepted: the dispatchers send it once the broker is back
    assert retry[0] == 200 and json.loads(retry[3])["status"] == JobStatus.QUEUED
    failed.refresh_from_db()
    assert failed.status == JobStatus.QUEUED and failed.awaiting_dispatch
    assert f"jobs=[{failed.pk}] action=left-to-dispatcher" in run.stderr
    # a sync and a label job the broker could not take are not left queued or pending for nobody
    assert sync[:2] == [503, "10"] and label[:2] == [503, "10"]
    assert json.loads(label[3]) == {"detail": BROKER_MESSAGE}
    cluster.refresh_from_db()
    assert (cluster.sync_status, cluster.sync_message) == (SyncStatus.IDLE, UNAVAILABLE_REASON)
    job = LabelJob.objects.get()
    assert (job.status, job.last_error, job.total, job.failed) == (LabelStatus.FAILED, UNAVAILABLE_REASON, 1, 1)
    assert job.finished_at is not None
    assert list(job.results.values_list("node_name", "status", "message")) == [
        ("node-1", LabelResultStatus.FAILED, UNAVAILABLE_REASON)]
