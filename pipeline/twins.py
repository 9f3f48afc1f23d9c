"""Accelerated images as records: written when a twin tag really is in the registry, marked deleted
(through the console) or missing (noticed gone), and the queries every consumer reads.

Nothing here talks to a registry: callers pass what they read there (a conversion, a re-tag, the
Images refresh, the reconciler). Deploy suggestions, the dashboard, metrics, backfill and the
reconciler ask these functions whether a twin exists instead of deciding on their own.
"""

from dataclasses import dataclass

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from pipeline.choices import JobStatus, TwinState
from pipeline.models import AcceleratedImage, ConversionJob, RegistryTag
from pipeline.naming import twin_tag


def wanted_tags(job: ConversionJob) -> list[str]:
    """The source tags whose twins a job makes: the tag it was requested for, then every further
    tag of the same content."""
    return [job.source_tag, *(tag for tag in job.twin_tags if tag != job.source_tag)]


STARTUP_FIELDS = ("startup_bytes", "full_pull_bytes", "startup_layers", "startup_error")
NO_STARTUP = {"startup_bytes": None, "full_pull_bytes": None, "startup_layers": None, "startup_error": ""}


def _has_startup(row: AcceleratedImage) -> bool:
    return row.startup_bytes is not None or bool(row.startup_error)


def startup_of(instance, twin_digest: str, row: AcceleratedImage | None = None) -> dict:
    """The startup figure (pipeline.startup) for a row that now points at `twin_digest`: its own when
    it already had one for that manifest, else the one any row of the instance has for the same
    manifest digest (same digest, same layers: twins made by re-tagging share it), else none yet."""
    if row is not None and row.twin_digest == twin_digest and _has_startup(row):
        return {name: getattr(row, name) for name in STARTUP_FIELDS}
    other = AcceleratedImage.objects.filter(instance=instance, twin_digest=twin_digest).filter(
        Q(startup_bytes__isnull=False) | ~Q(startup_error="")).only(*STARTUP_FIELDS).first()
    return {name: getattr(other, name) for name in STARTUP_FIELDS} if other else dict(NO_STARTUP)


def record_present(job: ConversionJob, tag: str, twin_digest: str, *, source_size: int | None = None,
                   twin_size: int | None = None, source_media_type: str = "", twin_media_type: str = "",
                   startup: dict | None = None) -> AcceleratedImage:
    """Record that `<tag><suffix>` now points at the job's accelerated image: call only after the
    manifest PUT succeeded. Also records the source tag as seen, so the Images page pairs them.
    Sizes and media types are what the caller read ("" or None: not known, kept as they were).
    `startup` is the figure the conversion recorded (pipeline.startup); without it the row keeps the
    one known for the manifest."""
    now = timezone.now()
    with transaction.atomic():
        row, created = AcceleratedImage.objects.select_for_update().get_or_create(
            instance=job.instance, namespace=job.namespace, repository=job.repository, twin_tag=twin_tag(tag),
            defaults={"source_tag": tag, "source_digest": job.source_digest, "twin_digest": twin_digest,
                      "job": job, "source_size": source_size, "twin_size": twin_size, "media_type": twin_media_type,
                      "state_changed_at": now, "state_reason": f"Pushed by job #{job.pk}.",
                      **(startup if startup is not None else startup_of(job.instance, twin_digest))},
        )
        if not created:
            figures = startup if startup is not None else startup_of(job.instance, twin_digest, row)
            row.media_type = twin_media_type or (row.media_type if row.twin_digest == twin_digest else "")
            if row.state != TwinState.PRESENT or row.twin_digest != twin_digest:
                row.state_changed_at = now
                row.state_reason = f"Pushed by job #{job.pk}."
            row.state, row.deleted_by = TwinState.PRESENT, None
            row.source_tag, row.source_digest, row.twin_digest, row.job = tag, job.source_digest, twin_digest, job
            row.source_size = source_size if source_size is not None else row.source_size
            row.twin_size = twin_size if twin_size is not None else row.twin_size
            for name, value in figures.items():
                setattr(row, name, value)
            row.save()
        RegistryTag.objects.update_or_create(
            instance=job.instance, namespace=job.namespace, repository=job.repository, tag=tag,
            defaults={"digest": job.source_digest, "seen_at": now, "error": "",
                      **({"size": source_size} if source_size is not None else {}),
                      **({"media_type": source_media_type} if source_media_type else {})},
        )
    return row


def mark_deleted(rows, user, door: str) -> list[AcceleratedImage]:
    """Mark twins deleted through the console (`door` is "web UI" or "API"); returns the rows changed."""
    now = timezone.now()
    who = user.get_username() if user is not None else "an unknown user"
    changed = []
    for row in rows.select_for_update():
        row.state, row.state_changed_at, row.deleted_by = TwinState.DELETED, now, user
        row.state_reason = f"Deleted through the {door} by {who} on {now:%Y-%m-%d %H:%M} UTC."
        row.save()
        changed.append(row)
    return changed


