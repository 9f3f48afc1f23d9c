"""The Images page's view of each registry: source tags beside their accelerated twins, from rows.

`refresh_images` runs in a worker (an Images refresh operation): it walks the registry's catalog,
tag lists and manifests through the instance's client and updates the rows: `RegistryTag` for
source tags, `AcceleratedImage` for twins (a twin found that the console has no row for is
recorded; a present twin that is gone is marked missing). `list_images` builds one page from those
rows alone, so a page view costs a few queries whatever the size of the registry. A twin whose
source tag is gone is an orphan. Deleting goes by manifest digest and touches only the image asked
for: the accelerated manifest has no `subject` and shares no manifest with its source.
"""

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.core.paginator import Page, Paginator
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from converter.image import SOURCE_DIGEST_ANNOTATION
from converter.registry import DeletionDisabled, RegistryClient, RegistryError, RegistryNotFound
from core.audit import record
from pipeline import twins
from pipeline.choices import OperationKind, OperationStatus, TwinState
from pipeline.models import AcceleratedImage, ConversionJob, Operation, RegistryTag
from pipeline.naming import is_twin_tag, source_tag
from registries.models import Instance

logger = logging.getLogger("apparate.jobs")

ROWS_PER_PAGE = 100  # tags (with their twins) per page of the Images view and API
PROGRESS_EVERY = 10  # repositories between progress writes of a refresh


# --- Reading images from the registry (in workers only) ------------------------------------------


@dataclass(frozen=True)
class ImageRead:
    digest: str
    size: int  # manifests, configs and layers (every platform of an index)
    source_digest: str = ""  # what an accelerated manifest says it was converted from


def read_image(client: RegistryClient, path: str, reference: str) -> ImageRead:
    """Digest and size of one image (an index is summed over its platforms)."""
    manifest = client.get_manifest(path, reference)
    document = manifest.json()
    size = len(manifest.content)
    if manifest.is_index:
        for entry in document.get("manifests") or []:
            child = client.get_manifest(path, entry["digest"])
            size += _image_size(child.json()) + len(child.content)
    else:
        size += _image_size(document)
    return ImageRead(manifest.digest, size, (document.get("annotations") or {}).get(SOURCE_DIGEST_ANNOTATION, ""))


def _image_size(manifest: dict) -> int:
    return (manifest.get("config") or {}).get("size", 0) + sum(layer.get("size", 0) for layer in
                                                               manifest.get("layers") or [])


# --- The refresh ------------------------------------------------------------------------------


@dataclass
class RefreshReport:
    repositories: int = 0
    tags: int = 0
    twins: int = 0
    found: int = 0  # twins in the registry the console had no row for
    missing: int = 0  # present twins that are gone from the registry
    errors: list[str] = field(default_factory=list)


def _split(path: str) -> tuple[str, str]:
    namespace, slash, repository = path.partition("/")
    return (namespace, repository) if slash else ("", path)


