"""Domain verbs of the pipeline: pushes, conversion jobs and their twin tags.

The webhook view, the Jobs and Images pages, the API and the Celery tasks all go through these.
"""

import contextlib
import logging
import random
import shutil
import tempfile
import threading
import time
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from converter.errors import ConversionError
from converter.estargz import PROFILES, LayerOptions
from converter.image import AlreadyAccelerated, ImageRefused, LayerProgress, SuffixedTagRefused, convert_image
from converter.reference import ImageReference, InvalidReference, parse_reference
from converter.registry import (
    RegistryAuthError,
    RegistryError,
    RegistryNotFound,
    RegistryProtocolError,
    RegistryTLSError,
)
from core.actions import current_worker
from pipeline.choices import TERMINAL, JobStatus, JobTrigger, PushOutcome, PushReason
from pipeline.intake import PushRecord, is_image_manifest, is_signature_tag
from pipeline.layer_cache import DatabaseLayerCache
from pipeline.models import MAX_LOG_LINES, ConversionJob, PushEvent, options_key
from registries.models import Instance
from rules.choices import DEFAULT_CHUNK_SIZE, Compression
from rules.matching import match_image
from rules.models import Rule, options_of

logger = logging.getLogger("apparate.jobs")

# First key of the PostgreSQL advisory locks that mark a job as being run by a live worker.
ADVISORY_LOCK_CLASS = 0x41505052  # "APPR"
# Each attempt spools its layers in its own directory, so the spool of a dead attempt can be found.
JOB_WORKDIR_PREFIX = "apparate-job-"


# --- Push events ---------------------------------------------------------------------------------


def _decide(instance: Instance, push: PushRecord) -> tuple[str, str, str, object]:
    """(outcome, reason, human reason, matched rule) for a push; the instance row is locked."""
    skipped = PushOutcome.SKIPPED
    earlier = instance.push_events.filter(delivery_id=push.delivery_id).order_by("id").first()
    if earlier is not None:
        return skipped, PushReason.ALREADY_SEEN, (
            f"Delivery '{push.delivery_id}' was already received (event #{earlier.pk}). Registries resend "
            "notifications they believe were lost; the repeat changes nothing."
        ), None
    if not is_image_manifest(push.media_type):
        return skipped, PushReason.NOT_IMAGE_MANIFEST, (
            f"Media type '{push.media_type}' is not a container image manifest or index (e.g. an artifact, "
            "a config or a schema 1 manifest); only images are accelerated."
        ), None
    if push.tag and is_signature_tag(push.tag):
        return skipped, PushReason.NOT_IMAGE_MANIFEST, (
            f"Tag '{push.tag}' is a signature, attestation or SBOM (cosign naming), not a runnable image."
        ), None
    if not push.tag:
        return skipped, PushReason.NO_TAG, (
            "Pushed by digest without a tag. Accelerated images are named after tags (<tag>"
            f"{settings.APPARATE_ACCELERATED_SUFFIX}); the platform images of a multi-platform image arrive "
            "this way and are converted with the tagged push of their index."
        ), None
    suffix = settings.APPARATE_ACCELERATED_SUFFIX
    if push.tag.endswith(suffix):
        return skipped, PushReason.ACCELERATED_TAG, (
            f"Tag '{push.tag}' ends with '{suffix}': it is an accelerated image already, so it is not converted "
            "again."
        ), None
    address = f"{instance.host}/{push.path}:{push.tag}"
    try:
        reference = parse_reference(address)
    except InvalidReference as error:
        return skipped, PushReason.INVALID_REFERENCE, (
            f"'{address}' is not an image address rules can match: {error} Rules need host/namespace/repository."
        ), None
    if not instance.acceleration_enabled:
        return skipped, PushReason.ACCELERATION_OFF, (
            f"Acceleration is off for instance '{instance.name}'. Enable it on the instance page and push the "
            "image again to convert it."
        ), None
    outcome = match_image(instance, reference)
    if outcome.rule is None:
        if outcome.closest is None:
            detail = (
                f"No rule matched: instance '{instance.name}' has no acceleration rules. Add a rule for namespace "
                f"'{reference.namespace}' to convert pushes like this one."
            )
        else:
            failure = outcome.closest.first_failure
            detail = (
                f"No enabled rule matched. Closest rule: '{outcome.closest.rule.name}', which failed on "
                f"{failure.name}: {failure.detail}."
            )
        return skipped, PushReason.NO_RULE_MATCHED, detail, None
    converted = (
        instance.push_events.filter(
            outcome=PushOutcome.CONVERSION_REQUESTED, namespace=push.namespace, repository=push.repository,
            digest=push.digest,
        ).order_by("id").first()
    )
    if converted is not None:
        also = "" if converted.tag == push.tag else (
            f" Its accelerated image is also tagged '{push.tag}{suffix}'.")
        return skipped, PushReason.ALREADY_SEEN, (
            f"{push.path}@{push.digest} was already requested for conversion (event #{converted.pk}, tag "
            f"'{converted.tag}'); the same content is converted once.{also}"
        ), outcome.rule
    return PushOutcome.CONVERSION_REQUESTED, PushReason.RULE_MATCHED, (
        f"Rule '{outcome.rule.name}' matched; conversion requested. The accelerated image will be "
        f"{push.path}:{push.tag}{suffix}."
    ), outcome.rule


