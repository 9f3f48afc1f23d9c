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


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True)
def watch_rollout(self, suite_id: int) -> None:
    """Refresh the rollout status every second until it is ready, failed or superseded."""
    suite = Suite.objects.select_related("cluster").filter(pk=suite_id).first()
    if suite is None or suite.status != SuiteStatus.ROLLING_OUT:
        return
    suite = suite_actions.refresh_rollout(suite)
    if suite.status == SuiteStatus.ROLLING_OUT and not settings.CELERY_TASK_ALWAYS_EAGER:
        watch_rollout.apply_async((suite_id,), countdown=1)
