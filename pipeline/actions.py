"""Domain verbs of the pipeline: pushes, conversion jobs, their twins and the actions people take.

The webhook view, the Jobs page, the API, the operations and the Celery tasks all go through these.
A twin is recorded (pipeline.twins) only once its tag really is in the registry. Retry, cancel and
the re-creation of deleted twins are audited with their actor and door (core.audit).
"""

import contextlib
import functools
import hashlib
import logging
import random
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, OperationalError, connection, transaction
from django.utils import timezone

from converter.errors import (
    ConversionError,
    CorruptLayerError,
    HostileArchiveError,
    InvalidOptionsError,
    LayerTooLargeError,
)
from converter.estargz import PROFILES, LayerOptions
from converter.image import AlreadyAccelerated, ImageRefused, LayerProgress, SuffixedTagRefused, convert_image
from converter.reference import ImageReference, InvalidReference, parse_on_host, parse_reference
from converter.registry import (
    RegistryAuthError,
    RegistryError,
    RegistryNotFound,
    RegistryProtocolError,
    RegistryTLSError,
)
from core.actions import current_worker
from core.audit import record
from core.queue import BrokerUnavailable
from pipeline import dispatch, startup, twins
from pipeline.catalogue import read_image
from pipeline.choices import ACTIVE, TERMINAL, JobStatus, JobTrigger, PushOutcome, PushReason, PushSource
from pipeline.intake import PushRecord, is_image_manifest, is_signature_tag
from pipeline.layer_cache import DatabaseLayerCache
from pipeline.models import MAX_LOG_LINES, ConversionJob, PushEvent, options_key
from pipeline.naming import is_twin_tag, suffix, twin_tag
from registries.models import Instance
from rules.choices import DEFAULT_CHUNK_SIZE, Compression
from rules.matching import match_image, match_verdict, rules_in_order
from rules.models import Rule, options_of

logger = logging.getLogger("apparate.jobs")

# First key of the PostgreSQL advisory locks that mark a job as being run by a live worker.
ADVISORY_LOCK_CLASS = 0x41505052  # "APPR"
# Each attempt spools its layers in its own directory, so the spool of a dead attempt can be found.
JOB_WORKDIR_PREFIX = "apparate-job-"


# --- Push events ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Decision:
    outcome: str
    reason: str
    detail: str
    rule: Rule | None = None
    known: PushEvent | None = None  # content already requested under another push: that push
    reference: ImageReference | None = None  # the image, once the push is a valid address


def _decide(instance: Instance, push: PushRecord, delivery: "_Delivery") -> _Decision:
    """What to do with a push, and why; the instance row is locked."""
    skipped = PushOutcome.SKIPPED
    if push.source == PushSource.TEST:
        return _Decision(skipped, PushReason.TEST_EVENT, (
            f"A test delivery sent from the console ({push.actor or 'Send test event'}): the webhook URL and secret "
            "work. Test events are never converted."))
    earlier = delivery.first_event_of(push.delivery_id)
    if earlier is not None:
        return _Decision(skipped, PushReason.ALREADY_SEEN, (
            f"Delivery '{push.delivery_id}' was already received (event #{earlier.pk}). Registries resend "
            "notifications they believe were lost; the repeat changes nothing."))
    if not is_image_manifest(push.media_type):
        return _Decision(skipped, PushReason.NOT_IMAGE_MANIFEST, (
            f"Media type '{push.media_type}' is not a container image manifest or index (e.g. an artifact, "
            "a config or a schema 1 manifest); only images are accelerated."))
    if push.tag and is_signature_tag(push.tag):
        return _Decision(skipped, PushReason.NOT_IMAGE_MANIFEST, (
            f"Tag '{push.tag}' is a signature, attestation or SBOM (cosign naming), not a runnable image."))
    if not push.tag:
        return _Decision(skipped, PushReason.NO_TAG, (
            f"Pushed by digest without a tag. Accelerated images are named after tags ({twin_tag('<tag>')}); "
            "the platform images of a multi-platform image arrive this way and are converted with the tagged "
            "push of their index."))
    if is_twin_tag(push.tag):
        return _Decision(skipped, PushReason.ACCELERATED_TAG, (
            f"Tag '{push.tag}' ends with '{suffix()}': it is an accelerated image already, so it is not converted "
            "again."))
    address = f"{instance.host}/{push.path}:{push.tag}"
    try:
        reference = parse_reference(address)
    except InvalidReference as error:
        return _Decision(skipped, PushReason.INVALID_REFERENCE, (
            f"'{address}' is not an image address rules can match: {error} Rules need host/namespace/repository."))
    if not instance.acceleration_enabled:
        return _Decision(skipped, PushReason.ACCELERATION_OFF, (
            f"Acceleration is off for instance '{instance.name}'. Enable it on the instance page and push the "
            "image again to convert it."))
    outcome = match_verdict(instance, reference, delivery.rules())
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
        return _Decision(skipped, PushReason.NO_RULE_MATCHED, detail)
    converted = delivery.requested_event_of(push)
    if converted is not None:
        return _Decision(skipped, PushReason.ALREADY_SEEN, "", outcome.rule, known=converted)
    return _Decision(PushOutcome.CONVERSION_REQUESTED, PushReason.RULE_MATCHED, (
        f"Rule '{outcome.rule.name}' matched; conversion requested. Its accelerated image is "
        f"{push.path}:{twin_tag(push.tag)} once the job succeeds."), outcome.rule, reference=reference)


def _job_for_content(instance: Instance, namespace: str, repository: str, digest: str,
                     rule: Rule | None) -> ConversionJob | None:
    """The job of some content: the one with the rule's current options, else the newest."""
    jobs = ConversionJob.objects.filter(instance=instance, namespace=namespace, repository=repository,
                                        source_digest=digest)
    return (jobs.filter(options_key=options_key(options_of(rule))).first()
            or jobs.order_by("-created_at", "-id").first())


