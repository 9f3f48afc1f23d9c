"""Accelerated images as records, against a real docker-registry (and a real worker where the flow
needs one): a twin is recorded only once its tag is in the registry; a twin deleted through the
console no longer haunts Convert now, Retry, backfill, deploy suggestions or the dashboard, and each
re-creates it (a re-tag when the accelerated manifest is still there); the reconciler notices twins
gone from the registry, leaves deleted ones alone and says so; a further tag of content whose job
failed is told the truth and gets its twin after the retry; retry reads the rule's options now."""

import logging
import shutil
import time

import pytest
import requests
from django.test import Client

from clusters.actions.deploy import accelerated_images, accelerated_twin
from console.dashboard import gather
from converter.reference import parse_reference
from core.models import AuditEntry
from core.roles import Role
from pipeline import actions, operations, reconciler, twins
from pipeline.choices import JobStatus, PushReason, TwinState
from pipeline.models import AcceleratedImage, ConversionJob, Operation, PushEvent
from registries.models import Instance
from rules.models import Rule
from tests.registries.conftest import envelope, manifest_event

OCI = "application/vnd.oci.image.manifest.v1+json"


def exists(registry, path: str, reference: str) -> bool:
    response = requests.head(f"{registry.url}/v2/{path}/manifests/{reference}", headers={"Accept": OCI}, timeout=10)
    return response.status_code == 200


