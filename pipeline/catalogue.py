"""The Images page's view of each registry: source tags beside their accelerated twins, from rows.

`refresh_images` runs in a worker (an Images refresh operation): it walks the registry's catalog,
tag lists and manifests through the instance's client and updates the rows: `RegistryTag` for
source tags, `AcceleratedImage` for twins (a twin found that the console has no row for is
recorded; a present twin that is gone is marked missing). The registry is read from a pool of
threads; the rows are read and written by the refresh's own thread only. `list_images` builds one
page from those rows alone, so a page view costs a few queries whatever the size of the registry.
A twin whose source tag is gone is an orphan. Deleting goes by manifest digest and touches only the image asked
for: the accelerated manifest has no `subject` and shares no manifest with its source.
"""

import logging
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.paginator import Page, Paginator
from django.db import transaction
from django.db.models import Max, Q
from django.utils import timezone

from converter.image import SOURCE_DIGEST_ANNOTATION
from converter.reference import InvalidReference, parse_reference
from converter.registry import DeletionDisabled, ManifestInfo, RegistryClient, RegistryError, RegistryNotFound
from core.audit import record
from pipeline import twins
from pipeline.choices import OperationKind, OperationStatus, TwinState
from pipeline.models import AcceleratedImage, ConversionJob, Operation, PushEvent, RegistryTag
from pipeline.naming import is_twin_tag, source_tag
from registries.models import Instance
from rules.matching import MatchOutcome, match_image
from rules.validators import PatternError, compile_uncached, validate_namespace

logger = logging.getLogger("apparate.jobs")

ROWS_PER_PAGE = 100  # tags (with their twins) per page of the Images view and API
PROGRESS_EVERY = 10  # repositories between progress writes of a refresh


# --- Reading images from the registry (in workers only) ------------------------------------------


@dataclass(frozen=True)
class ImageRead:
    digest: str
    size: int  # manifests, configs and layers (every platform of an index)
    source_digest: str = ""  # what an accelerated manifest says it was converted from
    media_type: str = ""


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
    return ImageRead(manifest.digest, size, (document.get("annotations") or {}).get(SOURCE_DIGEST_ANNOTATION, ""),
                     manifest.media_type)


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


def split_path(path: str) -> tuple[str, str]:
    namespace, slash, repository = path.partition("/")
    return (namespace, repository) if slash else ("", path)


def _source_current(row: RegistryTag | None, head: ManifestInfo) -> bool:
    """The source tag's row already says what the HEAD says (and knows the size and, when the
    registry tells it, the media type): only its `seen_at` moves."""
    return row is not None and row.digest == head.digest and row.size is not None and (
        row.media_type or not head.media_type)


def _source_needs_read(head: ManifestInfo, sized) -> bool:
    """A changed source tag is read when its digest's size is not in `sized` (digests of known size)
    or the HEAD gave no media type."""
    return head.digest not in sized or not head.media_type


def _twin_current(row: AcceleratedImage | None, head: ManifestInfo) -> bool:
    """The twin's row is present, at the HEAD's digest, with its size: nothing to read."""
    return row is not None and row.is_present and row.twin_digest == head.digest and row.twin_size is not None


def _reads_ahead(tags: list[str], heads: list[Future], known: dict[str, RegistryTag],
                 rows: dict[str, AcceleratedImage], sizes: dict[str, int]) -> list[str]:
    """The digests the walk in `_refresh_repository` will read, in order, if every read succeeds:
    what the pool starts reading as soon as the HEADs are in. Waits for the HEADs."""
    sized, wanted = set(sizes), {}
    for tag, pending in zip(tags, heads, strict=True):
        if pending.exception() is not None or (head := pending.result()) is None:
            continue
        if is_twin_tag(tag):
            needed = not _twin_current(rows.get(tag), head)
        else:
            needed = not _source_current(known.get(tag), head) and _source_needs_read(head, sized)
        if needed:
            wanted[head.digest] = None
            sized.add(head.digest)
    return list(wanted)