def _known_content_detail(push: PushRecord, known: PushEvent, job: ConversionJob | None) -> str:
    """What happens to a new tag of content already requested: said as it is, never promised."""
    seen = (f"{push.path}@{push.digest} was already requested for conversion (event #{known.pk}, tag "
            f"'{known.tag}'); the same content is converted once.")
    twin = f"'{twin_tag(push.tag)}'"
    if job is None:
        return f"{seen} Its job no longer exists; use Convert now to make {twin}."
    row = twins.row_of_tag(job.instance, job.namespace, job.repository, push.tag)
    if row is not None and row.is_present and row.job_id == job.pk:
        return f"{seen} {twin} is in the registry already (job #{job.pk})."
    if job.status == JobStatus.SUCCEEDED and row is not None and not row.is_present:
        return f"{seen} {twins.describe_gone(row)} Retry job #{job.pk} or use Convert now to re-create it."
    if job.status == JobStatus.SUCCEEDED:
        return f"{seen} {twin} is being tagged on the accelerated image of job #{job.pk}, without converting again."
    if job.status in ACTIVE:
        return f"{seen} {twin} will be tagged when job #{job.pk} ({job.get_status_display().lower()}) succeeds."
    why = f": {job.reason}" if job.reason else ""
    return (f"{seen} Job #{job.pk} {job.get_status_display().lower()}{why} {twin} will be made when the content is "
            f"converted: retry job #{job.pk} (it re-reads the rule's options) or use Convert now.")


def _placeholders(values: list) -> str:
    return ", ".join(["%s"] * len(values))


def _content(push) -> tuple[str, str, str]:
    """What one conversion request is unique by within an instance (a push record or an event)."""
    return push.namespace, push.repository, push.digest


class _Delivery:
    """The pushes of one delivery being recorded: what deciding reads, each read once, and the
    events decided but not stored yet (stored together by flush()).

    Reads: the instance's earlier events with the delivery's ids or a conversion request for its
    digests (one query), its rules (one query, when a push gets that far). A push that refers to an
    event of this delivery still unstored (a repeated delivery id, content requested by an earlier
    push) stores the pending ones first, so that its reason can name that event's number.
    """

    def __init__(self, instance: Instance, pushes: list[PushRecord]):
        self.instance = instance
        self._first_events: dict[str, PushEvent] = {}
        self._requested: dict[tuple[str, str, str], PushEvent] = {}
        self._rules: list[Rule] | None = None
        self._pending: list[tuple[PushEvent, ImageReference | None]] = []
        self._pending_ids: set[str] = set()
        self._pending_requested: set[tuple[str, str, str]] = set()
        ids, digests = sorted({push.delivery_id for push in pushes}), sorted({push.digest for push in pushes})
        earlier = PushEvent.objects.raw(
            f"SELECT id, delivery_id, namespace, repository, digest, tag, outcome FROM {PushEvent._meta.db_table} "  # noqa: S608
            f"WHERE instance_id = %s AND (delivery_id IN ({_placeholders(ids)}) OR (outcome = %s AND digest IN "
            f"({_placeholders(digests)}))) ORDER BY id",
            [instance.pk, *ids, PushOutcome.CONVERSION_REQUESTED, *digests])
        for event in earlier:
            self._remember(event)

    def _remember(self, event: PushEvent) -> None:
        self._first_events.setdefault(event.delivery_id, event)
        if event.outcome == PushOutcome.CONVERSION_REQUESTED:
            self._requested.setdefault(_content(event), event)

    def first_event_of(self, delivery_id: str) -> PushEvent | None:
        return self._first_events.get(delivery_id)

    def requested_event_of(self, push: PushRecord) -> PushEvent | None:
        return self._requested.get(_content(push))

    def rules(self) -> list[Rule]:
        if self._rules is None:
            self._rules = rules_in_order(self.instance)
        return self._rules

    def record(self, push: PushRecord) -> PushEvent:
        """Decide about one push; its event is stored with the pending ones."""
        if push.delivery_id in self._pending_ids or _content(push) in self._pending_requested:
            self.flush()
        decision = _decide(self.instance, push, self)
        detail, job = decision.detail, None
        if decision.known is not None:
            job = _job_for_content(self.instance, push.namespace, push.repository, push.digest, decision.rule)
            if job is not None:
                added = add_twin_tag(job, push.tag)
                job.refresh_from_db()
                if not added and job.status == JobStatus.SUCCEEDED and push.tag != job.source_tag and \
                        twins.row_of_tag(self.instance, push.namespace, push.repository, push.tag) is None:
                    _enqueue_twin_tags(job)  # a known tag that never got its twin (a lost task): tag it now
            detail = _known_content_detail(push, decision.known, job)
        event = PushEvent(
            instance=self.instance, outcome=decision.outcome, reason=decision.reason, reason_detail=detail,
            matched_rule=decision.rule, job=job, source=push.source, delivery_id=push.delivery_id, actor=push.actor,
            namespace=push.namespace, repository=push.repository, tag=push.tag, digest=push.digest,
            media_type=push.media_type,
        )
        self._pending.append((event, decision.reference))
        self._pending_ids.add(push.delivery_id)
        if event.outcome == PushOutcome.CONVERSION_REQUESTED:
            self._pending_requested.add(_content(push))
        return event

    def flush(self) -> None:
        """Store the pending events in one INSERT, then the jobs they request (see _insert_events)."""
        pending, self._pending = self._pending, []
        self._pending_ids, self._pending_requested = set(), set()
        events = [event for event, _ in pending]
        if not any(event.outcome == PushOutcome.CONVERSION_REQUESTED for event in events):
            PushEvent.objects.bulk_create(events)  # the one-request-per-content constraint cannot fire
        else:
            for event in _insert_events(events):
                _store_one(event)
        for event in events:
            self._remember(event)
        requested = [(event, reference) for event, reference in pending
                     if event.outcome == PushOutcome.CONVERSION_REQUESTED]
        if requested:
            _request_conversions(self.instance, requested)


