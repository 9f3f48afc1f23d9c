"""Celery entry points of the clusters app: thin, idempotent, taking ids."""

from celery import shared_task
from django.conf import settings

from clusters.actions import labelling, sync
from clusters.actions import suite as suite_actions
from clusters.choices import SuiteStatus
from clusters.models import Cluster, Suite


@shared_task(acks_late=True, reject_on_worker_lost=True)
def sync_cluster_nodes(cluster_id: int) -> str:
    cluster = Cluster.objects.filter(pk=cluster_id).first()
    return sync.sync_nodes(cluster).message if cluster else "cluster deleted"


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
def watch_rollout(suite_id: int, watch_id: str = "") -> None:
    """Refresh the rollout every second until it is ready, failed or superseded (another chain took over)."""
    suite = Suite.objects.select_related("cluster").filter(pk=suite_id).first()
    if suite is None or suite.status != SuiteStatus.ROLLING_OUT or suite.watch_id != watch_id:
        return
    suite = suite_actions.refresh_rollout(suite)
    if suite.status == SuiteStatus.ROLLING_OUT and not settings.CELERY_TASK_ALWAYS_EAGER:
        watch_rollout.apply_async((suite_id, watch_id), countdown=1)


@shared_task(acks_late=True, reject_on_worker_lost=True)
def watch_cleanup(suite_id: int, watch_id: str = "") -> None:
    """Refresh an uninstall's wait for the nodes every second, until the suite is deleted, failed or superseded."""
    suite = Suite.objects.select_related("cluster").filter(pk=suite_id).first()
    if suite is None or suite.status != SuiteStatus.CLEANING_NODES or suite.watch_id != watch_id:
        return
    suite = suite_actions.refresh_cleanup(suite)
    if suite.status == SuiteStatus.CLEANING_NODES and not settings.CELERY_TASK_ALWAYS_EAGER:
        watch_cleanup.apply_async((suite_id, watch_id), countdown=1)


@shared_task(acks_late=True, reject_on_worker_lost=True)
def recover_stale_suites() -> list[int]:
    """Periodic (CELERY_BEAT_SCHEDULE["clusters-recover-suites"]): take up suite operations whose worker died."""
    return suite_actions.recover_stale_suites()