def mark_missing(rows, noticed_by: str, listed_at) -> int:
    """Mark present twins missing that a registry listing made at `listed_at` did not show.

    Rows written after the listing are left alone: their twin may have been pushed since.
    """
    now = timezone.now()
    return rows.filter(state=TwinState.PRESENT, updated_at__lt=listed_at).update(
        state=TwinState.MISSING, state_changed_at=now, updated_at=now,
        state_reason=f"Not in the registry at the {noticed_by} of {listed_at:%Y-%m-%d %H:%M} UTC: deleted outside "
                     "the console. Convert now or Retry re-creates it.",
    )


def of_repository(instance, namespace: str, repository: str) -> dict[str, AcceleratedImage]:
    """Twin tag → row, for one repository (every state)."""
    return {row.twin_tag: row for row in AcceleratedImage.objects.filter(
        instance=instance, namespace=namespace, repository=repository)}


def present(instance):
    """The instance's twins that are in the registry as far as the console knows."""
    return AcceleratedImage.objects.filter(instance=instance, state=TwinState.PRESENT)


def row_of_tag(instance, namespace: str, repository: str, tag: str) -> AcceleratedImage | None:
    """The twin row of a source tag (any state), or None when the tag never had a twin."""
    return AcceleratedImage.objects.filter(instance=instance, namespace=namespace, repository=repository,
                                           twin_tag=twin_tag(tag)).select_related("instance", "job").first()


def row_of_digest(instance, namespace: str, repository: str, digest: str) -> AcceleratedImage | None:
    """A present twin whose twin or source manifest has this digest."""
    return present(instance).filter(Q(twin_digest=digest) | Q(source_digest=digest), namespace=namespace,
                                    repository=repository).select_related("instance").first()


def gone_for_content(instance, namespace: str, repository: str, digest: str) -> AcceleratedImage | None:
    """A twin of this content (source digest) that was deleted or is missing, if any."""
    return AcceleratedImage.objects.filter(
        instance=instance, namespace=namespace, repository=repository, source_digest=digest,
        state__in=[TwinState.DELETED, TwinState.MISSING]).order_by("-state_changed_at").first()


def not_present_tags(job: ConversionJob) -> list[str]:
    """The job's wanted tags whose twin of this content is not in the registry: never tagged, or
    deleted, or missing. A tag that has moved on to other content (its twin row, or its source row,
    is of another digest) is not counted."""
    wanted = wanted_tags(job)
    where = {"instance": job.instance, "namespace": job.namespace, "repository": job.repository}
    rows = {row.twin_tag: row for row in AcceleratedImage.objects.filter(
        **where, twin_tag__in=[twin_tag(tag) for tag in wanted])}
    seen = dict(RegistryTag.objects.filter(**where, tag__in=wanted).values_list("tag", "digest"))

    def lacking(tag: str) -> bool:
        row = rows.get(twin_tag(tag))
        if row is None:
            return seen.get(tag, job.source_digest) == job.source_digest
        return row.source_digest == job.source_digest and not row.is_present

    return [tag for tag in wanted if lacking(tag)]


def latest_job_of_tag(instance, namespace: str, repository: str, tag: str) -> ConversionJob | None:
    """The newest job that converts `tag`, as its source tag or as a further tag of the same content
    (checked in Python: SQLite cannot search JSON lists)."""
    jobs = ConversionJob.objects.filter(instance=instance, namespace=namespace, repository=repository).order_by(
        "-created_at", "-pk")
    return next((job for job in jobs.iterator() if job.source_tag == tag or tag in job.twin_tags), None)


def current(instance, limit: int) -> list[AcceleratedImage]:
    """Present twins that are the current acceleration of their tag, by repository and tag.

    A twin is stale (left out) when a newer job of its source tag, for other content, has not
    succeeded: the tag was pushed again and is converting, or that conversion failed.
    """
    newer_unfinished = [job for job in ConversionJob.objects.filter(instance=instance).exclude(
        status=JobStatus.SUCCEEDED).only("namespace", "repository", "source_tag", "twin_tags", "created_at",
                                         "source_digest")]
    rows = []
    for row in present(instance).select_related("instance", "job").order_by("namespace", "repository", "twin_tag"):
        made = row.job.created_at if row.job else row.created_at
        if any(job.namespace == row.namespace and job.repository == row.repository and job.created_at > made
               and job.source_digest != row.source_digest and row.source_tag in (job.source_tag, *job.twin_tags)
               for job in newer_unfinished):
            continue
        rows.append(row)
        if len(rows) >= limit:
            break
    return rows


@dataclass(frozen=True)
class Storage:
    """How many twins are present and the registry storage they add (a manifest shared by several
    twin tags counts once)."""

    count: int
    bytes: int


def storage(rows) -> Storage:
    sizes = dict(rows.filter(state=TwinState.PRESENT).values_list("twin_digest", "twin_size"))
    return Storage(rows.filter(state=TwinState.PRESENT).count(), sum(size or 0 for size in sizes.values()))


def describe_gone(row: AcceleratedImage) -> str:
    """Why a twin is not there, for deploy warnings and the Images page."""
    name = f"{row.path}:{row.twin_tag}"
    if row.state == TwinState.DELETED:
        return f"Its accelerated image {name} was deleted. {row.state_reason}"
    return f"Its accelerated image {name} is missing from the registry. {row.state_reason}"