def _inserting(model, objs: list) -> tuple[str, list]:
    """INSERT … ON CONFLICT DO NOTHING of every column of the objects, as SQL and parameters, for a
    statement that goes on (RETURNING, or inside a WITH): the values bulk_create would store
    (defaults, auto_now timestamps), without building its query each time."""
    table, columns, row, fields = _insert_shape(model)
    params = [field.get_db_prep_save(field.pre_save(obj, True), connection) for obj in objs for field in fields]
    sql = f"INSERT INTO {table} ({columns}) VALUES {', '.join([row] * len(objs))} ON CONFLICT DO NOTHING"  # noqa: S608
    return sql, params


@functools.cache
def _insert_shape(model) -> tuple[str, str, str, list]:
    """The table, its column list, one row of placeholders and the fields, for _inserting."""
    fields = [field for field in model._meta.concrete_fields if not field.primary_key]
    quote = connection.ops.quote_name
    return (quote(model._meta.db_table), ", ".join(quote(field.column) for field in fields),
            f"({', '.join(['%s'] * len(fields))})", fields)


def _insert_events(events: list[PushEvent]) -> list[PushEvent]:
    """INSERT the events of a batch (their delivery ids differ) in one statement without a
    savepoint: an event the one-request-per-content constraint refuses is skipped by the INSERT and
    returned, for _store_one. The instance lock makes that a backstop that should never be needed."""
    sql, params = _inserting(PushEvent, events)
    with connection.cursor() as cursor:
        cursor.execute(f"{sql} RETURNING id, delivery_id", params)
        stored = {delivery_id: pk for pk, delivery_id in cursor.fetchall()}
    refused = []
    for event in events:
        if event.delivery_id in stored:
            event.pk, event._state.adding, event._state.db = stored[event.delivery_id], False, connection.alias
        else:
            refused.append(event)
    return refused


def _store_one(event: PushEvent) -> None:
    """Store one event; a conversion request that lost a race (the constraint fired) is stored as
    already seen. The instance lock makes this a backstop that should never be needed."""
    event.pk, event._state.adding = None, True
    try:
        with transaction.atomic():
            event.save(force_insert=True)
    except IntegrityError:
        event.pk, event._state.adding = None, True
        event.outcome, event.reason = PushOutcome.SKIPPED, PushReason.ALREADY_SEEN
        event.reason_detail = (f"{event.path}@{event.digest} was already requested for conversion by a concurrent "
                               "delivery; the same content is converted once.")
        event.save(force_insert=True)


def _request_conversions(instance: Instance, requested: list[tuple[PushEvent, ImageReference]]) -> None:
    """The jobs of stored "conversion requested" events, as request_conversion_for_event would make
    them. Usually one statement for any number: the new jobs INSERTed and each event's job set from
    what the INSERT returns (_insert_jobs). Content that has a job with those options already (e.g.
    from Convert now) is skipped by that INSERT; those jobs are read back in one SELECT, get the
    push's tag as a twin tag, and are set on their events in one UPDATE. The new jobs go to workers
    through the database on PostgreSQL (pipeline.dispatch), elsewhere after commit (enqueue_jobs)."""
    awaiting_dispatch = dispatch.by_database()
    jobs = []
    for event, reference in requested:
        options = options_of(event.matched_rule)
        job = ConversionJob(
            instance=instance, namespace=reference.namespace, repository=reference.repository,
            source_digest=event.digest, source_tag=reference.tag, format=options["format"],
            options=options, options_key=options_key(options), rule=event.matched_rule, event=event,
            trigger=JobTrigger.WEBHOOK, awaiting_dispatch=awaiting_dispatch,
        )
        _log(job, f"Requested ({JobTrigger.WEBHOOK.label.lower()}) for {job.source}@{event.digest} by rule "
                  f"'{event.matched_rule.name}'.")
        jobs.append(job)
    created_ids = _insert_jobs(jobs)
    created, existing = [], []
    for (event, reference), job in zip(requested, jobs, strict=True):
        if event.pk in created_ids:
            job.pk = event.job_id = created_ids[event.pk]
            job._state.adding, job._state.db = False, connection.alias
            event.job = job
            created.append(job)
            logger.info("job=%s action=requested trigger=%s instance=%s image=%s digest=%s", job.pk,
                        JobTrigger.WEBHOOK, instance.pk, job.source, event.digest)
        else:
            existing.append((event, reference, job))
    if existing:
        _join_existing_jobs(instance, existing)
    if not awaiting_dispatch:
        enqueue_jobs(created)


def _insert_jobs(jobs: list[ConversionJob]) -> dict[int, int]:
    """INSERT the jobs, skipping any whose content has a job with those options already, and set
    each new job on its event; returns {event id: new job id}. One statement on PostgreSQL (a
    data-modifying WITH), which also notifies the dispatchers (delivered on commit; PostgreSQL
    folds a transaction's identical notifications into one); SQLite (`make run`) has no such
    statement, so there the events are updated after."""
    insert, params = _inserting(ConversionJob, jobs)
    events = PushEvent._meta.db_table
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                f"WITH new AS ({insert} RETURNING id, event_id), linked AS ("  # noqa: S608
                f"UPDATE {events} SET job_id = new.id FROM new WHERE {events}.id = new.event_id "
                f"RETURNING {events}.id AS event_id, new.id AS job_id) "
                f"SELECT event_id, job_id, pg_notify(%s, '') FROM linked", [*params, dispatch.CHANNEL])
            return {event_id: job_id for event_id, job_id, _ in cursor.fetchall()}
        cursor.execute(f"{insert} RETURNING event_id, id", params)
        created = dict(cursor.fetchall())
    if created:
        _set_jobs(created)
    return created


def _join_existing_jobs(instance: Instance, existing: list[tuple[PushEvent, ImageReference, ConversionJob]]) -> None:
    """Events whose content has a job with those options already: each joins that job with its tag
    (a twin tag), in one SELECT and one UPDATE for any number."""
    def key(job):
        return job.namespace, job.repository, job.source_digest, job.format, job.options_key

    digests = sorted({job.source_digest for _, _, job in existing})
    stored = {key(job): job for job in ConversionJob.objects.raw(
        f"SELECT id, namespace, repository, source_digest, format, options_key, event_id "  # noqa: S608
        f"FROM {ConversionJob._meta.db_table} WHERE instance_id = %s AND source_digest IN ({_placeholders(digests)})",
        [instance.pk, *digests])}
    for event, reference, job in existing:
        found = stored[key(job)]
        found.instance = instance
        add_twin_tag(found, reference.tag)
        event.job = found
    _set_jobs({event.pk: event.job_id for event, _, _ in existing})