class _Reads:
    """`read_image` of one repository's manifests by digest, on the pool, started ahead for the digests
    given. A successful read serves every tag of its digest (same digest, same manifest); a failed one
    is raised to the tag that asked, and the next tag that asks reads it again, as the walk did when
    it read for each tag in turn."""

    def __init__(self, pool: ThreadPoolExecutor, client: RegistryClient, path: str, ahead: list[str]):
        self._pool, self._client, self._path = pool, client, path
        self._reads = {digest: self._start(digest) for digest in ahead}

    def _start(self, digest: str) -> Future:
        return self._pool.submit(read_image, self._client, self._path, digest)

    def __call__(self, digest: str) -> ImageRead:
        read = self._reads.pop(digest, None) or self._start(digest)
        image = read.result()  # a RegistryError leaves nothing behind to reuse
        self._reads[digest] = read
        return image


def _refresh_repository(instance: Instance, client: RegistryClient, pool: ThreadPoolExecutor, path: str,
                        sizes: dict[str, int], report: RefreshReport) -> None:
    """Bring one repository's rows up to date. The registry is read on `pool` (every tag's HEAD at
    once, then the manifests that need reading), the rows are written here in tag order, so the
    report and the rows come out as if each tag were read in turn."""
    namespace, repository = split_path(path)
    listed_at = timezone.now()
    try:
        tags = client.tags(path)
    except RegistryNotFound:
        tags = []  # deleted since the catalog was read: every row of it is gone
    except RegistryError as error:
        report.errors.append(f"{path}: {error.message}")
        return
    heads = [pool.submit(client.head_manifest, path, tag) for tag in tags]
    report.repositories += 1
    known = {row.tag: row for row in RegistryTag.objects.filter(instance=instance, namespace=namespace,
                                                                repository=repository)}
    rows = twins.of_repository(instance, namespace, repository)
    jobs = {job.result_digest: job for job in ConversionJob.objects.filter(
        instance=instance, namespace=namespace, repository=repository).exclude(result_digest="").order_by("created_at")}
    read = _Reads(pool, client, path, _reads_ahead(tags, heads, known, rows, sizes))
    unchanged = []
    for tag, pending in zip(tags, heads, strict=True):
        try:
            head = pending.result()
        except RegistryError as error:
            report.errors.append(f"{path}:{tag}: {error.message}")
            continue
        if head is None:  # deleted while listing
            continue
        if is_twin_tag(tag):
            report.twins += 1
            _refresh_twin(instance, read, path, tag, head, rows.get(tag), jobs, sizes, report)
            continue
        report.tags += 1
        row = known.get(tag)
        if _source_current(row, head):
            unchanged.append(row.pk)
            continue
        values = {"digest": head.digest, "size": sizes.get(head.digest), "media_type": head.media_type, "error": "",
                  "seen_at": timezone.now()}
        if _source_needs_read(head, sizes):
            try:
                image = read(head.digest)
            except RegistryError as error:
                values["error"] = error.message
            else:
                values["size"] = sizes[head.digest] = image.size
                values["media_type"] = image.media_type
        RegistryTag.objects.update_or_create(instance=instance, namespace=namespace, repository=repository, tag=tag,
                                             defaults=values)
    RegistryTag.objects.filter(pk__in=unchanged).update(seen_at=timezone.now())
    present = set(tags)
    RegistryTag.objects.filter(instance=instance, namespace=namespace, repository=repository,
                               seen_at__lt=listed_at).exclude(tag__in=present).delete()
    report.missing += twins.mark_missing(
        AcceleratedImage.objects.filter(instance=instance, namespace=namespace, repository=repository).exclude(
            twin_tag__in=present), "Images refresh", listed_at)