def record_push(instance: Instance, push: PushRecord) -> PushEvent:
    """Store one manifest push with its outcome and the reason, exactly once per delivery and digest.

    The instance row is locked while deciding, so concurrent duplicate deliveries are serialized:
    the first stores "conversion requested", the rest "already seen". A unique constraint backs this
    up; should it fire anyway, the push is stored as already seen.
    """
    fields = {
        "source": push.source, "delivery_id": push.delivery_id, "actor": push.actor, "namespace": push.namespace,
        "repository": push.repository, "tag": push.tag, "digest": push.digest, "media_type": push.media_type,
    }
    with transaction.atomic():
        locked = Instance.objects.select_for_update().get(pk=instance.pk)
        outcome, reason, detail, rule = _decide(locked, push)
        try:
            with transaction.atomic():
                event = PushEvent.objects.create(
                    instance=locked, outcome=outcome, reason=reason, reason_detail=detail, matched_rule=rule, **fields
                )
        except IntegrityError:
            return PushEvent.objects.create(
                instance=locked, outcome=PushOutcome.SKIPPED, reason=PushReason.ALREADY_SEEN, matched_rule=rule,
                reason_detail=f"{push.path}@{push.digest} was already requested for conversion by a concurrent "
                "delivery; the same content is converted once.", **fields,
            )
        if event.outcome == PushOutcome.CONVERSION_REQUESTED:
            request_conversion_for_event(event)  # the job (event.jobs) is enqueued after commit
        elif rule is not None:  # known content under another tag: that tag gets its own twin
            add_twin_tag_for_event(event)
        return event


# --- Conversion jobs ---------------------------------------------------------------------------


class RetryLater(Exception):
    """A transient failure: the task should run again after `countdown` seconds."""

    def __init__(self, countdown: float):
        super().__init__(f"retry in {countdown:.1f}s")
        self.countdown = countdown


class JobActionRefused(ValidationError):
    """An action that does not apply to the job in its current state (e.g. cancelling a running job)."""


def _as_reference(instance: Instance, reference: ImageReference | str) -> ImageReference:
    """A full address, or `namespace/repository:tag` taken as an image of the instance."""
    if not isinstance(reference, str):
        return reference
    text = reference.strip()
    if text.startswith(instance.host + "/"):
        return parse_reference(text)
    try:
        return parse_reference(f"{instance.host}/{text}")
    except InvalidReference:
        return parse_reference(text)


def enqueue_job(job: ConversionJob) -> None:
    """Send the job to a worker once the current transaction commits (the task is guarded, so a
    second message for the same job is harmless)."""
    from pipeline.tasks import convert_image_task

    job_id = job.pk
    transaction.on_commit(lambda: convert_image_task.delay(job_id))