def _set_jobs(jobs_of_events: dict[int, int]) -> None:
    """Store each event's job ({event id: job id}) in one UPDATE (bulk_update's statement, without
    its cost per call)."""
    cases = " ".join(["WHEN %s THEN %s"] * len(jobs_of_events))
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {PushEvent._meta.db_table} SET job_id = CASE id {cases} END "  # noqa: S608
            f"WHERE id IN ({_placeholders(list(jobs_of_events))})",
            [value for pair in jobs_of_events.items() for value in pair] + list(jobs_of_events))


def _locked_for_delivery(instance_id: int) -> Instance:
    """The instance row, locked until the delivery commits, with only what deciding reads (the
    credentials are not decrypted for a push); one plain statement, as it runs for every delivery.

    FOR NO KEY UPDATE: it serializes deliveries to the instance, but leaves alone the foreign-key
    checks of rows that reference the instance (FOR KEY SHARE), e.g. those of a worker finishing a
    job that the delivery then locks; FOR UPDATE would deadlock with that worker."""
    lock = (" FOR NO KEY UPDATE" if connection.features.has_select_for_no_key_update else
            " FOR UPDATE" if connection.features.has_select_for_update else "")
    for instance in Instance.objects.raw(
            f"SELECT id, name, url, acceleration_enabled FROM {Instance._meta.db_table} WHERE id = %s{lock}",  # noqa: S608
            [instance_id]):
        return instance
    raise Instance.DoesNotExist(f"Instance {instance_id} is gone.")


def record_pushes(instance: Instance, pushes: list[PushRecord]) -> list[PushEvent]:
    """Store the manifest pushes of one delivery, in order, each with its outcome and the reason,
    exactly once per delivery id and digest; the events come back in the pushes' order.

    The instance row is locked for the delivery, so concurrent duplicate deliveries are serialized:
    the first stores "conversion requested", the rest "already seen". A unique constraint backs this
    up; should it fire anyway, the push is stored as already seen. A new tag of content already
    requested joins that content's job and gets its own twin when the job succeeds. Whatever the
    number of pushes, a delivery reads and writes in a handful of statements (see _Delivery).
    """
    if not pushes:
        return []
    with transaction.atomic():
        delivery = _Delivery(_locked_for_delivery(instance.pk), pushes)
        events = [delivery.record(push) for push in pushes]
        delivery.flush()
    return events


def record_push(instance: Instance, push: PushRecord) -> PushEvent:
    """Store one manifest push (a delivery of one push: see record_pushes)."""
    return record_pushes(instance, [push])[0]


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
    return parse_on_host(reference, instance.host) if isinstance(reference, str) else reference


def enqueue_job(job: ConversionJob) -> None:
    """Send the job to a worker once the current transaction commits (see enqueue_jobs)."""
    enqueue_jobs([job])


def enqueue_jobs(jobs: list[ConversionJob]) -> None:
    """Send jobs to workers once the current transaction commits: one job in its own message, more
    (a delivery of many pushes) in one message that a worker fans out, so that the request
    publishes once, not once per job. The task is guarded, so a second message for a job is
    harmless; a message that is lost leaves queued jobs to the reconciler."""
    job_ids = [job.pk for job in jobs]
    if job_ids:
        transaction.on_commit(lambda: _send_jobs(job_ids))


def _send_jobs(job_ids: list[int]) -> None:
    """Publish the jobs' message. When the broker does not answer, on PostgreSQL the jobs wait for
    the workers' dispatchers instead (pipeline.dispatch), which send them once it is back; elsewhere
    the error stands (the request answers 503: core.errors)."""
    from pipeline.tasks import convert_image_task, enqueue_jobs_task

    try:
        if len(job_ids) == 1:
            convert_image_task.delay(job_ids[0])
        else:
            enqueue_jobs_task.delay(job_ids)
    except BrokerUnavailable as error:
        if not dispatch.by_database():
            raise
        dispatch.leave_to_dispatchers(job_ids)
        logger.warning("jobs=%s action=left-to-dispatcher broker-error=%s", job_ids, error)


def add_twin_tag(job: ConversionJob, tag: str) -> bool:
    """Give another tag of the job's source content its own accelerated twin `<tag><suffix>`.

    The content is converted once; each further tag pushed with the same digest (`1.0` and
    `latest`, say) gets the same accelerated manifest under its own twin name. A succeeded job is
    tagged right away (a small task); a job still to run, or to retry, tags every twin when it
    succeeds. Returns False when the tag was known already.
    """
    with transaction.atomic():
        locked = ConversionJob.objects.select_for_update().get(pk=job.pk)
        if tag == locked.source_tag or tag in locked.twin_tags:
            return False
        locked.twin_tags = [*locked.twin_tags, tag]
        if locked.status == JobStatus.SUCCEEDED:
            _log(locked, f"Tag '{tag}' has the same content; {twin_tag(tag)} is being tagged on the accelerated "
                         "image.")
            _enqueue_twin_tags(locked)
        else:
            _log(locked, f"Tag '{tag}' has the same content; {twin_tag(tag)} will be tagged when this job "
                         "succeeds.")
        locked.save(update_fields=["twin_tags", "log", "updated_at"])
    job.twin_tags = locked.twin_tags
    return True


def _enqueue_twin_tags(job: ConversionJob) -> None:
    """Tag the accelerated image for the job's twin tags in a task that retries registry failures."""
    from pipeline.tasks import push_twin_tags_task

    job_id = job.pk
    transaction.on_commit(lambda: push_twin_tags_task.delay(job_id))


def _sizes(client, job: ConversionJob, twin_digest: str) -> dict:
    """Source and twin sizes and media types for the twin rows; best effort (the Images refresh fills gaps)."""
    sizes = {}
    for side, digest in (("source", job.source_digest), ("twin", twin_digest)):
        try:
            image = read_image(client, job.path, digest)
            sizes[f"{side}_size"], sizes[f"{side}_media_type"] = image.size, image.media_type
        except RegistryError as error:
            logger.warning("job=%s action=size-unknown digest=%s error=%s", job.pk, digest, error.message)
    return sizes


