"""The reconciler: find tags that should have an accelerated twin but have neither twin nor job.

It walks the registry's catalog and tag lists (paginated by the converter's client), keeps the
repositories of the namespaces the rules name, and checks each tag against the rules in order,
exactly as a push would be. Whether a tag has a twin is read from the twin rows (pipeline.twins)
and the tag list: a present twin whose tag is gone is marked missing. What it finds is then
requested for conversion by `reconcile_instance` (periodic, from Celery beat) or `backfill_rule`
("Convert existing images" on a rule page). A webhook that was lost costs a delay, not an image.

A twin that was deleted (through the console, or in the registry: missing) is left alone by the
reconciler, which says so in its report and log: someone removed it. Backfill, asked for by a
person, re-creates it, as do Convert now and Retry.
"""

import logging
import re
import shutil
from dataclasses import asdict, dataclass, field
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.utils import timezone

from converter.reference import ImageReference
from converter.registry import (
    RegistryClient,
    RegistryError,
    RegistryNotFound,
)
from core.actions import live_workers
from pipeline import twins
from pipeline.actions import JOB_WORKDIR_PREFIX, Outcome, database_tag, enqueue_job, request_twin, spool_root
from pipeline.choices import JobStatus, JobTrigger
from pipeline.models import AcceleratedImage, ConversionJob
from pipeline.naming import is_twin_tag, twin_tag
from registries.models import Instance
from rules.matching import evaluate_rule
from rules.models import Rule

logger = logging.getLogger("apparate.jobs")


@dataclass(frozen=True)
class Candidate:
    reference: ImageReference  # host/namespace/repository:tag
    rule: Rule  # the first enabled matching rule: it decides the options
    gone: AcceleratedImage | None = None  # its twin, deleted or missing: the request re-creates it


@dataclass
class Scan:
    """What one walk found: candidates, and how much was looked at."""

    candidates: list[Candidate] = field(default_factory=list)
    repositories: int = 0
    tags: int = 0
    with_twin: int = 0
    with_job: int = 0
    left_alone: list[str] = field(default_factory=list)
    missing: int = 0
    errors: list[str] = field(default_factory=list)


def _winner(rules: list[Rule], reference: ImageReference) -> Rule | None:
    return next((rule for rule in rules if evaluate_rule(rule, reference).matched), None)


def _left_alone(path: str, row: AcceleratedImage) -> str:
    return f"{path}:{row.twin_tag} ({row.get_state_display().lower()}): {row.state_reason}"


def scan(instance, client: RegistryClient, only_rule: Rule | None = None) -> Scan:
    """Walk the instance's registry for tags without twin or unfinished job that an enabled rule matches.

    With `only_rule` (backfill), keep the tags that rule matches (they are still converted with the
    options of the first matching rule, as a push would be), including those whose twin was deleted
    or is missing. Without it (the reconciler), such twins are left alone and listed in `left_alone`.
    """
    rules = list(instance.rules.filter(enabled=True).order_by("position", "id"))
    result = Scan()
    if not instance.acceleration_enabled or not rules:
        return result
    namespaces = {rule.namespace for rule in rules}
    for path in client.catalog():
        namespace, slash, repository = path.partition("/")
        if not slash or namespace not in namespaces:
            continue
        listed_at = timezone.now()
        try:
            tags = client.tags(path)
        except RegistryNotFound:  # deleted between the catalog and now
            continue
        result.repositories += 1
        present = set(tags)
        result.missing += twins.mark_missing(AcceleratedImage.objects.filter(
            instance=instance, namespace=namespace, repository=repository).exclude(twin_tag__in=present),
            "reconciler pass", listed_at)
        rows = twins.of_repository(instance, namespace, repository)
        unfinished = set()  # tags with a job that has not succeeded: its source tag and further tags
        for source_tag, twin_tags in ConversionJob.objects.filter(
            instance=instance, namespace=namespace, repository=repository,
        ).exclude(status=JobStatus.SUCCEEDED).values_list("source_tag", "twin_tags"):
            unfinished.update((source_tag, *twin_tags))
        for tag in tags:
            if is_twin_tag(tag):
                continue
            result.tags += 1
            reference = ImageReference(instance.host, namespace, repository, tag=tag)
            if only_rule is not None and not evaluate_rule(only_rule, reference).matched:
                continue
            rule = _winner(rules, reference)
            if rule is None:
                continue
            row = rows.get(twin_tag(tag))
            if twin_tag(tag) in present or (row is not None and row.is_present):
                result.with_twin += 1
            elif row is not None:  # deleted or missing
                if only_rule is not None:
                    result.candidates.append(Candidate(reference, rule, row))
                else:
                    result.left_alone.append(_left_alone(path, row))
            elif tag in unfinished:
                result.with_job += 1
            else:
                result.candidates.append(Candidate(reference, rule))
    return result