def _refresh_repository(instance: Instance, client: RegistryClient, path: str, sizes: dict[str, int],
                        report: RefreshReport) -> None:
    namespace, repository = _split(path)
    listed_at = timezone.now()
    try:
        tags = client.tags(path)
    except RegistryNotFound:
        tags = []  # deleted since the catalog was read: every row of it is gone
    except RegistryError as error:
        report.errors.append(f"{path}: {error.message}")
        return
    report.repositories += 1
    known = {row.tag: row for row in RegistryTag.objects.filter(instance=instance, namespace=namespace,
                                                                repository=repository)}
    rows = twins.of_repository(instance, namespace, repository)
    jobs = {job.result_digest: job for job in ConversionJob.objects.filter(
        instance=instance, namespace=namespace, repository=repository).exclude(result_digest="").order_by("created_at")}
    unchanged = []
    for tag in tags:
        try:
            head = client.head_manifest(path, tag)
        except RegistryError as error:
            report.errors.append(f"{path}:{tag}: {error.message}")
            continue
        if head is None:  # deleted while listing
            continue
        if is_twin_tag(tag):
            report.twins += 1
            _refresh_twin(instance, client, path, tag, head.digest, rows.get(tag), jobs, sizes, report)
            continue
        report.tags += 1
        row = known.get(tag)
        if row is not None and row.digest == head.digest and row.size is not None:
            unchanged.append(row.pk)
            continue
        values = {"digest": head.digest, "size": sizes.get(head.digest), "error": "", "seen_at": timezone.now()}
        if values["size"] is None:
            try:
                values["size"] = sizes[head.digest] = read_image(client, path, head.digest).size
            except RegistryError as error:
                values["error"] = error.message
        RegistryTag.objects.update_or_create(instance=instance, namespace=namespace, repository=repository, tag=tag,
                                             defaults=values)
    RegistryTag.objects.filter(pk__in=unchanged).update(seen_at=timezone.now())
    present = set(tags)
    RegistryTag.objects.filter(instance=instance, namespace=namespace, repository=repository,
                               seen_at__lt=listed_at).exclude(tag__in=present).delete()
    report.missing += twins.mark_missing(
        AcceleratedImage.objects.filter(instance=instance, namespace=namespace, repository=repository).exclude(
            twin_tag__in=present), "Images refresh", listed_at)


def _refresh_twin(instance, client, path: str, tag: str, digest: str, row: AcceleratedImage | None,
                  jobs: dict[str, ConversionJob], sizes: dict[str, int], report: RefreshReport) -> None:
    """A twin tag seen in the registry: (re)record its row when it is new, back, or changed."""
    if row is not None and row.is_present and row.twin_digest == digest and row.twin_size is not None:
        return
    try:
        image = read_image(client, path, digest)
    except RegistryError as error:
        report.errors.append(f"{path}:{tag}: {error.message}")
        return
    sizes[digest] = image.size
    job = jobs.get(digest)
    namespace, repository = _split(path)
    reason = ("Found in the registry by the Images refresh." if row is None else
              "In the registry again (seen by the Images refresh)." if not row.is_present else
              "The twin tag points at another manifest now (seen by the Images refresh).")
    report.found += row is None
    AcceleratedImage.objects.update_or_create(
        instance=instance, namespace=namespace, repository=repository, twin_tag=tag,
        defaults={"source_tag": source_tag(tag), "source_digest": image.source_digest or (job.source_digest if job
                  else ""), "twin_digest": digest, "twin_size": image.size, "job": job,
                  "state": TwinState.PRESENT, "state_changed_at": timezone.now(), "state_reason": reason,
                  "deleted_by": None},
    )


def refresh_images(instance: Instance, progress=None) -> RefreshReport:
    """Walk the instance's registry and bring the Images rows up to date (see the module doc).

    Raises RegistryError when the catalog cannot be read (nothing is changed then); errors on single
    repositories or tags are reported and leave their rows as they were.
    """
    report = RefreshReport()
    sizes = {digest: size for digest, size in RegistryTag.objects.filter(instance=instance).exclude(
        size=None).values_list("digest", "size")}
    with instance.registry_client() as client:
        listed_at = timezone.now()
        paths = client.catalog()
        for number, path in enumerate(paths, 1):
            _refresh_repository(instance, client, path, sizes, report)
            if progress is not None and number % PROGRESS_EVERY == 0:
                progress(number, len(paths))
    listed = {_split(path) for path in paths}
    gone = [(ns, repo) for ns, repo in RegistryTag.objects.filter(instance=instance, seen_at__lt=listed_at)
            .values_list("namespace", "repository").distinct() if (ns, repo) not in listed]
    gone += [(ns, repo) for ns, repo in twins.present(instance).values_list("namespace", "repository").distinct()
             if (ns, repo) not in listed and (ns, repo) not in gone]
    for namespace, repository in gone:  # whole repositories deleted from the registry
        RegistryTag.objects.filter(instance=instance, namespace=namespace, repository=repository,
                                   seen_at__lt=listed_at).delete()
        report.missing += twins.mark_missing(AcceleratedImage.objects.filter(
            instance=instance, namespace=namespace, repository=repository), "Images refresh", listed_at)
    logger.info("images-refresh instance=%s repositories=%s tags=%s twins=%s found=%s missing=%s errors=%s",
                instance.pk, report.repositories, report.tags, report.twins, report.found, report.missing,
                len(report.errors))
    return report