def _tag_twins(client, job: ConversionJob, tags: list[str], manifest) -> list[str]:
    """PUT the accelerated manifest under each tag's twin name and record each twin once its PUT
    succeeded; returns the twin tags written. A tag that points at other content by now keeps the
    twin it has: the job's tags are those its content had when they were pushed."""
    sizes = _sizes(client, job, manifest.digest)
    written = []
    for tag in tags:
        current = client.head_manifest(job.path, tag)
        if current is None or current.digest != job.source_digest:
            logger.info("job=%s action=twin-skipped tag=%s reason=moved", job.pk, tag)
            continue
        client.put_manifest(job.path, twin_tag(tag), manifest.content, manifest.media_type)
        twins.record_present(job, tag, manifest.digest, **sizes)
        written.append(twin_tag(tag))
    return written


def push_twin_tags(job_id: int) -> list[str]:
    """Tag the accelerated image of a succeeded job for each further tag whose twin is not in the
    registry (idempotent PUTs of the manifest that is already there); returns the twin tags written.
    When the accelerated manifest itself is gone, the job is queued again to convert."""
    job = ConversionJob.objects.select_related("instance").filter(pk=job_id, status=JobStatus.SUCCEEDED).first()
    if job is None or not job.result_digest:
        return []
    tags = [tag for tag in twins.not_present_tags(job) if tag != job.source_tag]
    if not tags:
        return []
    with job.instance.registry_client() as client:
        try:
            manifest = client.get_manifest(job.path, job.result_digest)
        except RegistryNotFound:
            with transaction.atomic():
                locked = ConversionJob.objects.select_for_update().get(pk=job_id)
                if locked.status == JobStatus.SUCCEEDED:
                    _requeue(locked, f"The accelerated manifest {job.result_digest} is no longer in the registry; "
                                     f"converting again to make {', '.join(twin_tag(tag) for tag in tags)}.")
            return []
        written = _tag_twins(client, job, tags, manifest)
    if not written:
        return []
    with transaction.atomic():
        locked = ConversionJob.objects.select_for_update().get(pk=job_id)
        _log(locked, f"Tagged the accelerated image as {', '.join(written)}.")
        locked.save(update_fields=["log", "updated_at"])
    logger.info("job=%s action=twin-tags tags=%s", job_id, ",".join(written))
    return written


def request_conversion(
    instance: Instance, reference: ImageReference | str, digest: str | None = None, *, rule: Rule | None = None,
    event=None, requested_by=None, trigger: str = JobTrigger.WEBHOOK, join: bool = True,
) -> tuple[ConversionJob, bool]:
    """Get or create the conversion job of one source image and enqueue it after commit.

    `reference` is `host/namespace/repository:tag` (or `namespace/repository:tag` on the instance);
    `digest` is the source manifest digest (taken from the reference when it has one). The job is
    unique per (instance, repository, digest, format, options): a duplicate delivery, a re-push of
    the same digest or a second matching rule returns the existing job with `created=False` and
    enqueues nothing (a new tag of it becomes one of its twin tags, unless `join` is off). `rule`
    (the first enabled matching rule) decides the options; without one the defaults apply.
    """
    reference = _as_reference(instance, reference)
    digest = digest or reference.digest
    if not digest:
        raise ValidationError("A conversion needs the source manifest digest.")
    if not reference.tag:
        raise ValidationError(f"A conversion needs a tag: the accelerated image is named {twin_tag('<tag>')}.")
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
        elif join:
            add_twin_tag(job, reference.tag)
    return job, created


def request_conversion_for_event(event) -> ConversionJob:
    """The job of a push event whose outcome is "conversion requested" (the webhook's one call)."""
    job, _ = request_conversion(
        event.instance, f"{event.instance.host}/{event.path}:{event.tag}", event.digest, rule=event.matched_rule,
        event=event, trigger=JobTrigger.WEBHOOK,
    )
    return job


class Outcome:
    """What `request_twin` did for a tag."""

    CREATED = "created"  # a new job
    QUEUED_AGAIN = "queued_again"  # a failed, cancelled or skipped job runs again
    RECREATING = "recreating"  # a succeeded job runs again: its twin was deleted or is missing
    TAGGING = "tagging"  # a new tag of converted content: its twin is being tagged
    IN_PROGRESS = "in_progress"  # the job is queued or running
    ALREADY = "already"  # the twin is in the registry
    LEFT_AS_IS = "left_as_is"  # the job failed, was cancelled or skipped: retrying is for people


def request_twin(instance: Instance, reference: ImageReference, digest: str, *, rule: Rule | None, trigger: str,
                 requested_by=None, retry_failed: bool = False) -> tuple[ConversionJob, str]:
    """Make sure `reference`'s tag gets its twin: a new job, or the existing one put to work.

    An existing succeeded job whose twin is not in the registry (deleted, missing, never tagged)
    runs again: it re-tags when the accelerated manifest still exists and converts otherwise. A
    failed, cancelled or skipped job is queued again only with `retry_failed` (Convert now; the
    reconciler and backfill leave failures to people). Returns the job and an `Outcome`.
    """
    job, created = request_conversion(instance, reference, digest, rule=rule, requested_by=requested_by,
                                      trigger=trigger, join=False)
    if created:
        return job, Outcome.CREATED
    with transaction.atomic():
        added = add_twin_tag(job, reference.tag)  # tagged on success, or now if the job succeeded
        locked = ConversionJob.objects.select_for_update(of=("self",)).select_related("instance").get(pk=job.pk)
        if locked.status in ACTIVE:
            return locked, Outcome.IN_PROGRESS
        why = JobTrigger(trigger).label
        if locked.status != JobStatus.SUCCEEDED:
            if not retry_failed:
                return locked, Outcome.LEFT_AS_IS
            return _rerun(locked, why), Outcome.QUEUED_AGAIN
        row = twins.row_of_tag(instance, reference.namespace, reference.repository, reference.tag)
        if row is not None and row.is_present:
            return locked, Outcome.ALREADY
        if row is None and reference.tag != locked.source_tag:
            if not added:  # known, yet never tagged: tag it now (the task converts again if need be)
                _enqueue_twin_tags(locked)
            return locked, Outcome.TAGGING
        return _rerun(locked, why), Outcome.RECREATING


