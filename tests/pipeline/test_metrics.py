"""The /metrics endpoint: protected (viewer login or bearer token), figures from the database."""

from datetime import timedelta

from django.utils import timezone

from core.roles import Role
from pipeline import actions, twins
from pipeline.choices import JobStatus, TwinState
from pipeline.models import AcceleratedImage, ConversionJob


def test_metrics_need_viewer_or_token(client, client_as, settings, db):
    assert client.get("/metrics").status_code == 401
    settings.APPARATE_METRICS_TOKEN = "s3cret-token"
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret-token").status_code == 200
    assert client_as(Role.VIEWER).get("/metrics").status_code == 200


def test_metrics_report_jobs_bytes_retries_and_events(instance, reg, client_as):
    done, _ = actions.request_conversion(instance, f"{reg.host}/team/app:1", "sha256:" + "1" * 64)
    failed, _ = actions.request_conversion(instance, f"{reg.host}/team/app:2", "sha256:" + "2" * 64)
    now = timezone.now()
    ConversionJob.objects.filter(pk=done.pk).update(status=JobStatus.SUCCEEDED, started_at=now - timedelta(seconds=7),
                                                    finished_at=now, bytes_in=1000, bytes_out=1100, retries=2)
    ConversionJob.objects.filter(pk=failed.pk).update(status=JobStatus.FAILED, retries=1)
    text = client_as(Role.VIEWER).get("/metrics").content.decode()
    assert 'apparate_jobs{state="succeeded"} 1.0' in text and 'apparate_jobs{state="failed"} 1.0' in text
    assert 'apparate_jobs{state="running"} 0.0' in text
    assert 'apparate_conversion_duration_seconds_bucket{le="5.0"} 0.0' in text
    assert 'apparate_conversion_duration_seconds_bucket{le="10.0"} 1.0' in text
    assert 'apparate_conversion_bytes_total{direction="out"} 1100.0' in text
    assert "apparate_job_retries_total 3.0" in text


def test_metrics_count_accelerated_images_by_state_and_their_storage_once(instance, reg, client_as):
    job, _ = actions.request_conversion(instance, f"{reg.host}/team/app:1", "sha256:" + "1" * 64)
    ConversionJob.objects.filter(pk=job.pk).update(status=JobStatus.SUCCEEDED)
    twin = "sha256:" + "9" * 64
    twins.record_present(job, "1", twin, twin_size=1000)
    twins.record_present(job, "latest", twin, twin_size=1000)  # the same manifest under a second twin tag
    twins.record_present(job, "old", "sha256:" + "8" * 64, twin_size=500)
    AcceleratedImage.objects.filter(twin_tag="old-apparate").update(state=TwinState.DELETED)
    text = client_as(Role.VIEWER).get("/metrics").content.decode()
    assert 'apparate_accelerated_images{state="present"} 2.0' in text
    assert 'apparate_accelerated_images{state="deleted"} 1.0' in text
    assert 'apparate_accelerated_images{state="missing"} 0.0' in text
    assert "apparate_accelerated_bytes 1000.0" in text
