"""Webhook → job: a matched push creates exactly one job however often it is delivered and however
many rules match; the event records which rule decided, and the job points back at the event."""

import time

import pytest

from pipeline.choices import JobStatus, PushOutcome
from pipeline.dispatch import dispatch_awaiting_jobs
from pipeline.models import ConversionJob, PushEvent
from tests.registries.conftest import envelope, manifest_event


def test_twenty_deliveries_and_three_rules_make_one_job(instance, make_rule, client,
                                                        django_capture_on_commit_callbacks):
    first = make_rule("first", repository_pattern="app", chunk_size=1 << 20)
    make_rule("second")
    make_rule("third", tag_pattern=r"\d+\.\d+")
    event = manifest_event("team/app", "1.0", event_id="delivery-1")
    with django_capture_on_commit_callbacks() as callbacks:
        for number in range(20):
            # the same delivery resent, and the same digest under new delivery ids
            body = envelope(event if number % 2 else {**event, "id": f"delivery-{number}"})
            response = client.post(f"/webhooks/registry/{instance.pk}/", data=body,
                                   content_type="application/vnd.docker.distribution.events.v1+json",
                                   HTTP_AUTHORIZATION=instance.webhook_secret)
            assert response.status_code < 300
    job = ConversionJob.objects.get()
    # nothing sent from the requests: on PostgreSQL the job awaits the dispatcher, which sends it once
    assert callbacks == [] and job.awaiting_dispatch
    assert dispatch_awaiting_jobs() == [job.pk] and dispatch_awaiting_jobs() == []
    requested = PushEvent.objects.get(outcome=PushOutcome.CONVERSION_REQUESTED)
    assert requested.matched_rule == first and job.rule == first and job.event == requested
    assert job.options["chunk_size"] == 1 << 20
    assert (job.path, job.source_tag, job.source_digest) == ("team/app", "1.0", event["target"]["digest"])
    assert PushEvent.objects.count() == 20


def test_unmatched_push_creates_no_job(instance, make_rule, client):
    make_rule("only-web", repository_pattern="web")
    client.post(f"/webhooks/registry/{instance.pk}/", data=envelope(manifest_event("team/app", "1.0")),
                content_type="application/vnd.docker.distribution.events.v1+json",
                HTTP_AUTHORIZATION=instance.webhook_secret)
    assert PushEvent.objects.get().outcome == PushOutcome.SKIPPED
    assert not ConversionJob.objects.exists()


def test_known_content_pushed_under_a_new_tag_is_already_seen_and_gets_a_twin_tag(instance, make_rule, client):
    make_rule("all")
    first = manifest_event("team/app", "1.0", event_id="d-1")
    second = {**first, "id": "d-2", "target": {**first["target"], "tag": "latest"}}
    for event in (first, second):
        client.post(f"/webhooks/registry/{instance.pk}/", data=envelope(event),
                    content_type="application/vnd.docker.distribution.events.v1+json",
                    HTTP_AUTHORIZATION=instance.webhook_secret)
    job = ConversionJob.objects.get()
    assert job.source_tag == "1.0" and job.twin_tags == ["latest"]
    seen = PushEvent.objects.get(tag="latest")
    assert seen.outcome == PushOutcome.SKIPPED and seen.reason == "already_seen"
    assert seen.job == job and PushEvent.objects.get(tag="1.0").job == job
    # what will happen, said as it is: the job has not run yet
    assert seen.reason_detail.endswith(f"'latest-apparate' will be tagged when job #{job.pk} (queued) succeeds.")


def test_a_delivery_of_many_matching_pushes_sends_no_message_from_the_request(instance, make_rule, client,
                                                                              django_capture_on_commit_callbacks):
    make_rule("team")
    body = envelope(*[manifest_event(f"team/app{n}", "1.0") for n in range(50)])
    with django_capture_on_commit_callbacks() as callbacks:
        response = client.post(f"/webhooks/registry/{instance.pk}/", data=body, content_type="application/json",
                               HTTP_AUTHORIZATION=instance.webhook_secret)
    assert response.status_code == 202
    assert callbacks == []
    jobs = sorted(ConversionJob.objects.filter(awaiting_dispatch=True).values_list("pk", flat=True))
    assert len(jobs) == 50
    assert dispatch_awaiting_jobs(limit=20) == jobs[:20]  # oldest first, a batch at a time
    assert dispatch_awaiting_jobs() == jobs[20:]


@pytest.mark.django_db(transaction=True)
def test_every_job_of_a_delivery_is_dispatched_to_a_worker_and_runs(instance, make_rule, push, client, celery_worker):
    make_rule("team")
    digests = [push(f"team/fan{n}:1.0") for n in range(3)]
    body = envelope(*[manifest_event(f"team/fan{n}", "1.0", digest) for n, digest in enumerate(digests)])
    response = client.post(f"/webhooks/registry/{instance.pk}/", data=body, content_type="application/json",
                           HTTP_AUTHORIZATION=instance.webhook_secret)
    assert response.status_code == 202
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and ConversionJob.objects.filter(status=JobStatus.SUCCEEDED).count() < 3:
        time.sleep(0.5)
    jobs = ConversionJob.objects.order_by("id")
    assert [(job.path, job.status, job.attempts) for job in jobs] == [
        (f"team/fan{n}", JobStatus.SUCCEEDED, 1) for n in range(3)]