# --- Requests: the periodic pass and backfill -----------------------------------------------------


@dataclass
class ReconcileReport:
    """What a reconciler pass or a backfill did, for logs, the rule page and the API."""

    repositories: int = 0
    tags: int = 0
    with_twin: int = 0
    with_job: int = 0
    requested: int = 0
    recreate: int = 0  # of the requested: twins deleted or missing, re-created
    missing: int = 0  # present twins found gone from the registry (marked missing)
    left_alone: list[str] = field(default_factory=list)  # twins deleted or missing, not re-created
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def of_scan(cls, found: Scan, requested: int = 0) -> "ReconcileReport":
        return cls(found.repositories, found.tags, found.with_twin, found.with_job, requested,
                   sum(candidate.gone is not None for candidate in found.candidates), found.missing,
                   list(found.left_alone), list(found.errors))


REQUESTED = {Outcome.CREATED, Outcome.RECREATING}  # conversions requested (a further tag is only tagged)


def _request_candidates(instance: Instance, client: RegistryClient, found: Scan, trigger: str,
                        requested_by=None) -> ReconcileReport:
    report = ReconcileReport.of_scan(found)
    report.recreate = 0
    for candidate in found.candidates:
        reference = candidate.reference
        try:
            head = client.head_manifest(reference.path, reference.tag)
        except RegistryError as error:
            report.errors.append(error.message)
            continue
        if head is None:  # deleted since the tag list was read
            continue
        gone = candidate.gone or twins.gone_for_content(instance, reference.namespace, reference.repository,
                                                        head.digest)
        if gone is not None and trigger == JobTrigger.RECONCILER:  # the accelerated image of this content
            report.left_alone.append(_left_alone(reference.path, gone))
            continue
        _, outcome = request_twin(instance, reference, head.digest, rule=candidate.rule, trigger=trigger,
                                  requested_by=requested_by)
        report.requested += outcome in REQUESTED
        report.recreate += outcome == Outcome.RECREATING
    return report


def _requeue_stale(instance: Instance) -> int:
    """Enqueue again the jobs that have not moved for a reconciler interval: queued ones (a message
    lost with a broker restart, say) and running ones (a worker that died on a broker that does not
    redeliver, like the filesystem broker of `make run`; a running job writes progress every
    second). Harmless when the job is in fact alive: the task is guarded and, on PostgreSQL, a
    job held by a live worker is left alone."""
    cutoff = timezone.now() - timedelta(seconds=settings.APPARATE_RECONCILE_INTERVAL)
    stale = list(ConversionJob.objects.filter(
        instance=instance, status__in=[JobStatus.QUEUED, JobStatus.RUNNING], updated_at__lt=cutoff))
    for job in stale:
        enqueue_job(job)
        logger.info("job=%s action=requeue-stale", job.pk)
    return len(stale)


def requeue_orphaned_jobs() -> int:
    """Queue again, at once, the running jobs whose worker run is gone: its heartbeat stopped, or
    its hostname now reports another session (the worker was restarted). A broker that does not
    redeliver (the filesystem broker of `make run`) would otherwise leave them to _requeue_stale.
    Clearing `worker` in the same guarded update sends each orphan once; the task then starts it
    again. Spool directories of dead attempts on this machine are swept too."""
    alive = live_workers()
    orphans = [(pk, worker) for pk, worker in ConversionJob.objects.filter(status=JobStatus.RUNNING)
               .exclude(worker="").values_list("pk", "worker") if worker not in alive]
    requeued = 0
    for pk, worker in orphans:
        if ConversionJob.objects.filter(pk=pk, status=JobStatus.RUNNING, worker=worker).update(worker=""):
            enqueue_job(ConversionJob(pk=pk))
            logger.warning("job=%s action=requeue-orphan worker=%s", pk, worker)
            requeued += 1
    sweep_job_workdirs()
    return requeued