def check_convert_now(instance: Instance, image: str) -> ImageReference:
    """The image "Convert now" was given, checked without a registry call: on the instance, not a
    twin itself. Raises ValidationError (or InvalidReference) with the reason."""
    reference = _as_reference(instance, image)
    if reference.host != instance.host:
        raise ValidationError(f"'{reference}' is not on instance '{instance.name}' ({instance.host}).")
    if reference.tag and is_twin_tag(reference.tag):
        raise ValidationError(f"The tag '{reference.tag}' ends with '{suffix()}': it is already an accelerated "
                              "image.")
    return reference.with_tag(reference.tag or "latest") if not reference.digest else reference


def convert_now(instance: Instance, reference: ImageReference, requested_by=None) -> tuple[ConversionJob, str]:
    """Convert any tag of the instance now, with or without a rule (a worker runs this).

    The tag's current digest is read from the registry. The first enabled matching rule, read now,
    gives the options (so this meets the webhook's job for the same image); otherwise the defaults
    apply. An existing job is put to work: queued again if it had failed or was cancelled, run
    again if its twin was deleted or is missing. Returns the job and an `Outcome`.
    """
    digest = reference.digest
    tag = reference.tag or "latest"
    if not digest:
        with instance.registry_client() as client:
            try:
                found = client.head_manifest(reference.path, tag)
            except RegistryError as error:
                raise ValidationError(f"Could not read {reference} from the registry: {error.message}") from None
        if found is None:
            raise ValidationError(f"{reference} does not exist in the registry.")
        digest = found.digest
    reference = reference.with_tag(tag)
    rule = current_rule(instance, reference)
    content = ConversionJob.objects.filter(instance=instance, namespace=reference.namespace,
                                           repository=reference.repository, source_digest=digest)
    with transaction.atomic():
        earlier = content.select_for_update().filter(
            status__in=[JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.SKIPPED]).order_by("-created_at").first()
        if earlier is not None and not content.filter(options_key=options_key(options_of(rule))).exists():
            # The content's job has the rule's old options: it runs again with the current ones.
            add_twin_tag(earlier, reference.tag)
            earlier.refresh_from_db()
            return _rerun(earlier, "Convert now"), Outcome.QUEUED_AGAIN
    return request_twin(instance, reference, digest, rule=rule, trigger=JobTrigger.MANUAL,
                        requested_by=requested_by, retry_failed=True)


@dataclass(frozen=True)
class Reconversion:
    """What *Convert now* would do for a tag whose twin is present: convert again (the options that
    apply now differ from the twin's, the tag points at other content, or the console did not make
    the twin), or nothing (it is already accelerated with those options)."""

    rule: Rule | None  # the rule whose options apply now (None: the defaults)
    converts: bool
    why: list[str]  # what differs, in words ("chunk size 4 MiB → 1 MiB")


def reconversion(instance: Instance, twin, source_digest: str) -> Reconversion:
    """Foresee *Convert now* of the source tag of a present twin (`source_digest`: the tag's digest
    as last seen). Reads rows and rules only."""
    reference = _as_reference(instance, f"{instance.host}/{twin.path}:{twin.source_tag}")
    rule = current_rule(instance, reference)
    options = options_of(rule)
    if twin.job is None:
        return Reconversion(rule, True, ["the twin was not made by this console"])
    if source_digest and source_digest != twin.source_digest:
        return Reconversion(rule, True, [f"the tag points at other content now ({source_digest})"])
    changes = ConversionJob(options=options, previous_options=twin.job.options).option_changes
    return Reconversion(rule, bool(changes), changes)


def current_rule(instance: Instance, reference: ImageReference) -> Rule | None:
    """The first enabled rule that matches the image now (None when acceleration is off)."""
    return match_image(instance, reference).rule if instance.acceleration_enabled else None


def retry_offered(job: ConversionJob) -> bool:
    """Retry applies to failed, cancelled and skipped jobs, and to succeeded ones whose twins are
    not all in the registry (deleted through the console or missing)."""
    if job.status in (JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.SKIPPED):
        return True
    return job.status == JobStatus.SUCCEEDED and bool(twins.not_present_tags(job))


def retry_job(job: ConversionJob) -> ConversionJob:
    """Run a job again with the first matching rule's current options (audited).

    For a failed, cancelled or skipped job, or a succeeded one whose twins were deleted or are
    missing. When the rule's options changed since, the job is re-run with the new ones and keeps
    the old ones in `previous_options`; when another job already has the new options for this
    content, that job takes over the tags and is the one that runs (and is returned).
    """
    with transaction.atomic():
        locked = ConversionJob.objects.select_for_update(of=("self",)).select_related("instance").get(pk=job.pk)
        if not retry_offered(locked):
            raise JobActionRefused(
                f"Job #{locked.pk} is {locked.get_status_display().lower()}"
                + ("" if locked.status in ACTIVE else " and its accelerated images are in the registry")
                + "; only failed, cancelled or skipped jobs, or succeeded ones whose accelerated image is gone, "
                  "can be retried.")
        old_status = locked.status
        rerun = _rerun(locked, "Retry requested")
        _audit(rerun, "retry", old_status if rerun.pk == locked.pk else None)
    logger.info("job=%s action=retry", rerun.pk)
    return rerun