@dataclass
class RefreshState:
    """When the rows were last brought up to date, and whether a refresh is under way."""

    as_of: datetime | None
    active: Operation | None
    failed: Operation | None  # the last refresh, when it failed after the last success

    @property
    def stale(self) -> bool:
        age = timedelta(seconds=settings.APPARATE_IMAGES_REFRESH_AGE)
        return self.as_of is None or timezone.now() - self.as_of > age


def refresh_state(instance: Instance) -> RefreshState:
    refreshes = Operation.objects.filter(instance=instance, kind=OperationKind.REFRESH_IMAGES)
    done = refreshes.filter(status=OperationStatus.SUCCEEDED).order_by("-finished_at").first()
    failed = refreshes.filter(status=OperationStatus.FAILED).order_by("-finished_at").first()
    if failed is not None and done is not None and failed.finished_at < done.finished_at:
        failed = None
    active = refreshes.filter(status__in=[OperationStatus.QUEUED, OperationStatus.RUNNING]).first()
    return RefreshState(done.finished_at if done else None, active, failed)


# --- One page, from rows ------------------------------------------------------------------------


@dataclass
class TagRow:
    """One source tag and its twin (either may be missing: an orphan has no source)."""

    tag: str
    source: RegistryTag | None
    twin: AcceleratedImage | None
    job: ConversionJob | None = None

    @property
    def orphan(self) -> bool:
        return self.source is None and self.twin is not None and self.twin.is_present


@dataclass
class RepositoryRows:
    path: str
    rows: list[TagRow] = field(default_factory=list)


@dataclass
class Catalogue:
    """One page of an instance's images, and the storage of everything the filters match."""

    repositories: list[RepositoryRows]
    page: Page
    original_bytes: int
    accelerated_bytes: int
    refresh: RefreshState


def _filtered(model, instance: Instance, namespace: str, repository: str):
    rows = model.objects.filter(instance=instance)
    if namespace:
        rows = rows.filter(namespace=namespace)
    if repository:
        rows = rows.filter(repository__contains=repository)
    return rows


def list_images(instance: Instance, namespace: str = "", repository: str = "", page: int | str = 1) -> Catalogue:
    """One page of the instance's tags (filtered by namespace and a repository substring), each beside
    its twin and latest job, grouped by repository. Reads rows only (see `refresh_images`)."""
    sources = _filtered(RegistryTag, instance, namespace, repository)
    twin_rows = _filtered(AcceleratedImage, instance, namespace, repository)
    keys = sources.values_list("namespace", "repository", "tag").union(
        twin_rows.filter(state=TwinState.PRESENT).values_list("namespace", "repository", "source_tag"),
    ).order_by("namespace", "repository", "tag")
    shown = Paginator(keys, ROWS_PER_PAGE).get_page(page)
    paths = {(ns, repo) for ns, repo, _ in shown}
    where = Q(pk__in=[])
    for ns, repo in paths:
        where |= Q(namespace=ns, repository=repo)
    source_of = {(row.namespace, row.repository, row.tag): row for row in sources.filter(where)}
    twin_of = {(row.namespace, row.repository, row.source_tag): row
               for row in twin_rows.filter(where).select_related("job", "deleted_by")}
    latest: dict[tuple[str, str, str], ConversionJob] = {}
    for job in ConversionJob.objects.filter(where, instance=instance).order_by("created_at", "id"):
        for tag in twins.wanted_tags(job):
            latest[(job.namespace, job.repository, tag)] = job  # the newest job of each tag wins
    repositories: list[RepositoryRows] = []
    for key in shown:
        ns, repo, tag = key
        path = f"{ns}/{repo}" if ns else repo
        if not repositories or repositories[-1].path != path:
            repositories.append(RepositoryRows(path))
        twin = twin_of.get(key)
        repositories[-1].rows.append(TagRow(tag, source_of.get(key), twin, latest.get(key)))
    originals = dict(sources.exclude(size=None).values_list("digest", "size"))  # a shared digest counts once
    return Catalogue(repositories, shown, sum(originals.values()), twins.storage(twin_rows).bytes,
                     refresh_state(instance))