_WORKDIR_NAME = re.compile(rf"{re.escape(JOB_WORKDIR_PREFIX)}([0-9a-f]{{12}})-(\d+)-(\d+)")


def sweep_job_workdirs() -> int:
    """Remove the spool directories (on this machine) of this database's attempts that are no longer
    running on a live worker run; directories of other databases' jobs are not ours to judge. The
    directories are listed before the jobs are read, so an attempt that starts meanwhile is seen
    running; a new attempt always spools in a new directory."""
    found = {}
    ours = database_tag()
    for path in spool_root().glob(f"{JOB_WORKDIR_PREFIX}{ours}-*"):
        match = _WORKDIR_NAME.fullmatch(path.name)
        if match and match[1] == ours and path.is_dir():
            found[path] = (int(match[2]), int(match[3]))
    running = {pk: (attempts, worker) for pk, attempts, worker in ConversionJob.objects.filter(
        pk__in={pk for pk, _ in found.values()}, status=JobStatus.RUNNING).values_list("pk", "attempts", "worker")}
    alive = live_workers()
    removed = 0
    for path, (pk, attempt) in found.items():
        attempts, worker = running.get(pk, (None, ""))
        if attempts == attempt and worker in alive:
            continue
        shutil.rmtree(path, ignore_errors=True)
        logger.info("job=%s action=sweep-workdir path=%s", pk, path)
        removed += 1
    return removed


def reconcile_instance(instance: Instance) -> ReconcileReport:
    """One reconciler pass over an instance: request the conversion of every tag that an enabled
    rule matches and that has neither an accelerated twin nor an unfinished job (pushes whose
    webhook was lost, images older than their rule), mark twins gone from the registry missing,
    leave deleted or missing twins alone (and say so), and re-enqueue jobs stuck in the queue.
    Registry failures are reported, not raised; the next pass retries."""
    _requeue_stale(instance)
    with instance.registry_client() as client:
        try:
            found = scan(instance, client)
            report = _request_candidates(instance, client, found, JobTrigger.RECONCILER)
        except RegistryError as error:
            report = ReconcileReport(errors=[error.message])
    for twin in report.left_alone:
        logger.info("reconcile instance=%s left-alone=%s", instance.pk, twin)
    logger.info("reconcile instance=%s repositories=%s tags=%s requested=%s missing=%s left-alone=%s errors=%s",
                instance.pk, report.repositories, report.tags, report.requested, report.missing,
                len(report.left_alone), len(report.errors))
    return report


def _backfill_scan(rule: Rule, client: RegistryClient) -> Scan:
    if not rule.is_active:
        raise ValidationError(f"Rule '{rule.name}' is not active (disabled, or acceleration is off for its "
                              "instance); enable it first.")
    try:
        return scan(rule.instance, client, only_rule=rule)
    except RegistryError as error:
        raise ValidationError(f"Could not list the registry's images: {error.message}") from None


def preview_backfill(rule: Rule) -> ReconcileReport:
    """How many existing tags "Convert existing images" would convert (or whose deleted or missing
    twin it would re-create) for this rule; nothing is requested."""
    with rule.instance.registry_client() as client:
        found = _backfill_scan(rule, client)
    return ReconcileReport.of_scan(found, requested=len(found.candidates))


def backfill_rule(rule: Rule, requested_by=None) -> ReconcileReport:
    """Convert the existing images this rule matches that have no accelerated twin and no unfinished
    job, re-creating twins that were deleted or are missing."""
    with rule.instance.registry_client() as client:
        report = _request_candidates(rule.instance, client, _backfill_scan(rule, client), JobTrigger.BACKFILL,
                                     requested_by)
    logger.info("backfill rule=%s requested=%s recreate=%s", rule.pk, report.requested, report.recreate)
    return report
