"""The /metrics endpoint: protected (viewer login or bearer token), figures from the database."""

from datetime import timedelta

from django.utils import timezone

from core.roles import Role
from pipeline import actions
from pipeline.choices import JobStatus
from pipeline.models import ConversionJob


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