def add_twin_tag(job: ConversionJob, tag: str) -> bool:
    """Give another tag of the job's source content its own accelerated twin `<tag><suffix>`.

    The content is converted once; each further tag pushed with the same digest (`1.0` and
    `latest`, say) gets the same accelerated manifest under its own twin name. A succeeded job is
    tagged right away (a small task); a job still to run tags every twin when it succeeds.
    Returns False when the tag was known already.
    """
    with transaction.atomic():
        locked = ConversionJob.objects.select_for_update().get(pk=job.pk)
        if tag == locked.source_tag or tag in locked.twin_tags:
            return False
        locked.twin_tags = [*locked.twin_tags, tag]
        _log(locked, f"Tag '{tag}' has the same content; {tag}{settings.APPARATE_ACCELERATED_SUFFIX} will point at "
                     "the accelerated image.")
        locked.save(update_fields=["twin_tags", "log", "updated_at"])
        if locked.status == JobStatus.SUCCEEDED:
            _enqueue_twin_tags(locked)
    job.twin_tags = locked.twin_tags
    return True


def _enqueue_twin_tags(job: ConversionJob) -> None:
    """Tag the accelerated image for the job's twin tags in a task that retries registry failures."""
    from pipeline.tasks import push_twin_tags_task

    job_id = job.pk
    transaction.on_commit(lambda: push_twin_tags_task.delay(job_id))


def push_twin_tags(job_id: int) -> list[str]:
    """Tag the accelerated image of a succeeded job once more for each twin tag (idempotent PUTs of
    the manifest that is already there); returns the twin tags written."""
    job = ConversionJob.objects.select_related("instance").filter(pk=job_id, status=JobStatus.SUCCEEDED).first()
    if job is None or not job.twin_tags or not job.result_digest:
        return []
    path = f"{job.namespace}/{job.repository}"
    written = [tag + settings.APPARATE_ACCELERATED_SUFFIX for tag in job.twin_tags]
    with job.instance.registry_client() as client:
        manifest = client.get_manifest(path, job.result_digest)
        for twin in written:
            client.put_manifest(path, twin, manifest.content, manifest.media_type)
    with transaction.atomic():
        locked = ConversionJob.objects.select_for_update().get(pk=job_id)
        _log(locked, f"Tagged the accelerated image as {', '.join(written)}.")
        locked.save(update_fields=["log", "updated_at"])
    logger.info("job=%s action=twin-tags tags=%s", job_id, ",".join(written))
    return written


def request_conversion(
    instance: Instance, reference: ImageReference | str, digest: str | None = None, *, rule: Rule | None = None,
    event=None, requested_by=None, trigger: str = JobTrigger.WEBHOOK,
) -> tuple[ConversionJob, bool]:
    """Get or create the conversion job of one source image and enqueue it after commit.

    `reference` is `host/namespace/repository:tag` (or `namespace/repository:tag` on the instance);
    `digest` is the source manifest digest (taken from the reference when it has one). The job is
    unique per (instance, repository, digest, format, options): a duplicate delivery, a re-push of
    the same digest or a second matching rule returns the existing job with `created=False` and
    enqueues nothing. `rule` (the first enabled matching rule) decides the options; without one
    the defaults apply.
    """
    reference = _as_reference(instance, reference)
    digest = digest or reference.digest
    if not digest:
        raise ValidationError("A conversion needs the source manifest digest.")
    if not reference.tag:
        raise ValidationError("A conversion needs a tag: the accelerated image is named <tag>"
                              f"{settings.APPARATE_ACCELERATED_SUFFIX}.")
    options = options_of(rule)
    with transaction.atomic():
        job, created = ConversionJob.objects.get_or_create(
            instance=instance, namespace=reference.namespace, repository=reference.repository,
            source_digest=digest, format=options["format"], options_key=options_key(options),
            defaults={"source_tag": reference.tag, "rule": rule, "event": event, "options": options,
                      "requested_by": requested_by, "trigger": trigger},
        )
        if created:
            _log(job, f"Requested ({JobTrigger(trigger).label.lower()}) for {job.source}@{digest}"
                 + (f" by rule '{rule.name}'." if rule else " with default options."))
            job.save(update_fields=["log"])
            enqueue_job(job)
            logger.info("job=%s action=requested trigger=%s instance=%s image=%s digest=%s", job.pk, trigger,
                        instance.pk, job.source, digest)
        else:
            add_twin_tag(job, reference.tag)
    return job, created