def _rerun(locked: ConversionJob, why: str) -> ConversionJob:
    """Queue a locked, finished job again with the first matching rule's current options."""
    reference = ImageReference(locked.instance.host, locked.namespace, locked.repository, tag=locked.source_tag)
    rule = current_rule(locked.instance, reference)
    options = options_of(rule)
    if options_key(options) != locked.options_key:
        other = ConversionJob.objects.select_for_update().filter(
            instance=locked.instance, namespace=locked.namespace, repository=locked.repository,
            source_digest=locked.source_digest, options_key=options_key(options)).first()
        if other is not None:
            return _hand_over(locked, other)
        locked.previous_options, locked.options, locked.rule = locked.options, options, rule
        locked.result_tag, locked.result_digest, locked.result_size = "", "", None
        message = (f"{why}: re-run with the rule's current options"
                   + (f" (rule '{rule.name}')" if rule else " (no rule matches now: the defaults)") + ": "
                   + "; ".join(locked.option_changes) + ".")
    elif locked.status == JobStatus.SUCCEEDED:
        message = (f"{why}: re-create the accelerated image ("
                   + ", ".join(twin_tag(tag) for tag in twins.not_present_tags(locked)) + " not in the registry).")
    else:
        message = f"{why}: queued again; the rule's options are unchanged."
    _requeue(locked, message)
    return locked


def _hand_over(job: ConversionJob, other: ConversionJob) -> ConversionJob:
    """The rule's current options for this content are another job's: give it the tags and run it."""
    for tag in twins.wanted_tags(job):
        add_twin_tag(other, tag)
    _log(job, f"The rule's current options are those of job #{other.pk}; it makes the accelerated images of "
              "this content now.")
    job.save(update_fields=["log", "updated_at"])
    other.refresh_from_db()
    if other.status not in ACTIVE and retry_offered(other):
        _requeue(other, f"Queued again for the tags of job #{job.pk}, whose options the rule no longer has.")
    return other


def _requeue(job: ConversionJob, message: str) -> None:
    """Queue a locked, finished job again with a fresh attempt budget (the caller saved nothing yet)."""
    job.status = JobStatus.QUEUED
    job.attempts = job.retries = 0
    job.reason = ""
    job.started_at = job.finished_at = None  # the duration counts from this run's first attempt
    _log(job, message)
    job.save()
    enqueue_job(job)


def cancel_job(job: ConversionJob) -> ConversionJob:
    """Cancel a queued job; a running or finished job cannot be cancelled (audited)."""
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
        _audit(locked, "cancel", JobStatus.QUEUED)
    logger.info("job=%s action=cancel", locked.pk)
    return locked


def _audit(job: ConversionJob, action: str, old_status: str | None) -> None:
    """An audit entry for an action people take on a job (jobs themselves are machine records)."""
    record("update", job, {"action": {"old": None, "new": action},
                           "status": {"old": old_status, "new": job.status}})


def as_sentence(text: str) -> str:
    """`text` ending with a full stop (or its own ! ? …), so that a sentence can follow it."""
    text = text.rstrip()
    return text if not text or text[-1] in ".!?…" else f"{text}."


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


def database_tag() -> str:
    """A short name of this console's database, part of every spool directory's name, so that two
    consoles (or test runs) sharing a temp dir never sweep each other's directories: job ids are
    only unique within one database."""
    settings_dict = connection.settings_dict
    identity = f"{connection.vendor}:{settings_dict.get('HOST')}:{settings_dict.get('PORT')}:{settings_dict['NAME']}"
    return hashlib.sha256(identity.encode()).hexdigest()[:12]


def job_workdir(job_id: int, attempt: int) -> Path:
    """Where one attempt of a job spools layers: its own directory under spool_root(), removed when
    the attempt ends; a dead worker's is swept by the reconciler."""
    return spool_root() / f"{JOB_WORKDIR_PREFIX}{database_tag()}-{job_id}-{attempt}"