def _refresh_twin(instance, read: Callable[[str], ImageRead], path: str, tag: str, head: ManifestInfo,
                  row: AcceleratedImage | None, jobs: dict[str, ConversionJob], sizes: dict[str, int],
                  report: RefreshReport) -> None:
    """A twin tag seen in the registry: (re)record its row when it is new, back, changed, or its media
    type is not known yet."""
    digest = head.digest
    if _twin_current(row, head):
        if not row.media_type and head.media_type:  # recorded before media types were
            AcceleratedImage.objects.filter(pk=row.pk).update(media_type=head.media_type)
        return
    try:
        image = read(digest)
    except RegistryError as error:
        report.errors.append(f"{path}:{tag}: {error.message}")
        return
    sizes[digest] = image.size
    job = jobs.get(digest)
    namespace, repository = split_path(path)
    reason = ("Found in the registry by the Images refresh." if row is None else
              "In the registry again (seen by the Images refresh)." if not row.is_present else
              "The twin tag points at another manifest now (seen by the Images refresh).")
    report.found += row is None
    AcceleratedImage.objects.update_or_create(
        instance=instance, namespace=namespace, repository=repository, twin_tag=tag,
        defaults={"source_tag": source_tag(tag), "source_digest": image.source_digest or (job.source_digest if job
                  else ""), "twin_digest": digest, "twin_size": image.size, "media_type": image.media_type, "job": job,
                  "state": TwinState.PRESENT, "state_changed_at": timezone.now(), "state_reason": reason,
                  "deleted_by": None, **twins.startup_of(instance, digest, row)},
    )


@contextmanager
def _registry_pool() -> Iterator[ThreadPoolExecutor]:
    """The threads that read the registry for one refresh, APPARATE_IMAGES_REFRESH_CONCURRENCY of them.
    They only call the registry client (thread-safe, see RegistryClient): every row is read and
    written by the refresh's own thread. Leaving early (an error, a time limit) drops what is queued."""
    pool = ThreadPoolExecutor(settings.APPARATE_IMAGES_REFRESH_CONCURRENCY, thread_name_prefix="images-refresh")
    try:
        yield pool
    finally:
        pool.shutdown(cancel_futures=True)


def refresh_images(instance: Instance, progress=None) -> RefreshReport:
    """Walk the instance's registry and bring the Images rows up to date (see the module doc).

    Raises RegistryError when the catalog cannot be read (nothing is changed then); errors on single
    repositories or tags are reported and leave their rows as they were. The manifests are read
    APPARATE_IMAGES_REFRESH_CONCURRENCY at a time (see `_refresh_repository`).
    """
    report = RefreshReport()
    sizes = {digest: size for digest, size in RegistryTag.objects.filter(instance=instance).exclude(
        size=None).values_list("digest", "size")}
    with instance.registry_client() as client, _registry_pool() as pool:
        listed_at = timezone.now()
        paths = client.catalog()
        for number, path in enumerate(paths, 1):
            _refresh_repository(instance, client, pool, path, sizes, report)
            if progress is not None and number % PROGRESS_EVERY == 0:
                progress(number, len(paths))
    listed = {split_path(path) for path in paths}
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
    event: PushEvent | None = None  # the tag's latest push, for a row without a present twin

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
    events = _latest_pushes(instance, where, [key for key in shown if not (
        twin_of.get(key) is not None and twin_of[key].is_present)])
    repositories: list[RepositoryRows] = []
    for key in shown:
        ns, repo, tag = key
        path = f"{ns}/{repo}" if ns else repo
        if not repositories or repositories[-1].path != path:
            repositories.append(RepositoryRows(path))
        twin = twin_of.get(key)
        repositories[-1].rows.append(TagRow(tag, source_of.get(key), twin, latest.get(key), events.get(key)))
    originals = dict(sources.exclude(size=None).values_list("digest", "size"))  # a shared digest counts once
    return Catalogue(repositories, shown, sum(originals.values()), twins.storage(twin_rows).bytes,
                     refresh_state(instance))