def add_twin_tag_for_event(event) -> ConversionJob | None:
    """A push of content already requested under another tag: give this tag its twin as well."""
    job = ConversionJob.objects.filter(
        instance=event.instance, namespace=event.namespace, repository=event.repository, source_digest=event.digest,
    ).order_by("id").first()
    if job is not None:
        add_twin_tag(job, event.tag)
    return job


def request_conversion_for_event(event) -> ConversionJob:
    """The job of a push event whose outcome is "conversion requested" (the webhook's one call)."""
    job, _ = request_conversion(
        event.instance, f"{event.instance.host}/{event.path}:{event.tag}", event.digest, rule=event.matched_rule,
        event=event, trigger=JobTrigger.WEBHOOK,
    )
    return job


def convert_now(instance: Instance, reference: ImageReference | str, requested_by=None) -> tuple[ConversionJob, bool]:
    """Convert any tag of the instance now, with or without a rule.

    The tag's current digest is read from the registry. The first enabled matching rule gives the
    options (so this meets the webhook's job for the same image); otherwise the defaults apply. A
    job that already exists is returned, and put back in the queue if it had failed or was cancelled.
    """
    reference = _as_reference(instance, reference)
    if reference.host != instance.host:
        raise ValidationError(f"'{reference}' is not on instance '{instance.name}' ({instance.host}).")
    suffix = settings.APPARATE_ACCELERATED_SUFFIX
    if reference.tag and reference.tag.endswith(suffix):
        raise ValidationError(f"The tag '{reference.tag}' ends with '{suffix}': it is already an accelerated image.")
    digest = reference.digest
    if not digest:
        with instance.registry_client() as client:
            try:
                found = client.head_manifest(reference.path, reference.tag or "latest")
            except RegistryError as error:
                raise ValidationError(f"Could not read {reference} from the registry: {error.message}") from None
        if found is None:
            raise ValidationError(f"{reference} does not exist in the registry.")
        digest = found.digest
    outcome = match_image(instance, reference) if instance.acceleration_enabled else None
    rule = outcome.rule if outcome else None
    job, created = request_conversion(instance, reference.with_tag(reference.tag or "latest"), digest, rule=rule,
                                      requested_by=requested_by, trigger=JobTrigger.MANUAL)
    if not created and job.status in (JobStatus.FAILED, JobStatus.CANCELLED):
        job = retry_job(job)
    return job, created


def retry_job(job: ConversionJob) -> ConversionJob:
    """Put a failed (or cancelled, or skipped) job back in the queue with a fresh attempt budget."""
    with transaction.atomic():
        locked = ConversionJob.objects.select_for_update().get(pk=job.pk)
        if locked.status not in (JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.SKIPPED):
            raise JobActionRefused(f"Job #{locked.pk} is {locked.get_status_display().lower()}; only failed, "
                                   "cancelled or skipped jobs can be retried.")
        locked.status = JobStatus.QUEUED
        locked.attempts = locked.retries = 0
        locked.reason = ""
        locked.finished_at = None
        _log(locked, "Retry requested; queued again.")
        locked.save()
        enqueue_job(locked)
    logger.info("job=%s action=retry", locked.pk)
    return locked


