"""Transient and permanent registry failures, injected by a proxy in front of a real registry:
transient ones retry with backoff and then succeed or give up at the limit; permanent ones fail
once, with a reason, and cause no retry storm (requests are counted at the proxy)."""

import pytest

from pipeline import actions
from pipeline.choices import JobStatus
from pipeline.tasks import convert_image_task
from registries.models import Instance
from rules.models import Rule


@pytest.fixture
def fast_retries(settings):
    settings.APPARATE_REGISTRY_RETRIES = 1
    settings.APPARATE_JOB_BACKOFF_BASE = 0.01
    settings.APPARATE_JOB_BACKOFF_CAP = 0.05
    settings.APPARATE_JOB_MAX_ATTEMPTS = 3
    return settings


@pytest.fixture
def proxied(db, reg, faulty_proxy):
    proxy = faulty_proxy(reg.url)
    instance = Instance.objects.create(name="proxied", url=proxy.url, acceleration_enabled=True)
    rule = Rule.objects.create(instance=instance, name="team", namespace="team")
    return proxy, instance, rule


def test_backoff_grows_with_jitter_and_is_capped(settings):
    settings.APPARATE_JOB_BACKOFF_BASE, settings.APPARATE_JOB_BACKOFF_CAP = 10, 60
    assert 5 <= actions._backoff(1) <= 10
    assert 20 <= actions._backoff(3) <= 40
    assert 30 <= actions._backoff(10) <= 60


def test_transient_500s_retry_then_succeed(fast_retries, proxied, push):
    proxy, instance, rule = proxied
    digest = push("team/app:1.0")
    job, _ = actions.request_conversion(instance, f"{proxy.host}/team/app:1.0", digest, rule=rule)
    proxy.fail(r"/manifests/", status=500, times=4, method="GET")  # two attempts' worth (1 request + 1 retry each)
    convert_image_task.apply(args=[job.pk])  # eager: Celery's retry runs the task again at once
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED, job.reason
    assert job.attempts == 3 and job.retries == 2
    assert "500" in job.last_error  # kept for the record
    assert sum("Retrying in" in line["message"] for line in job.log) == 2
    assert [s.status for s in proxy.requests(r"/manifests/1\.0-apparate$", "PUT")] == [201]


def test_transient_failures_give_up_at_the_limit(fast_retries, proxied, push):
    proxy, instance, rule = proxied
    digest = push("team/app:2.0")
    job, _ = actions.request_conversion(instance, f"{proxy.host}/team/app:2.0", digest, rule=rule)
    proxy.fail(r"/manifests/", status=503, times=1000, method="GET")
    convert_image_task.apply(args=[job.pk])
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED and job.attempts == 3
    assert "kept failing after 3 attempts" in job.reason
    # 3 attempts × (1 request + 1 client retry): bounded, no storm
    assert len(proxy.requests(r"/manifests/", "GET")) == 6


def test_permanent_404_fails_once_without_retries(fast_retries, proxied):
    proxy, instance, rule = proxied
    job, _ = actions.request_conversion(instance, f"{proxy.host}/team/gone:1.0", "sha256:" + "ef" * 32, rule=rule)
    convert_image_task.apply(args=[job.pk])
    convert_image_task.apply(args=[job.pk])  # a redelivery changes nothing
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED and job.attempts == 1 and job.retries == 0
    assert "not in the registry any more" in job.reason
    assert len(proxy.requests(r"/manifests/")) == 1


def test_auth_failure_is_permanent_with_credentials_hint(fast_retries, proxied, push):
    proxy, instance, rule = proxied
    digest = push("team/app:3.0")
    job, _ = actions.request_conversion(instance, f"{proxy.host}/team/app:3.0", digest, rule=rule)
    proxy.fail(r"/manifests/", status=403, times=1000)
    convert_image_task.apply(args=[job.pk])
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED and job.attempts == 1
    assert "credentials" in job.reason
    assert len(proxy.requests(r"/manifests/")) == 1
