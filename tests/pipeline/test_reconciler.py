"""The reconciler and "Convert existing images": tags an enabled rule matches that have neither an
accelerated twin nor a job are requested once; everything else is left alone."""

from datetime import timedelta

import pytest
import requests
from django.core.exceptions import ValidationError
from django.utils import timezone

from pipeline import actions, reconciler
from pipeline.choices import JobStatus, JobTrigger
from pipeline.models import ConversionJob
from pipeline.tasks import reconcile_all_task


def test_reconciler_finds_image_pushed_while_webhook_was_down(instance, make_rule, reg, push,
                                                               django_capture_on_commit_callbacks):
    make_rule("apps", repository_pattern="app.*", tag_pattern=r"\d+\.\d+")
    digest = push("team/app:1.0")  # no webhook configured: the push went unnoticed
    push("team/app:latest")  # the tag pattern does not match
    push("other/app:1.0")  # no rule for this namespace
    push("team/app:0.9-apparate")  # an accelerated tag is never a source
    with django_capture_on_commit_callbacks() as callbacks:
        report = reconciler.reconcile_instance(instance)
    assert report.requested == 1 and report.errors == [] and len(callbacks) == 1
    job = ConversionJob.objects.get()
    assert (job.path, job.source_tag, job.source_digest, job.trigger) == ("team/app", "1.0", digest,
                                                                          JobTrigger.RECONCILER)
    # a second pass requests nothing: the tag has a job
    assert reconciler.reconcile_instance(instance).requested == 0
    actions.run_conversion(job.pk)
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED
    ConversionJob.objects.all().delete()
    again = reconciler.reconcile_instance(instance)  # the twin exists now, even without the job row
    assert again.requested == 0 and again.with_twin == 1


def test_reconciler_ignores_instances_with_acceleration_off(instance, make_rule, push):
    make_rule()
    push("team/app:1.0")
    instance.acceleration_enabled = False
    instance.save()
    assert reconciler.reconcile_instance(instance).requested == 0
    assert reconcile_all_task.apply().get() == 0
    assert not ConversionJob.objects.exists()


def test_reconciler_reports_unreachable_registry(db, make_rule, instance):
    make_rule()
    instance.url = "http://127.0.0.1:9"
    instance.save()
    report = reconciler.reconcile_instance(instance)
    assert report.requested == 0 and report.errors


def test_backfill_preview_and_convert_existing_images(instance, make_rule, push,
                                                      django_capture_on_commit_callbacks):
    push("team/web:1")
    push("team/web:2")
    push("team/api:1")
    rule = make_rule("web", repository_pattern="web")
    preview = reconciler.preview_backfill(rule)
    assert preview.requested == 2 and preview.tags == 3
    assert not ConversionJob.objects.exists()  # a preview writes nothing
    with django_capture_on_commit_callbacks() as callbacks:
        report = reconciler.backfill_rule(rule)
    assert report.requested == 2 and len(callbacks) == 2
    assert set(ConversionJob.objects.values_list("source_tag", flat=True)) == {"1", "2"}
    assert reconciler.preview_backfill(rule).requested == 0
    rule.enabled = False
    rule.save()
    with pytest.raises(ValidationError, match="not active"):
        reconciler.preview_backfill(rule)


def test_reconciler_requeues_jobs_stuck_in_the_queue_or_abandoned_while_running(
    instance, reg, settings, django_capture_on_commit_callbacks
):
    stuck, _ = actions.request_conversion(instance, f"{reg.host}/team/app:1", "sha256:" + "5" * 64)
    abandoned, _ = actions.request_conversion(instance, f"{reg.host}/team/app:3", "sha256:" + "7" * 64)
    actions.request_conversion(instance, f"{reg.host}/team/app:2", "sha256:" + "6" * 64)  # queued just now
    long_ago = timezone.now() - timedelta(seconds=settings.APPARATE_RECONCILE_INTERVAL + 60)
    ConversionJob.objects.filter(pk=stuck.pk).update(updated_at=long_ago)
    ConversionJob.objects.filter(pk=abandoned.pk).update(status=JobStatus.RUNNING, updated_at=long_ago)
    with django_capture_on_commit_callbacks() as callbacks:
        assert reconciler._requeue_stale(instance) == 2
    assert len(callbacks) == 2


def test_reconciler_gives_a_second_tag_of_converted_content_its_twin(instance, make_rule, reg, push,
                                                                      django_capture_on_commit_callbacks):
    make_rule()
    digest = push("team/app:1.0", seed=77)
    job, _ = actions.request_conversion(instance, f"{reg.host}/team/app:1.0", digest)
    actions.run_conversion(job.pk)
    push("team/app:latest", seed=77)  # same content, pushed while the webhook was down
    with django_capture_on_commit_callbacks() as callbacks:
        report = reconciler.reconcile_instance(instance)
    assert report.requested == 0 and ConversionJob.objects.count() == 1 and len(callbacks) == 1
    job.refresh_from_db()
    assert job.twin_tags == ["latest"]
    actions.push_twin_tags(job.pk)  # what the enqueued task runs
    assert requests.head(f"{reg.url}/v2/team/app/manifests/latest-apparate", timeout=10,
                         headers={"Accept": "application/vnd.oci.image.manifest.v1+json"}).status_code == 200
    # the next pass finds both twins and requests nothing
    again = reconciler.reconcile_instance(instance)
    assert again.with_twin == 2 and again.requested == 0
