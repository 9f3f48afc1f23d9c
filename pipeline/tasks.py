"""Celery entry points of the pipeline: thin, idempotent wrappers around its actions.

The task names of conversions, twin tags and the reconciler are the ones they had in the rules
app, so messages already queued still land.

Tasks take ids, never objects. `convert_image_task` is safe to run twice or to redeliver after a
worker died (acks late, rejected on worker loss): the action locks the job and does nothing when
the work is done or a live worker is on it.
"""

from celery import shared_task

from converter.registry import RegistryError
from pipeline import actions, operations, reconciler, startup
from registries.models import Instance


@shared_task(name="rules.tasks.convert_image_task", bind=True, acks_late=True, reject_on_worker_lost=True,
             max_retries=None, ignore_result=True)
def convert_image_task(self, job_id: int) -> None:
    """Run one conversion job; transient registry failures come back after a backoff."""
    try:
        actions.run_conversion(job_id)
    except actions.RetryLater as later:
        raise self.retry(countdown=later.countdown) from None


@shared_task(name="pipeline.tasks.enqueue_jobs_task", acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def enqueue_jobs_task(job_ids: list[int]) -> int:
    """Fan out the jobs one webhook delivery created: one conversion message per job (sent twice,
    a message is harmless: the conversion task is guarded)."""
    for job_id in job_ids:
        convert_image_task.delay(job_id)
    return len(job_ids)


@shared_task(name="rules.tasks.push_twin_tags_task", acks_late=True, reject_on_worker_lost=True, ignore_result=True,
             autoretry_for=(RegistryError,), retry_backoff=True, retry_jitter=True, max_retries=5)
def push_twin_tags_task(job_id: int) -> list[str]:
    """Tag a succeeded job's accelerated image for the further tags of the same content."""
    return actions.push_twin_tags(job_id)


@shared_task(name="rules.tasks.reconcile_instance_task", acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def reconcile_instance_task(instance_id: int) -> dict | None:
    """One reconciler pass over one instance (skipped when it is gone or acceleration is off)."""
    instance = Instance.objects.filter(pk=instance_id, acceleration_enabled=True).first()
    return reconciler.reconcile_instance(instance).as_dict() if instance else None


@shared_task(name="rules.tasks.reconcile_all_task", acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def reconcile_all_task() -> int:
    """Beat entry point: one reconcile task per instance with acceleration on."""
    ids = list(Instance.objects.filter(acceleration_enabled=True).values_list("pk", flat=True))
    for instance_id in ids:
        reconcile_instance_task.delay(instance_id)
    return len(ids)


@shared_task(name="pipeline.tasks.requeue_orphaned_jobs_task", ignore_result=True)
def requeue_orphaned_jobs_task() -> int:
    """Beat entry point (every APPARATE_ORPHAN_CHECK_INTERVAL): re-queue jobs of dead worker runs."""
    return reconciler.requeue_orphaned_jobs()


@shared_task(name="pipeline.tasks.run_operation_task", acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def run_operation_task(operation_id: int) -> None:
    """Do the slow work a request asked for: an Images refresh, a backfill, Convert now."""
    operations.run_operation(operation_id)


@shared_task(name="pipeline.tasks.measure_startup_task", acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def measure_startup_task(instance_id: int) -> dict | None:
    """Read the startup bytes of a batch of the instance's older twins from the registry (ranges only)."""
    report = startup.run_measure(instance_id)
    return report.as_dict() if report else None


@shared_task(name="pipeline.tasks.measure_startup_all_task", ignore_result=True)
def measure_startup_all_task() -> int:
    """Beat entry point (every APPARATE_STARTUP_MEASURE_INTERVAL): a batch for each instance with twins waiting."""
    return startup.measure_all()