def _latest_pushes(instance: Instance, where: Q, keys: list[tuple[str, str, str]]) -> dict[tuple, PushEvent]:
    """The latest push event of each (namespace, repository, tag) in `keys`, in two queries."""
    if not keys:
        return {}
    latest_ids = PushEvent.objects.filter(where, instance=instance, tag__in={tag for _, _, tag in keys}).values(
        "namespace", "repository", "tag").order_by().annotate(latest=Max("id")).values_list("latest", flat=True)
    wanted = set(keys)
    return {key: event for event in PushEvent.objects.filter(pk__in=list(latest_ids)).select_related("matched_rule")
            if (key := (event.namespace, event.repository, event.tag)) in wanted}


@dataclass
class MissingTwin:
    """Why a tag has no accelerated twin: what its twin row, its latest job and its latest push say,
    and, when no push of it was received, how the instance's rules judge it now."""

    instance: Instance
    path: str
    tag: str
    twin: AcceleratedImage | None
    job: ConversionJob | None
    event: PushEvent | None
    rules: MatchOutcome | None  # only when no push of the tag was received
    rules_error: str = ""  # the address cannot be matched against rules


def explain_missing_twin(instance: Instance, path: str, tag: str) -> MissingTwin:
    """Everything the console knows about why `path:tag` has no twin (reads rows and rules only)."""
    namespace, repository = split_path(path)
    twin = twins.row_of_tag(instance, namespace, repository, tag)
    job = twins.latest_job_of_tag(instance, namespace, repository, tag)
    event = PushEvent.objects.filter(instance=instance, namespace=namespace, repository=repository,
                                     tag=tag).select_related("matched_rule", "job").first()
    outcome, error = None, ""
    if event is None:
        try:
            outcome = match_image(instance, parse_reference(f"{instance.host}/{path}:{tag}"))
        except InvalidReference as invalid:
            error = str(invalid)
    return MissingTwin(instance, path, tag, twin, job, event, outcome, error)


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
    namespace, repository = split_path(path)
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
    namespace, repository = split_path(path)
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


# --- Rule preview -------------------------------------------------------------------------------

PREVIEW_LIMIT = 50  # matching tags listed by a rule preview (all are counted)


@dataclass
class RulePreview:
    """Which known tags of an instance a rule's namespace and patterns would match: the first
    PREVIEW_LIMIT (by repository and tag) and how many in all, out of the namespace's known tags.
    `errors` maps a field to what is wrong with it; then nothing is matched."""

    matches: list[tuple[str, str]] = field(default_factory=list)  # (path, tag)
    total: int = 0
    known: int = 0
    errors: dict[str, str] = field(default_factory=dict)
    as_of: datetime | None = None

    @property
    def more(self) -> int:
        return self.total - len(self.matches)


def preview_rule(instance: Instance, namespace: str, repository_pattern: str, tag_pattern: str,
                 limit: int = PREVIEW_LIMIT) -> RulePreview:
    """Match a rule being edited against the instance's tags as last seen (RegistryTag rows, kept by
    the Images refresh and by conversions); nothing is read from the registry. Patterns are compiled
    once and not cached: whatever anyone types costs no memory."""
    preview = RulePreview(as_of=refresh_state(instance).as_of)
    try:
        validate_namespace(namespace)
    except ValidationError as error:
        preview.errors["namespace"] = " ".join(error.messages) if namespace else "Enter the namespace."
    compiled = {}
    for name, pattern in (("repository_pattern", repository_pattern), ("tag_pattern", tag_pattern)):
        try:
            compiled[name] = compile_uncached(pattern) if pattern else None
        except PatternError as error:
            preview.errors[name] = str(error)
    if preview.errors:
        return preview
    repository, tag = compiled["repository_pattern"], compiled["tag_pattern"]
    rows = RegistryTag.objects.filter(instance=instance, namespace=namespace).order_by("repository", "tag")
    for repo, name in rows.values_list("repository", "tag").iterator():
        preview.known += 1
        if (repository is None or repository.fullmatch(repo)) and (tag is None or tag.fullmatch(name)):
            preview.total += 1
            if len(preview.matches) < limit:
                preview.matches.append((f"{namespace}/{repo}", name))
    return preview
