"""Operations: slow work a request asks for, done by a worker, watched through a row.

An Images refresh walks a whole registry, a backfill (preview or request) walks the catalog of a
rule's namespace, and *Convert now* resolves a tag's digest in the registry: none of that runs in
a web request. `request_*` validates what it can without the registry, stores an `Operation`,
audits the request (with its actor and door) and enqueues `run_operation` after commit; the page
or API client polls the row. `run_operation` is the guarded, idempotent body of the task.
"""

import logging
from dataclasses import asdict
from datetime import timedelta

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from converter.reference import parse_reference
from converter.registry import RegistryError
from core.audit import record
from core.queue import UNAVAILABLE_REASON, send_on_commit
from pipeline import actions, catalogue, reconciler, startup
from pipeline.choices import OPERATION_ACTIVE, OperationKind, OperationStatus
from pipeline.models import Operation
from pipeline.naming import twin_tag
from registries.models import Instance
from rules.models import Rule

logger = logging.getLogger("apparate.jobs")

# An active operation that has not been touched for this long lost its worker (a refresh writes
# progress every few repositories): the next request starts a new one.
STALE_AFTER = timedelta(minutes=10)
KEEP_REFRESHES = 20  # finished Images refreshes kept per instance


def _enqueue(operation: Operation) -> None:
    """Send the operation to a worker once the current transaction commits. When the broker does not
    answer, the operation ends as failed with that reason, so that it does not stand in the way of
    the next request as one under way, and the error stands (the request answers 503: core.errors)."""
    from pipeline.tasks import run_operation_task

    operation_id = operation.pk
    send_on_commit(lambda: run_operation_task.delay(operation_id),
                   lambda: Operation.objects.filter(pk=operation_id, status=OperationStatus.QUEUED).update(
                       status=OperationStatus.FAILED, finished_at=timezone.now(), error=UNAVAILABLE_REASON))


def request_refresh(instance: Instance, requested_by=None) -> Operation:
    """Start an Images refresh of the instance, or return the one under way (one at a time)."""
    active = Operation.objects.filter(instance=instance, kind=OperationKind.REFRESH_IMAGES,
                                      status__in=OPERATION_ACTIVE).first()
    if active is not None:
        if timezone.now() - active.updated_at < STALE_AFTER:
            return active
        Operation.objects.filter(pk=active.pk, status__in=OPERATION_ACTIVE).update(
            status=OperationStatus.FAILED, finished_at=timezone.now(),
            error="The worker doing this refresh stopped making progress; a new refresh was started.")
    try:
        with transaction.atomic():
            operation = Operation.objects.create(kind=OperationKind.REFRESH_IMAGES, instance=instance,
                                                 requested_by=requested_by)
            _enqueue(operation)
    except IntegrityError:  # a concurrent request started one first
        return Operation.objects.get(instance=instance, kind=OperationKind.REFRESH_IMAGES,
                                     status__in=OPERATION_ACTIVE)
    return operation


def images_page(instance: Instance, namespace: str, repository: str, page, user) -> catalogue.Catalogue:
    """One page of the Images view from rows; starts a refresh when they are older than
    APPARATE_IMAGES_REFRESH_AGE and none is under way (the page shows it and reloads when done)."""
    found = catalogue.list_images(instance, namespace, repository, page)
    if found.refresh.active is None and found.refresh.stale:
        found.refresh.active = request_refresh(instance, user)
    return found


def request_backfill(rule: Rule, requested_by=None, *, preview: bool) -> Operation:
    """"Convert existing images" of a rule: a preview (counts only) or the request (audited)."""
    if not rule.is_active:
        raise ValidationError(f"Rule '{rule.name}' is not active (disabled, or acceleration is off for its "
                              "instance); enable it first.")
    kind = OperationKind.BACKFILL_PREVIEW if preview else OperationKind.BACKFILL
    with transaction.atomic():
        operation = Operation.objects.create(kind=kind, instance=rule.instance, rule=rule, requested_by=requested_by)
        if not preview:
            record("create", operation, {"operation": {"old": None, "new": kind}, "rule": {"old": None,
                                                                                          "new": rule.name}})
        _enqueue(operation)
    return operation