# --- Deleting ---------------------------------------------------------------------------------


class DeleteRefused(Exception):
    """The registry would not delete the manifest; `message` says why.

    `kind` is DISABLED (deletion switched off in the registry), NOT_FOUND (no such manifest),
    INVALID (not a digest) or FAILED (any other registry answer).
    """

    DISABLED, NOT_FOUND, INVALID, FAILED = "disabled", "not_found", "invalid", "failed"

    def __init__(self, message: str, kind: str = FAILED):
        super().__init__(message)
        self.message = message
        self.kind = kind


DOORS = {"ui": "web UI", "api": "API"}


def tags_of_digest(instance: Instance, path: str, digest: str) -> list[str]:
    """Every tag of the repository that the rows know to point at `digest` (originals and accelerated
    ones): deleting the manifest by digest takes all of them. Sorted; from the rows, no registry call."""
    namespace, repository = _split(path)
    sources = RegistryTag.objects.filter(instance=instance, namespace=namespace, repository=repository, digest=digest)
    twins_there = AcceleratedImage.objects.filter(instance=instance, namespace=namespace, repository=repository,
                                                  twin_digest=digest, state=TwinState.PRESENT)
    return sorted({*sources.values_list("tag", flat=True), *twins_there.values_list("twin_tag", flat=True)})


def delete_image(instance: Instance, path: str, digest: str, user=None, door: str = "ui") -> int:
    """Delete one image (manifest) by digest; its twin or source is a different manifest and stays.

    Every tag pointing at the digest goes with it: twins among them are marked deleted (by `user`,
    through `door`: "ui" or "api"), source tags leave the Images rows. Each is audited. Returns how
    many rows changed. Raises DeleteRefused with the registry's answer, e.g. when deletion is
    disabled there; then nothing changes.
    """
    with instance.registry_client() as client:
        try:
            client.delete_manifest(path, digest)
        except DeletionDisabled as error:
            raise DeleteRefused(f"The registry has image deletion disabled: {error.message}",
                                DeleteRefused.DISABLED) from None
        except ValueError as error:
            raise DeleteRefused(str(error), DeleteRefused.INVALID) from None
        except RegistryNotFound as error:
            raise DeleteRefused(f"No such image: {error.message}", DeleteRefused.NOT_FOUND) from None
        except RegistryError as error:
            raise DeleteRefused(error.message) from None
    namespace, repository = _split(path)
    with transaction.atomic():
        deleted = twins.mark_deleted(AcceleratedImage.objects.filter(
            instance=instance, namespace=namespace, repository=repository, twin_digest=digest), user, DOORS[door])
        for row in deleted:
            record("delete", row, {"twin_digest": {"old": digest, "new": None},
                                   "state": {"old": TwinState.PRESENT, "new": TwinState.DELETED}})
        sources = list(RegistryTag.objects.filter(instance=instance, namespace=namespace, repository=repository,
                                                  digest=digest))
        for row in sources:
            record("delete", row, {"digest": {"old": digest, "new": None}})
        RegistryTag.objects.filter(pk__in=[row.pk for row in sources]).delete()
        if not deleted and not sources:  # an image the rows did not know of: still audited
            record("delete", RegistryTag(instance=instance, namespace=namespace, repository=repository,
                                         tag="(untagged)", digest=digest), {"digest": {"old": digest, "new": None}})
    logger.info("image-delete instance=%s image=%s@%s twins=%s sources=%s", instance.pk, path, digest, len(deleted),
                len(sources))
    return len(deleted) + len(sources)
