"""Jobs of dead worker runs (issue 11 #17): judged by the heartbeat, re-queued at once, spool swept."""

from datetime import timedelta

import pytest
from django.utils import timezone

from core import actions as core_actions
from core.actions import live_workers, record_heartbeat, start_worker_session
from core.models import WorkerHeartbeat
from pipeline.actions import database_tag, job_workdir
from pipeline.choices import JobStatus
from pipeline.models import ConversionJob
from pipeline.reconciler import requeue_orphaned_jobs, sweep_job_workdirs
from registries.models import Instance

pytestmark = pytest.mark.django_db
DIGEST = "sha256:" + "a" * 64


@pytest.fixture(autouse=True)
def no_worker_identity_left_behind():
    """start_worker_session() sets this process's identity; other tests run outside any worker."""
    saved = dict(core_actions._this_worker)
    yield
    core_actions._this_worker.update(saved)


@pytest.fixture
def job(settings, tmp_path):
    settings.APPARATE_JOB_WORKDIR = str(tmp_path)
    instance = Instance.objects.create(name="r", url="http://registry.example", acceleration_enabled=True)
    return ConversionJob.objects.create(instance=instance, namespace="team", repository="app", source_tag="1.0",
                                        source_digest=DIGEST, status=JobStatus.RUNNING, attempts=1)


def run_by(job, identity: str) -> ConversionJob:
    ConversionJob.objects.filter(pk=job.pk).update(worker=identity)
    return job


def test_a_worker_run_is_alive_for_three_heartbeat_intervals(settings):
    settings.APPARATE_HEARTBEAT_INTERVAL = 15
    identity = start_worker_session("celery@box")
    now = record_heartbeat("celery@box").seen_at
    assert live_workers(now) == {identity}
    assert live_workers(now + timedelta(seconds=45) - timedelta(milliseconds=1)) == {identity}
    assert live_workers(now + timedelta(seconds=45, milliseconds=1)) == set()


def test_running_job_of_a_silent_worker_is_requeued_once(job, settings, django_capture_on_commit_callbacks):
    identity = start_worker_session("celery@box")
    record_heartbeat("celery@box")
    run_by(job, identity)
    with django_capture_on_commit_callbacks() as sent:
        assert requeue_orphaned_jobs() == 0  # alive: left alone
    assert sent == []

    silent = timedelta(seconds=3 * settings.APPARATE_HEARTBEAT_INTERVAL + 1)
    WorkerHeartbeat.objects.update(seen_at=timezone.now() - silent)
    with django_capture_on_commit_callbacks() as sent:
        assert requeue_orphaned_jobs() == 1
        assert requeue_orphaned_jobs() == 0  # sent once: `worker` is cleared
    assert len(sent) == 1
    job.refresh_from_db()
    assert (job.status, job.worker) == (JobStatus.RUNNING, "")


def test_a_restarted_worker_orphans_the_old_runs_jobs_at_once(job):
    old = start_worker_session("celery@box")
    record_heartbeat("celery@box")
    run_by(job, old)
    start_worker_session("celery@box")  # the same host, a new run
    record_heartbeat("celery@box")
    assert requeue_orphaned_jobs() == 1


def test_spool_of_dead_attempts_is_swept_and_live_ones_kept(job, tmp_path):
    identity = start_worker_session("celery@box")
    record_heartbeat("celery@box")
    run_by(job, identity)
    current, earlier = job_workdir(job.pk, 1), job_workdir(job.pk, 0)
    assert current.parent == tmp_path and current.name == f"apparate-job-{database_tag()}-{job.pk}-1"
    unknown, unrelated = job_workdir(999999, 1), tmp_path / "something-else"
    # The same job id in another console's database (another test run sharing the temp dir): not ours.
    other_database = tmp_path / f"apparate-job-{'0' * 12}-{job.pk}-0"
    for path in (current, earlier, unknown, unrelated, other_database):
        (path / "apparate-layer-x").mkdir(parents=True)
        (path / "apparate-layer-x" / "spool").write_bytes(b"x" * 1000)
    assert sweep_job_workdirs() == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([current.name, unrelated.name, other_database.name])

    start_worker_session("celery@box")  # restarted: the attempt is dead now
    record_heartbeat("celery@box")
    assert sweep_job_workdirs() == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([unrelated.name, other_database.name])