def cancel_job(job: ConversionJob) -> ConversionJob:
    """Cancel a queued job; a running or finished job cannot be cancelled."""
    with transaction.atomic():
        locked = ConversionJob.objects.select_for_update().get(pk=job.pk)
        if locked.status != JobStatus.QUEUED:
            raise JobActionRefused(f"Job #{locked.pk} is {locked.get_status_display().lower()}; only queued jobs "
                                   "can be cancelled.")
        locked.status = JobStatus.CANCELLED
        locked.finished_at = timezone.now()
        locked.reason = "Cancelled by an operator before it started."
        _log(locked, "Cancelled.")
        locked.save()
    logger.info("job=%s action=cancel", locked.pk)
    return locked


def _log(job: ConversionJob, message: str, level: str = "info") -> None:
    """Append one line to the job's bounded log (the caller saves)."""
    job.log = [*job.log, {"at": timezone.now().isoformat(timespec="seconds"), "level": level,
                          "message": message}][-MAX_LOG_LINES:]


def _layer_options(options: dict) -> LayerOptions:
    profile = PROFILES["fast" if options.get("compression") == Compression.FAST else "best"]
    return LayerOptions(
        chunk_size=int(options.get("chunk_size") or DEFAULT_CHUNK_SIZE),
        prioritized_files=tuple(options.get("prioritized_files") or ()), **profile,
    )


def _backoff(attempt: int) -> float:
    """Exponential backoff with jitter: base·2^(n-1), capped, times a random factor in [0.5, 1]."""
    delay = min(settings.APPARATE_JOB_BACKOFF_CAP, settings.APPARATE_JOB_BACKOFF_BASE * 2 ** max(0, attempt - 1))
    return delay * random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not cryptography


class _Progress:
    """Collects converter progress in memory and writes it to the job at most once per interval.

    Only the thread that runs the conversion writes (the converter may report from pool threads),
    and only while the job is still running, so a late write cannot undo a state change.
    """

    def __init__(self, job: ConversionJob):
        self.job_id = job.pk
        self.layers: dict[tuple[str, int], dict] = {}
        self.lock = threading.Lock()
        self.owner = threading.get_ident()
        self.last_flush = 0.0

    def __call__(self, event: LayerProgress) -> None:
        with self.lock:
            self.layers[(event.platform, event.layer_index)] = {
                "platform": event.platform, "index": event.layer_index, "count": event.layer_count,
                "source_digest": event.source_digest, "total": event.total, "bytes_in": event.bytes_in,
                "bytes_out": event.bytes_out, "phase": event.phase,
            }
        if threading.get_ident() == self.owner and (
                event.phase in ("done", "reused")
                or time.monotonic() - self.last_flush >= settings.APPARATE_JOB_PROGRESS_INTERVAL):
            self.flush()

    def snapshot(self) -> list[dict]:
        with self.lock:
            return [self.layers[key] for key in sorted(self.layers)]

    def flush(self) -> None:
        layers = self.snapshot()
        self.last_flush = time.monotonic()
        ConversionJob.objects.filter(pk=self.job_id, status=JobStatus.RUNNING).update(
            layers=layers, bytes_in=sum(layer["bytes_in"] for layer in layers),
            bytes_out=sum(layer["bytes_out"] for layer in layers),
            bytes_total=sum(layer["total"] for layer in layers), updated_at=timezone.now(),
        )


@contextlib.contextmanager
def _exclusive(job_id: int):
    """Yield True when this process may run the job now: a PostgreSQL session lock held by the
    running worker. A worker that dies loses its session and with it the lock, so a redelivered
    task can take over; a duplicate message for a job that a live worker runs yields False."""
    if connection.vendor != "postgresql":
        yield True
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", [ADVISORY_LOCK_CLASS, job_id])
        acquired = cursor.fetchone()[0]
    try:
        yield acquired
    finally:
        if acquired:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s, %s)", [ADVISORY_LOCK_CLASS, job_id])


