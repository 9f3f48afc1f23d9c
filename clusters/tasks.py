"""Celery entry points of the clusters app: thin, idempotent, taking ids."""

from celery import shared_task
from django.conf import settings

from clusters.actions import deploy, labelling, sync
from clusters.actions import suite as suite_actions
from clusters.choices import SuiteStatus
from clusters.models import Suite


@shared_task(acks_late=True, reject_on_worker_lost=True)
def sync_cluster_nodes(cluster_id: int, test_first: bool = False) -> str:
    return sync.run_sync(cluster_id, test_first)


@shared_task(acks_late=True, reject_on_worker_lost=True)
def sync_all_clusters() -> dict:
    """Periodic (CELERY_BEAT_SCHEDULE["clusters-sync-nodes"], every APPARATE_NODE_SYNC_INTERVAL s)."""
    return sync.sync_all_clusters()


@shared_task(acks_late=True, reject_on_worker_lost=True)
def run_label_job(job_id: int) -> None:
    labelling.run_label_job(job_id)


@shared_task(acks_late=True, reject_on_worker_lost=True)
def run_suite_operation(suite_id: int) -> None:
    suite_actions.run_suite_operation(suite_id)


@shared_task(acks_late=True, reject_on_worker_lost=True)
def run_deploy_task(deploy_id: int) -> None:
    deploy.run_deploy(deploy_id)


@shared_task(acks_late=True, reject_on_worker_lost=True)
def watch_deploy_rollout(deploy_id: int) -> None:
    """Read an applied deploy's rollout every second while it is watched (see deploy.watch_rollout)."""
    found = deploy.refresh_rollout(deploy_id)
    if found is not None and found.rollout_watched and not settings.CELERY_TASK_ALWAYS_EAGER:
        watch_deploy_rollout.apply_async((deploy_id,), countdown=1)


def _watch(task, suite_id: int, watch_id: str, status: str, refresh) -> None:
    """One refresh of a suite in `status`, then again a second later, while it stays so; a chain whose
    watch_id is no longer the suite's (another chain took over) stops."""
    suite = Suite.objects.select_related("cluster").filter(pk=suite_id).first()
    if suite is None or suite.status != status or suite.watch_id != watch_id:
        return
    suite = refresh(suite)
    if suite.status == status and not settings.CELERY_TASK_ALWAYS_EAGER:
        task.apply_async((suite_id, watch_id), countdown=1)


@shared_task(acks_late=True, reject_on_worker_lost=True)
def watch_rollout(suite_id: int, watch_id: str = "") -> None:
    """Refresh the rollout every second until it is ready, failed or superseded."""
    _watch(watch_rollout, suite_id, watch_id, SuiteStatus.ROLLING_OUT, suite_actions.refresh_rollout)


@shared_task(acks_late=True, reject_on_worker_lost=True)
def watch_cleanup(suite_id: int, watch_id: str = "") -> None:
    """Refresh an uninstall's wait for the nodes every second, until the suite is deleted, failed or superseded."""
    _watch(watch_cleanup, suite_id, watch_id, SuiteStatus.CLEANING_NODES, suite_actions.refresh_cleanup)


@shared_task(acks_late=True, reject_on_worker_lost=True)
def recover_stale_suites() -> list[int]:
    """Periodic (CELERY_BEAT_SCHEDULE["clusters-recover-suites"]): take up suite operations whose worker died."""
    return suite_actions.recover_stale_suites()