def request_convert_now(instance: Instance, image: str, requested_by=None) -> Operation:
    """*Convert now* of one tag (audited). The address is checked here; the digest is read from the
    registry by the worker. Raises ValidationError or InvalidReference for a bad address."""
    reference = actions.check_convert_now(instance, image)
    with transaction.atomic():
        operation = Operation.objects.create(kind=OperationKind.CONVERT_NOW, instance=instance,
                                             requested_by=requested_by, params={"image": str(reference)})
        record("create", operation, {"operation": {"old": None, "new": OperationKind.CONVERT_NOW},
                                     "image": {"old": None, "new": str(reference)}})
        _enqueue(operation)
    return operation


CONVERT_NOW_TEXTS = {
    actions.Outcome.CREATED: "Conversion of {image} requested: job #{job}.",
    actions.Outcome.QUEUED_AGAIN: "Job #{job} had not succeeded; it runs again with the rule's current options.",
    actions.Outcome.RECREATING: "The accelerated image of {image} is not in the registry; job #{job} re-creates it.",
    actions.Outcome.TAGGING: "{image} has the content job #{job} converted; {twin} is being tagged.",
    actions.Outcome.IN_PROGRESS: "Job #{job} is already converting {image}.",
    actions.Outcome.ALREADY: "{image} is already accelerated: {twin} (job #{job}).",
}


def _convert_now(operation: Operation) -> dict:
    reference = parse_reference(operation.params["image"])
    job, outcome = actions.convert_now(operation.instance, reference, requested_by=operation.requested_by)
    operation.job = job
    detail = CONVERT_NOW_TEXTS[outcome].format(image=f"{reference.path}:{reference.tag}", job=job.pk,
                                               twin=twin_tag(reference.tag or "latest"))
    return {"outcome": outcome, "detail": detail, "job": job.pk}


def _refresh(operation: Operation) -> dict:
    def progress(done: int, total: int) -> None:
        Operation.objects.filter(pk=operation.pk).update(
            result={"repositories_done": done, "repositories_total": total}, updated_at=timezone.now())

    report = catalogue.refresh_images(operation.instance, progress=progress)
    if startup.pending(operation.instance).exists():  # twins found, or made before the figure was recorded
        startup.enqueue_measure(operation.instance_id)
    # Page views start refreshes all day long: keep only the latest few of each instance.
    finished = Operation.objects.filter(instance=operation.instance, kind=OperationKind.REFRESH_IMAGES).exclude(
        status__in=OPERATION_ACTIVE).order_by("-created_at", "-id").values_list("pk", flat=True)
    Operation.objects.filter(pk__in=list(finished[KEEP_REFRESHES:])).delete()
    return asdict(report)


HANDLERS = {
    OperationKind.REFRESH_IMAGES: _refresh,
    OperationKind.BACKFILL_PREVIEW: lambda operation: reconciler.preview_backfill(operation.rule).as_dict(),
    OperationKind.BACKFILL: lambda operation: reconciler.backfill_rule(operation.rule,
                                                                       operation.requested_by).as_dict(),
    OperationKind.CONVERT_NOW: _convert_now,
}


def run_operation(operation_id: int) -> Operation | None:
    """Do one operation's work; nothing for a missing or finished operation (a redelivered or
    duplicate message). Failures a person can act on (registry errors, a tag that does not exist,
    an inactive rule) end the operation as failed with that reason."""
    with transaction.atomic():
        operation = Operation.objects.select_for_update().filter(pk=operation_id).first()
        if operation is None or operation.is_done:
            return None
        operation.status, operation.started_at = OperationStatus.RUNNING, timezone.now()
        operation.save(update_fields=["status", "started_at", "updated_at"])
    operation = Operation.objects.select_related("instance", "rule", "requested_by").get(pk=operation_id)
    try:
        result, status, error = HANDLERS[operation.kind](operation), OperationStatus.SUCCEEDED, ""
    except ValidationError as failure:
        result, status, error = {}, OperationStatus.FAILED, " ".join(failure.messages)
    except RegistryError as failure:
        result, status, error = {}, OperationStatus.FAILED, f"The registry could not be read: {failure.message}"
    except Exception as failure:
        logger.exception("operation=%s kind=%s action=crash", operation_id, operation.kind)
        result, status, error = {}, OperationStatus.FAILED, (
            f"Stopped on an unexpected error ({type(failure).__name__}); see the worker log.")
    Operation.objects.filter(pk=operation_id).update(status=status, result=result, error=error, job=operation.job,
                                                     finished_at=timezone.now(), updated_at=timezone.now())
    logger.info("operation=%s kind=%s status=%s error=%s", operation_id, operation.kind, status, error)
    operation.refresh_from_db()
    return operation