def _start(job_id: int) -> ConversionJob | None:
    """Mark the job running (one more attempt), or return None when there is nothing to do."""
    with transaction.atomic():
        # Lock the job row only (`of`): the instance is read, not locked, so a start never waits for (or
        # deadlocks with) a delivery that holds the instance lock and then locks this job.
        job = ConversionJob.objects.select_for_update(of=("self",)).select_related("instance").filter(pk=job_id).first()
        if job is None or job.status in TERMINAL:
            return None
        if not job.instance.acceleration_enabled and job.trigger != JobTrigger.MANUAL:
            job.status = JobStatus.SKIPPED
            job.reason = (f"Acceleration was turned off for instance '{job.instance.name}' before the job ran. "
                          "Turn it on and retry the job to convert the image.")
            job.finished_at = timezone.now()
            _log(job, job.reason, "warning")
            job.save()
            return None
        if job.status == JobStatus.RUNNING:
            _log(job, "The previous run stopped without finishing (worker lost); starting again.", "warning")
        job.status = JobStatus.RUNNING
        job.attempts += 1
        job.worker = current_worker()
        job.started_at = job.started_at or timezone.now()
        job.layers, job.bytes_in, job.bytes_out, job.bytes_total = [], 0, 0, 0
        _log(job, f"Attempt {job.attempts} started.")
        job.save()
    logger.info("job=%s action=start attempt=%s image=%s digest=%s", job.pk, job.attempts, job.source,
                job.source_digest)
    return job


def spool_root() -> Path:
    """APPARATE_JOB_WORKDIR, or the system temp dir: where the job attempts' spool directories are."""
    return Path(settings.APPARATE_JOB_WORKDIR or tempfile.gettempdir())


def job_workdir(job_id: int, attempt: int) -> Path:
    """Where one attempt of a job spools layers: its own directory under spool_root(), removed when
    the attempt ends; a dead worker's is swept by the reconciler."""
    return spool_root() / f"{JOB_WORKDIR_PREFIX}{job_id}-{attempt}"


def run_conversion(job_id: int) -> ConversionJob | None:
    """Run one conversion job: the guarded, idempotent body of the Celery task.

    Does nothing for a missing or finished job, or one a live worker is running. Otherwise converts
    `<tag>@digest` into `<tag><suffix>` with the job's options, reusing the instance's layer cache,
    writing progress at most once per APPARATE_JOB_PROGRESS_INTERVAL, and finishes the job:
    succeeded; skipped (suffixed tag, already accelerated); failed with an actionable reason
    (permanent errors, or transient ones after APPARATE_JOB_MAX_ATTEMPTS attempts). A transient
    failure with attempts left puts the job back to queued and raises RetryLater.
    """
    with _exclusive(job_id) as mine:
        if not mine:
            logger.info("job=%s action=skip-duplicate reason=running-elsewhere", job_id)
            return None
        job = _start(job_id)
        if job is None:
            return None
        source = ImageReference(job.instance.host, job.namespace, job.repository, tag=job.source_tag,
                                digest=job.source_digest)
        progress = _Progress(job)
        started = time.monotonic()
        workdir = job_workdir(job.pk, job.attempts)
        try:
            with job.instance.registry_client() as client, DatabaseLayerCache(job.instance) as cache:
                result = convert_image(
                    client, source, destination=source.with_tag(job.source_tag + settings.APPARATE_ACCELERATED_SUFFIX),
                    options=_layer_options(job.options), cache=cache, progress=progress,
                    suffix=settings.APPARATE_ACCELERATED_SUFFIX, workdir=workdir,
                )
        except (SuffixedTagRefused, AlreadyAccelerated) as error:
            return _finish(job_id, progress, JobStatus.SKIPPED, str(error), str(error))
        except RegistryError as error:
            return _registry_failure(job_id, progress, error)
        except ConversionError as error:
            return _finish(job_id, progress, JobStatus.FAILED, str(error), _conversion_reason(error))
        except Exception as error:
            logger.exception("job=%s action=crash", job_id)
            return _finish(job_id, progress, JobStatus.FAILED, f"{type(error).__name__}: {error}",
                           "The conversion stopped on an unexpected error (see the worker log); retry the job.")
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        job = _succeed(job_id, progress, result, time.monotonic() - started)
    if job.twin_tags:
        _enqueue_twin_tags(job)
    return job