def wait_for(predicate, timeout: float = 120, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def finished_job(pk: int) -> ConversionJob:
    return wait_for(lambda: ConversionJob.objects.filter(pk=pk, status__in=[JobStatus.SUCCEEDED,
                                                                            JobStatus.FAILED]).first(),
                    what=f"job #{pk} to finish")


def finished_operation(pk: int) -> Operation:
    return wait_for(lambda: Operation.objects.filter(pk=pk, status__in=["succeeded", "failed"]).first(),
                    what=f"operation #{pk} to finish")


def test_a_deleted_twin_haunts_nothing_and_convert_now_retry_and_backfill_recreate_it(
        transactional_db, reg, push, celery_worker, api_as, client_as, caplog):
    instance = Instance.objects.create(name="local", url=reg.url, acceleration_enabled=True)
    rule = Rule.objects.create(instance=instance, name="web", namespace="team", repository_pattern="web")
    push("team/web:v3")
    api = api_as(Role.OPERATOR)
    started = api.post("/api/v1/jobs/convert-now/", {"instance": instance.pk, "image": "team/web:v3"})
    job = finished_job(finished_operation(started.json()["id"]).job_id)
    assert job.status == JobStatus.SUCCEEDED, (job.reason, celery_worker.log()[-2000:])
    twin = AcceleratedImage.objects.get(twin_tag="v3-apparate")
    assert twin.state == TwinState.PRESENT and exists(reg, "team/web", "v3-apparate")
    assert gather().jobs["accelerated"] == 1 and gather().jobs["storage_added"] == twin.twin_size > 0

    deleted = api.post("/api/v1/images/delete/", {"instance": instance.pk, "repository": "team/web",
                                                   "digest": job.result_digest}, format="json")
    assert deleted.status_code == 200 and not exists(reg, "team/web", "v3-apparate")
    # the dashboard counts what is in the registry
    figures = gather()
    assert (figures.jobs["accelerated"], figures.jobs["storage_added"]) == (0, 0)
    # deploy no longer offers the twin, and says why
    assert accelerated_images(instance) == []
    lookup = accelerated_twin(instance, parse_reference(f"{instance.host}/team/web:v3"))
    assert lookup.accelerated == "" and "team/web:v3-apparate was deleted. Deleted through the API by " \
        "api-operator" in lookup.reason
    # the job offers Retry
    page = client_as(Role.OPERATOR).get(f"/rules/jobs/{job.pk}/").content.decode()
    assert "Retry: re-create the accelerated image" in page and "Deleted through the API by api-operator" in page
    # the reconciler leaves it alone and says so
    with caplog.at_level(logging.INFO, logger="apparate.jobs"):
        report = reconciler.reconcile_instance(instance)
    assert report.requested == 0 and report.left_alone == [
        f"team/web:v3-apparate (deleted through the console): {AcceleratedImage.objects.get().state_reason}"]
    assert f"reconcile instance={instance.pk} left-alone=team/web:v3-apparate (deleted through the console)" in (
        caplog.text)
    # backfill counts it as one to re-create
    preview = api.get(f"/api/v1/rules/{rule.pk}/backfill/")
    result = finished_operation(preview.json()["id"]).result
    assert (result["requested"], result["recreate"], result["with_job"], result["with_twin"]) == (1, 1, 0, 0)

    # Convert now re-creates it: the manifest is gone, so the job converts again
    again = api.post("/api/v1/jobs/convert-now/", {"instance": instance.pk, "image": "team/web:v3"})
    operation = finished_operation(again.json()["id"])
    assert operation.result["outcome"] == "recreating" and operation.job_id == job.pk
    assert operation.result["detail"] == (f"The accelerated image of team/web:v3 is not in the registry; job "
                                          f"#{job.pk} re-creates it.")
    wait_for(lambda: AcceleratedImage.objects.filter(state=TwinState.PRESENT).exists(), what="the twin")
    assert exists(reg, "team/web", "v3-apparate") and finished_job(job.pk).status == JobStatus.SUCCEEDED
    assert any("converting again" in line["message"] for line in ConversionJob.objects.get(pk=job.pk).log)
    assert accelerated_images(instance)[0].twin_tag == "v3-apparate" and gather().jobs["accelerated"] == 1

    # deleted once more: Retry re-creates it too
    api.post("/api/v1/images/delete/", {"instance": instance.pk, "repository": "team/web",
                                        "digest": job.result_digest}, format="json")
    retried = api.post(f"/api/v1/jobs/{job.pk}/retry/")
    assert retried.status_code == 200 and retried.json()["status"] == "queued"
    wait_for(lambda: AcceleratedImage.objects.filter(state=TwinState.PRESENT).exists(), what="the twin again")
    assert exists(reg, "team/web", "v3-apparate")
    retry = AuditEntry.objects.get(model="conversionjob", action="update")
    assert (retry.actor_name, retry.source, retry.changes["action"]["new"]) == ("api-operator", "api", "retry")
    assert retry.changes["status"] == {"old": "succeeded", "new": "queued"}

    # and a backfill, asked for by a person, re-creates it as well
    api.post("/api/v1/images/delete/", {"instance": instance.pk, "repository": "team/web",
                                        "digest": job.result_digest}, format="json")
    request = api.post(f"/api/v1/rules/{rule.pk}/backfill/")
    assert finished_operation(request.json()["id"]).result["recreate"] == 1
    wait_for(lambda: AcceleratedImage.objects.filter(state=TwinState.PRESENT).exists(), what="the backfilled twin")
    assert exists(reg, "team/web", "v3-apparate") and ConversionJob.objects.count() == 1


def test_a_twin_deleted_in_the_registry_is_noticed_and_retagged_when_its_manifest_remains(instance, make_rule, reg,
                                                                                          push, caplog):
    make_rule()
    digest = push("team/app:1.0")
    job, _ = actions.request_conversion(instance, f"{reg.host}/team/app:1.0", digest)
    actions.run_conversion(job.pk)
    job.refresh_from_db()
    # the twin tag is removed in the registry (as a registry UI deleting a tag does); the manifest stays
    shutil.rmtree(reg.root / "data/docker/registry/v2/repositories/team/app/_manifests/tags/1.0-apparate")
    assert exists(reg, "team/app", job.result_digest) and not exists(reg, "team/app", "1.0-apparate")
    with caplog.at_level(logging.INFO, logger="apparate.jobs"):
        report = reconciler.reconcile_instance(instance)
    twin = AcceleratedImage.objects.get()
    assert report.missing == 1 and twin.state == TwinState.MISSING and report.requested == 0
    assert twin.state_reason.startswith("Not in the registry at the reconciler pass of ")
    assert report.left_alone == [f"team/app:1.0-apparate (missing from the registry): {twin.state_reason}"]
    assert "missing=1 left-alone=1" in caplog.text
    assert actions.retry_offered(job)

    operation = operations.request_convert_now(instance, "team/app:1.0")
    operations.run_operation(operation.pk)
    operation.refresh_from_db()
    assert operation.result["outcome"] == "recreating"
    actions.run_conversion(job.pk)
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED and job.layers == []  # nothing converted
    assert job.log[-1]["message"] == (f"The accelerated manifest {job.result_digest} was still in the registry: "
                                      "tagged it again as 1.0-apparate, nothing converted.")
    assert exists(reg, "team/app", "1.0-apparate")
    twin.refresh_from_db()
    assert twin.state == TwinState.PRESENT and twin.state_reason == f"Pushed by job #{job.pk}."
    assert not actions.retry_offered(job)
    with pytest.raises(actions.JobActionRefused, match="its accelerated images are in the registry"):
        actions.retry_job(job)


def _webhook(client: Client, instance: Instance, event: dict) -> None:
    response = client.post(f"/webhooks/registry/{instance.pk}/", data=envelope(event),
                           content_type="application/vnd.docker.distribution.events.v1+json",
                           HTTP_AUTHORIZATION=instance.webhook_secret)
    assert response.status_code == 202


def test_a_second_tag_of_content_whose_job_failed_is_told_the_truth_and_made_after_the_retry(
        db, reg, push, faulty_proxy, client, client_as, django_capture_on_commit_callbacks):
    proxy = faulty_proxy(reg.url)
    instance = Instance.objects.create(name="proxied", url=proxy.url, acceleration_enabled=True)
    Rule.objects.create(instance=instance, name="team", namespace="team")
    digest = push("team/app:v2", seed=7)
    push("team/app:v20", seed=7)  # the same content under a second tag
    proxy.fail(r"/manifests/", status=404, times=1, method="GET")  # the first conversion fails for good
    _webhook(client, instance, manifest_event("team/app", "v2", digest, event_id="d-v2"))
    job = ConversionJob.objects.get()
    actions.run_conversion(job.pk)
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED
    _webhook(client, instance, manifest_event("team/app", "v20", digest, event_id="d-v20"))
    seen = PushEvent.objects.get(tag="v20")
    assert (seen.reason, seen.job) == (PushReason.ALREADY_SEEN, job)
    assert "also tagged" not in seen.reason_detail  # no promise of a tag that does not exist
    assert seen.reason_detail.endswith(
        f"Job #{job.pk} failed: {job.reason} 'v20-apparate' will be made when the content is converted: retry job "
        f"#{job.pk} (it re-reads the rule's options) or use Convert now.")
    assert not AcceleratedImage.objects.exists() and not exists(reg, "team/app", "v20-apparate")
    # the Events page and the API show the job's current state beside the event
    events = client_as(Role.VIEWER).get("/instances/events/").content.decode()
    assert f'→ <a href="/rules/jobs/{job.pk}/">job #{job.pk}</a> <span class="badge badge-red">Failed</span>' in events

    with django_capture_on_commit_callbacks(execute=False):
        actions.retry_job(job)
    actions.run_conversion(job.pk)  # what the worker runs, then the twin-tags task
    actions.push_twin_tags(job.pk)
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED
    assert exists(reg, "team/app", "v2-apparate") and exists(reg, "team/app", "v20-apparate")
    assert sorted(AcceleratedImage.objects.filter(state=TwinState.PRESENT).values_list("twin_tag", flat=True)) == [
        "v2-apparate", "v20-apparate"]
    # the job page links both events
    page = client_as(Role.OPERATOR).get(f"/rules/jobs/{job.pk}/").content.decode()
    assert page.count('href="/instances/events/?q=') == 2 and "team/app:v20" in page


def test_events_api_shows_the_job_state_of_each_event(instance, make_rule, client, api_as):
    make_rule()
    _webhook(client, instance, manifest_event("team/app", "1.0", event_id="d-1"))
    job = ConversionJob.objects.get()
    ConversionJob.objects.filter(pk=job.pk).update(status=JobStatus.FAILED, reason="The registry refused it.")
    _webhook(client, instance, manifest_event("team/other", "1.0", event_id="d-2"))
    api = api_as(Role.VIEWER)
    rows = {row["repository"]: row for row in api.get("/api/v1/events/").json()["results"]}
    assert (rows["app"]["job"], rows["app"]["job_status"], rows["app"]["job_reason"]) == (
        job.pk, "failed", "The registry refused it.")
    other = ConversionJob.objects.exclude(pk=job.pk).get()
    assert (rows["other"]["job"], rows["other"]["job_status"], rows["other"]["job_reason"]) == (other.pk, "queued",
                                                                                                "")
    assert api.get(f"/api/v1/jobs/{job.pk}/").json()["events"] == [rows["app"]["id"]]


def test_retry_after_a_rule_change_runs_with_the_current_options(instance, make_rule, reg, push):
    rule = make_rule()
    Rule.objects.filter(pk=rule.pk).update(chunk_size=100)  # saved before today's limits: the converter refuses it
    digest = push("team/app:1.0")
    job, _ = actions.request_conversion(instance, f"{reg.host}/team/app:1.0", digest, rule=Rule.objects.get())
    actions.run_conversion(job.pk)
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED
    assert job.reason == ("chunk size 100 must be between 512 bytes and 1 GiB. This comes from the job's 'chunk size' "
                          "option: change it in rule 'team', then Retry the job (a retry re-reads the rule's current "
                          "options).")
    rule.chunk_size = 1 << 20
    rule.save()
    actions.retry_job(job)
    job.refresh_from_db()
    assert (job.previous_options["chunk_size"], job.options["chunk_size"]) == (100, 1 << 20)
    assert job.option_changes == ["chunk size 100 → 1 MiB"]
    assert job.log[-1]["message"] == ("Retry requested: re-run with the rule's current options (rule 'team'): "
                                      "chunk size 100 → 1 MiB.")
    actions.run_conversion(job.pk)
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED and exists(reg, "team/app", "1.0-apparate")
    assert ConversionJob.objects.count() == 1  # the same job, re-run


def test_retry_hands_over_to_the_job_that_has_the_current_options(instance, make_rule, reg, push):
    rule = make_rule()
    digest = push("team/app:1.0")
    old, _ = actions.request_conversion(instance, f"{reg.host}/team/app:1.0", digest, rule=rule)
    ConversionJob.objects.filter(pk=old.pk).update(status=JobStatus.FAILED)
    rule.compression = "fast"
    rule.save()
    current, _ = actions.request_conversion(instance, f"{reg.host}/team/app:latest", digest, rule=rule)
    ConversionJob.objects.filter(pk=current.pk).update(status=JobStatus.CANCELLED)
    rerun = actions.retry_job(old)
    assert rerun.pk == current.pk and rerun.status == JobStatus.QUEUED
    assert sorted([rerun.source_tag, *rerun.twin_tags]) == ["1.0", "latest"]
    old.refresh_from_db()
    assert old.status == JobStatus.FAILED and f"those of job #{current.pk}" in old.log[-1]["message"]


def test_cancel_and_retry_are_audited_with_actor_and_door(instance, make_rule, reg, client_as, api_as):
    job, _ = actions.request_conversion(instance, f"{reg.host}/team/app:1.0", "sha256:" + "ab" * 32,
                                        rule=make_rule())
    client_as(Role.OPERATOR).post(f"/rules/jobs/{job.pk}/cancel/")
    api_as(Role.OPERATOR).post(f"/api/v1/jobs/{job.pk}/retry/")
    entries = [(e.actor_name, e.source, e.changes["action"]["new"], e.changes["status"]["old"],
                e.changes["status"]["new"]) for e in AuditEntry.objects.filter(model="conversionjob").order_by("id")]
    assert entries == [("web-operator", "ui", "cancel", "queued", "cancelled"),
                       ("api-operator", "api", "retry", "cancelled", "queued")]


def test_dashboard_skips_leave_out_twin_pushes_and_resolved_ones(instance, make_rule, client, client_as):
    _webhook(client, instance, manifest_event("team/app", "1.0", event_id="d-1"))  # no rule yet: skipped
    _webhook(client, instance, manifest_event("team/app", "1.0-apparate", event_id="d-2"))  # our own twin push
    _webhook(client, instance, manifest_event("team/web", "2.0", event_id="d-3"))  # skipped, never resolved
    make_rule()
    job, _ = actions.request_conversion(instance, "team/app:1.0", PushEvent.objects.get(tag="1.0").digest)
    ConversionJob.objects.filter(pk=job.pk).update(status=JobStatus.SUCCEEDED, result_digest="sha256:" + "c" * 64)
    job.refresh_from_db()
    figures = gather()
    assert [event.tag for event in figures.events["recent_skipped"]] == ["2.0", "1.0"]
    assert figures.events["twin_pushes"] == 1
    twins.record_present(job, "1.0", job.result_digest)  # a later conversion resolved the 1.0 skip
    figures = gather()
    assert [event.image for event in figures.events["recent_skipped"]] == ["team/web:2.0"]
    page = client_as(Role.VIEWER).get("/").content.decode()
    assert "not listed: 1 push of accelerated tags in the last 24 h" in page and "team/app:1.0-apparate" not in page


def test_a_further_tag_that_moved_to_other_content_keeps_its_own_twin(instance, make_rule, reg, push):
    rule = make_rule()
    digest = push("team/app:1.0", seed=11)
    push("team/app:latest", seed=11)
    job, _ = actions.request_conversion(instance, f"{reg.host}/team/app:1.0", digest, rule=rule)
    actions.request_conversion(instance, f"{reg.host}/team/app:latest", digest, rule=rule)
    push("team/app:latest", seed=12)  # latest moves on to other content before the job runs
    actions.run_conversion(job.pk)
    assert actions.push_twin_tags(job.pk) == []
    assert exists(reg, "team/app", "1.0-apparate") and not exists(reg, "team/app", "latest-apparate")
    assert list(AcceleratedImage.objects.values_list("twin_tag", flat=True)) == ["1.0-apparate"]
    job.refresh_from_db()
    assert actions.retry_offered(job)  # unknown to the console yet: latest may still want its twin
    operations.run_operation(operations.request_refresh(instance).pk)  # the refresh sees latest moved on
    assert not actions.retry_offered(job) and twins.not_present_tags(job) == []


def test_known_content_events_say_what_is_true_now(instance, make_rule, reg, push, client, api_as):
    make_rule()
    digest = push("team/app:1.0")
    _webhook(client, instance, manifest_event("team/app", "1.0", digest, event_id="d-1"))
    job = ConversionJob.objects.get()
    actions.run_conversion(job.pk)
    _webhook(client, instance, manifest_event("team/app", "1.0", digest, event_id="d-2"))  # pushed again
    assert PushEvent.objects.get(delivery_id="d-2").reason_detail.endswith(
        f"'1.0-apparate' is in the registry already (job #{job.pk}).")
    api_as(Role.OPERATOR).post("/api/v1/images/delete/", {"instance": instance.pk, "repository": "team/app",
                                                           "digest": job.refresh_from_db() or job.result_digest},
                               format="json")
    _webhook(client, instance, manifest_event("team/app", "1.0", digest, event_id="d-3"))
    detail = PushEvent.objects.get(delivery_id="d-3").reason_detail
    assert "Its accelerated image team/app:1.0-apparate was deleted. Deleted through the API by api-operator" in detail
    assert detail.endswith(f"Retry job #{job.pk} or use Convert now to re-create it.")