def run_conversion(job_id: int) -> ConversionJob | None:
    """Run one conversion job: the guarded, idempotent body of the Celery task.

    Does nothing for a missing or finished job, or one a live worker is running. A job that
    succeeded before and runs again to re-create its twins re-tags its accelerated manifest when
    the registry still has it. Otherwise converts `<tag>@digest` into `<tag><suffix>` with the job's
    options, reusing the instance's layer cache, writing progress at most once per
    APPARATE_JOB_PROGRESS_INTERVAL, and finishes the job: succeeded (its twin recorded);
    skipped (suffixed tag, already accelerated); failed with an actionable reason (permanent errors,
    or transient ones after APPARATE_JOB_MAX_ATTEMPTS attempts). A transient failure with attempts
    left (the registry's, or a database error such as a deadlock) puts the job back to queued and
    raises RetryLater.
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
                if job.result_digest:
                    retagged = _retag(client, job)
                    if retagged is not None:
                        return retagged
                result = convert_image(
                    client, source, destination=source.with_tag(twin_tag(job.source_tag)),
                    options=_layer_options(job.options), cache=cache, progress=progress,
                    suffix=suffix(), workdir=workdir,
                )
                sizes = _sizes(client, job, result.digest)
        except (SuffixedTagRefused, AlreadyAccelerated) as error:
            return _finish(job_id, progress, JobStatus.SKIPPED, str(error), str(error))
        except RegistryError as error:
            return _registry_failure(job_id, progress, error)
        except ConversionError as error:
            return _finish(job_id, progress, JobStatus.FAILED, str(error), _conversion_reason(error, job))
        except OperationalError as error:
            return _database_failure(job_id, progress, error)
        except Exception as error:
            logger.exception("job=%s action=crash", job_id)
            return _finish(job_id, progress, JobStatus.FAILED, f"{type(error).__name__}: {error}",
                           "The conversion stopped on an unexpected error (see the worker log); retry the job.")
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        try:
            job = _succeed(job_id, progress, result, time.monotonic() - started, sizes)
        except OperationalError as error:  # the image is in the registry; the next attempt finds its layers cached
            return _database_failure(job_id, progress, error)
    if [tag for tag in job.twin_tags if tag != job.source_tag]:
        _enqueue_twin_tags(job)
    return job


def _retag(client, job: ConversionJob) -> ConversionJob | None:
    """Re-create the twins of a job that succeeded before from its accelerated manifest, when the
    registry still has it; None when it is gone (the caller converts again)."""
    try:
        manifest = client.get_manifest(job.path, job.result_digest)
    except RegistryNotFound:
        with transaction.atomic():
            locked = ConversionJob.objects.select_for_update().get(pk=job.pk)
            _log(locked, f"The accelerated manifest {job.result_digest} is no longer in the registry; converting "
                         "again.")
            locked.save(update_fields=["log", "updated_at"])
        return None
    written = _tag_twins(client, job, twins.wanted_tags(job), manifest)
    with transaction.atomic():
        locked = ConversionJob.objects.select_for_update().get(pk=job.pk)
        locked.status = JobStatus.SUCCEEDED
        locked.finished_at = timezone.now()
        _log(locked, f"The accelerated manifest {job.result_digest} was still in the registry: tagged it again as "
                     f"{', '.join(written)}, nothing converted." if written else
                     f"The accelerated manifest {job.result_digest} is still in the registry, but none of the job's "
                     "tags points at its content any more: nothing to tag.")
        locked.save()
    logger.info("job=%s action=retagged digest=%s tags=%s", job.pk, job.result_digest, ",".join(written))
    return locked


def _succeed(job_id: int, progress: _Progress, result, seconds: float, sizes: dict) -> ConversionJob:
    layers = progress.snapshot()
    with transaction.atomic():
        job = ConversionJob.objects.select_for_update(of=("self",)).select_related("instance").get(pk=job_id)
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
        job.warnings = result.warnings
        for warning in result.warnings:  # e.g. a prioritized file found in no layer: placed nowhere, not fatal
            _log(job, f"Warning: {warning}.", "warning")
        _log(job, f"Pushed {result.destination} ({result.digest}): {result.layers_converted} layer(s) converted, "
                  f"{result.layers_reused} reused, in {seconds:.1f}s.")
        job.save()
        figures = startup.from_result(result).fields()
        # A cached layer without its figure: keep the one known for the manifest, or read it from the registry.
        row = twins.record_present(job, job.source_tag, result.digest, **sizes,
                                   startup=figures if figures["startup_bytes"] is not None else None)
        if row.startup_bytes is None and not row.startup_error:
            startup.enqueue_measure(job.instance_id)
    logger.info("job=%s action=succeeded digest=%s seconds=%.1f converted=%s reused=%s warnings=%s", job_id,
                result.digest, seconds, result.layers_converted, result.layers_reused, len(result.warnings))
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


def _retry_later(job: ConversionJob, progress: _Progress, message: str) -> None:
    """Put a job whose attempt failed on something passing back to queued, and raise RetryLater."""
    countdown = _backoff(job.attempts)
    with transaction.atomic():
        locked = ConversionJob.objects.select_for_update().get(pk=job.pk)
        locked.status = JobStatus.QUEUED
        locked.retries += 1
        locked.last_error = message
        locked.layers = progress.snapshot()
        _log(locked, f"Attempt {locked.attempts} failed: {message} Retrying in {countdown:.0f}s.", "warning")
        locked.save()
    logger.warning("job=%s action=retry-later attempt=%s countdown=%.1f error=%s", job.pk, job.attempts, countdown,
                   message)
    raise RetryLater(countdown)


def _database_failure(job_id: int, progress: _Progress, error: OperationalError) -> ConversionJob:
    """A database error in an attempt (a deadlock, a lock wait past its timeout, a lost connection):
    its transaction rolled back, so the attempt runs again, up to APPARATE_JOB_MAX_ATTEMPTS."""
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    message = f"The database refused a write ({first_line})."
    job = ConversionJob.objects.get(pk=job_id)
    if job.attempts < settings.APPARATE_JOB_MAX_ATTEMPTS:
        _retry_later(job, progress, message)
    return _finish(job_id, progress, JobStatus.FAILED, message,
                   f"The database kept refusing the job's writes after {job.attempts} attempts ({first_line}). "
                   "Check the database's health and the worker log, then retry the job.")


def _registry_failure(job_id: int, progress: _Progress, error: RegistryError) -> ConversionJob:
    job = ConversionJob.objects.get(pk=job_id)
    if error.transient and job.attempts < settings.APPARATE_JOB_MAX_ATTEMPTS:
        _retry_later(job, progress, error.message)
    if error.transient:
        reason = (f"The registry kept failing after {job.attempts} attempts ({error.message}). Check that it is "
                  "up and healthy, then retry the job.")
    else:
        hint = next((text for kind, text in _REGISTRY_HINTS if isinstance(error, kind)), "The registry refused a "
                    "request; see the error. Retrying will not help until that is fixed.")
        reason = f"{error.message} {hint}"
    return _finish(job_id, progress, JobStatus.FAILED, error.message, reason)


# Which option an InvalidOptionsError is about, by the words of its message.
_OPTION_WORDS = (("chunk size", "chunk size"), ("prioritized", "prioritized files"), ("level", "compression"),
                 ("compressor", "compression"))


def _change_the_rule(job: ConversionJob, option: str) -> str:
    where = f"rule '{job.rule.name}'" if job.rule else "the matching rule (this job used the defaults)"
    return (f"This comes from the job's '{option}' option: change it in {where}, then Retry the job (a retry "
            "re-reads the rule's current options).")


def _conversion_reason(error: ConversionError, job: ConversionJob) -> str:
    """Why a conversion failed, in words a person can act on; failures caused by the job's options
    name the option and where to change it."""
    sentence = as_sentence(str(error))  # the converter's messages end without a full stop
    if isinstance(error, ImageRefused):
        return f"{sentence} This image cannot be converted as it is."
    if isinstance(error, InvalidOptionsError):
        option = next((name for word, name in _OPTION_WORDS if word in str(error)), "conversion")
        return f"{sentence} {_change_the_rule(job, option)}"
    if isinstance(error, LayerTooLargeError):
        return f"{sentence} The layer decompresses to more than the converter accepts; it cannot be converted."
    if isinstance(error, HostileArchiveError):
        return f"{sentence} The layer tries something unsafe and is refused on purpose; rebuild the image."
    if isinstance(error, CorruptLayerError):
        return (f"{sentence} A layer is not a readable tar, tar+gzip or tar+zstd stream; push the image again (its "
                "copy in the registry may be damaged).")
    return f"{sentence} The image's layers could not be converted as they are (see the error)."