def _succeed(job_id: int, progress: _Progress, result, seconds: float) -> ConversionJob:
    layers = progress.snapshot()
    with transaction.atomic():
        job = ConversionJob.objects.select_for_update().get(pk=job_id)
        job.status = JobStatus.SUCCEEDED
        job.finished_at = timezone.now()
        job.layers = layers
        job.bytes_in = sum(layer["bytes_in"] for layer in layers)
        job.bytes_out = sum(layer["bytes_out"] for layer in layers)
        job.bytes_total = sum(layer["total"] for layer in layers)
        job.result_tag = result.destination.rsplit(":", 1)[-1]
        job.result_digest = result.digest
        job.result_size = result.size + sum(
            layer.size for platform in result.platforms for layer in platform.layers)
        job.reason = ""
        _log(job, f"Pushed {result.destination} ({result.digest}): {result.layers_converted} layer(s) converted, "
                  f"{result.layers_reused} reused, in {seconds:.1f}s.")
        job.save()
    logger.info("job=%s action=succeeded digest=%s seconds=%.1f converted=%s reused=%s", job_id, result.digest,
                seconds, result.layers_converted, result.layers_reused)
    return job


def _finish(job_id: int, progress: _Progress, status: str, error: str, reason: str) -> ConversionJob:
    with transaction.atomic():
        job = ConversionJob.objects.select_for_update().get(pk=job_id)
        job.status = status
        job.finished_at = timezone.now()
        job.layers = progress.snapshot()
        job.last_error = error
        job.reason = reason
        _log(job, reason, "error" if status == JobStatus.FAILED else "warning")
        job.save()
    logger.warning("job=%s action=%s error=%s", job_id, status, error)
    return job

_REGISTRY_HINTS = [
    (RegistryAuthError, "The registry refused the instance's credentials or denied access. Check the username "
                        "and password/token on the instance (they need pull and push rights), then retry."),
    (RegistryNotFound, "The source image (or one of its blobs) is not in the registry any more; it may have been "
                       "deleted or re-tagged. Push it again to convert it."),
    (RegistryTLSError, "TLS verification of the registry failed. Add its CA to the instance's custom CA bundle, "
                       "then retry."),
    (RegistryProtocolError, "The registry answered in a way the converter does not accept (see the error)."),
]


def _registry_failure(job_id: int, progress: _Progress, error: RegistryError) -> ConversionJob:
    job = ConversionJob.objects.get(pk=job_id)
    if error.transient and job.attempts < settings.APPARATE_JOB_MAX_ATTEMPTS:
        countdown = _backoff(job.attempts)
        with transaction.atomic():
            locked = ConversionJob.objects.select_for_update().get(pk=job_id)
            locked.status = JobStatus.QUEUED
            locked.retries += 1
            locked.last_error = error.message
            locked.layers = progress.snapshot()
            _log(locked, f"Attempt {locked.attempts} failed: {error.message} Retrying in {countdown:.0f}s.", "warning")
            locked.save()
        logger.warning("job=%s action=retry-later attempt=%s countdown=%.1f error=%s", job_id, job.attempts,
                       countdown, error.message)
        raise RetryLater(countdown)
    if error.transient:
        reason = (f"The registry kept failing after {job.attempts} attempts ({error.message}). Check that it is "
                  "up and healthy, then retry the job.")
    else:
        hint = next((text for kind, text in _REGISTRY_HINTS if isinstance(error, kind)), "The registry refused a "
                    "request; see the error. Retrying will not help until that is fixed.")
        reason = f"{error.message} {hint}"
    return _finish(job_id, progress, JobStatus.FAILED, error.message, reason)


def _conversion_reason(error: ConversionError) -> str:
    if isinstance(error, ImageRefused):
        return f"{error} This image cannot be converted as it is."
    return (f"{error} The image's layers could not be converted; rebuild the image with standard tar layers "
            "(and check its prioritized files), then push it again.")
