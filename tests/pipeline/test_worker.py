"""End to end with real processes: docker-registry (notifications) → live server → Redis → a real
Celery worker → the accelerated tag in the registry, checked by reading its TOC and by skopeo.
Also: a worker killed with SIGKILL mid-conversion, and the tag never visible before it is complete."""

import hashlib
import json
import subprocess
import time

import pytest
import requests

from converter.image import TOC_DIGEST_ANNOTATION
from core.roles import Role
from pipeline.choices import JobStatus, PushOutcome
from pipeline.models import ConversionJob, PushEvent
from registries.models import Instance
from rules.models import Rule
from tests.converter.estargz_support import check_chunks, read_toc
from tests.support.images import Platform, push_image

OCI = "application/vnd.oci.image.manifest.v1+json"


def wait_for(predicate, timeout: float = 120, interval: float = 0.2, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


def twin_is_complete(registry, path: str, tag: str) -> dict | None:
    """The twin's manifest if the tag is visible, after checking that every blob it names exists."""
    response = requests.get(f"{registry.url}/v2/{path}/manifests/{tag}", headers={"Accept": OCI}, timeout=10)
    if response.status_code == 404:
        return None
    response.raise_for_status()
    manifest = response.json()
    for blob in [manifest["config"], *manifest["layers"]]:
        head = requests.head(f"{registry.url}/v2/{path}/blobs/{blob['digest']}", timeout=10)
        assert head.status_code == 200, f"the tag is visible but blob {blob['digest']} is missing"
    return manifest


@pytest.fixture
def wired(live_server, registry_factory):
    """An instance with acceleration on whose registry notifies the live server, and a rule."""
    instance = Instance.objects.create(name="e2e", url="http://placeholder:1", acceleration_enabled=True)
    registry = registry_factory(notify_url=f"{live_server.url}/webhooks/registry/{instance.pk}/",
                                notify_secret=instance.webhook_secret)
    instance.url = registry.url
    instance.save()
    Rule.objects.create(instance=instance, name="team", namespace="team")
    return instance, registry


def test_push_to_accelerated_image_through_real_worker(wired, celery_worker, tmp_path, client_as):
    instance, registry = wired
    digest = push_image(tmp_path, f"{registry.host}/team/app:1.0",
                        [Platform(layers=[{"etc/": None, "etc/hello": b"hello\n" * 1000},
                                          {"bin/": None, "bin/tool": b"\x7fELF" + bytes(300_000)}])])
    job = wait_for(lambda: ConversionJob.objects.filter(instance=instance).first(), what="the job")
    job = wait_for(lambda: ConversionJob.objects.filter(pk=job.pk, status__in=[JobStatus.SUCCEEDED,
                                                                                JobStatus.FAILED]).first(),
                   what="the job to finish")
    assert job.status == JobStatus.SUCCEEDED, (job.reason, celery_worker.log()[-3000:])
    assert job.source_digest == digest and job.attempts == 1
    event = PushEvent.objects.get(outcome=PushOutcome.CONVERSION_REQUESTED)
    assert job.event == event and event.tag == "1.0"

    manifest = twin_is_complete(registry, "team/app", "1.0-apparate")
    assert manifest is not None
    for layer in manifest["layers"]:
        blob = requests.get(f"{registry.url}/v2/team/app/blobs/{layer['digest']}", timeout=30).content
        toc, toc_json = read_toc(blob)
        assert layer["annotations"][TOC_DIGEST_ANNOTATION] == "sha256:" + hashlib.sha256(toc_json).hexdigest()
        assert toc["version"] == 1 and check_chunks(blob) >= 1
    inspected = json.loads(subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", f"docker://{registry.host}/team/app:1.0-apparate"],
        check=True, capture_output=True, timeout=60).stdout)
    assert inspected["Digest"] == job.result_digest and len(inspected["Layers"]) == 2

    viewer = client_as(Role.VIEWER)
    page = viewer.get(f"/rules/jobs/{job.pk}/").content.decode()
    assert "1.0-apparate" in page and job.result_digest in page
    events = viewer.get("/instances/events/").content.decode()
    assert "team/app:1.0" in events


def test_worker_killed_mid_conversion_then_job_completes(wired, celery_worker_factory, tmp_path):
    instance, registry = wired
    env = {"APPARATE_BROKER_VISIBILITY_TIMEOUT": "3", "APPARATE_JOB_PROGRESS_INTERVAL": "0.1"}
    noise = hashlib.shake_256(b"sigkill").digest(40 << 20)  # incompressible: a few seconds of work
    first = celery_worker_factory(**env)
    push_image(tmp_path, f"{registry.host}/team/big:1.0", [Platform(layers=[{"data.bin": noise}])])
    job = wait_for(lambda: ConversionJob.objects.filter(instance=instance, status=JobStatus.RUNNING,
                                                        bytes_in__gt=0).first(),
                   interval=0.05, what="the conversion to be under way")
    first.kill()
    job.refresh_from_db()
    assert job.status == JobStatus.RUNNING and job.attempts == 1
    assert twin_is_complete(registry, "team/big", "1.0-apparate") is None

    celery_worker_factory(**env)

    def finished():
        # at no time is the tag visible before the image is complete (checked on every poll)
        twin_is_complete(registry, "team/big", "1.0-apparate")
        return ConversionJob.objects.filter(pk=job.pk, status__in=[JobStatus.SUCCEEDED, JobStatus.FAILED]).first()

    done = wait_for(finished, timeout=180, interval=0.2, what="the job to complete after the restart")
    assert done.status == JobStatus.SUCCEEDED, done.reason
    assert done.attempts >= 2 and any("worker lost" in line["message"] for line in done.log)
    assert twin_is_complete(registry, "team/big", "1.0-apparate") is not None
