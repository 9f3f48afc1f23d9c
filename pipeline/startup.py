"""Startup bytes of the twins: what a lazy-pulling node fetches before a container can start,
compared with a full pull, recorded per twin, measured for older twins, and said in one sentence.

The figure of one layer blob is the converter's (`converter.startup`): its footer, its TOC and the
prioritized region up to `.prefetch.landmark`. A twin's figure sums its distinct layer blobs (a
blob listed twice is fetched once), and is compared with what a full pull fetches: those blobs in
full. Manifests and config are left out of both: a node fetches them either way.

- A conversion records the figure from the converter's result (`from_result`): per platform, per
  distinct layer `{platform, digest, startup_bytes, size}` in `AcceleratedImage.startup_layers`,
  and the headline `startup_bytes` of `full_pull_bytes`. A node pulls one platform, so the figures
  of an index's platforms are alternatives, never added up: the headline is the index's first
  platform (the order the source index gives; its other platforms are in `startup_layers`). For a
  single-platform image `platform` is blank. Layers reused from the layer cache bring its figure.
- Twins made before the figure was recorded, or whose cached layers lacked it, are measured by a
  worker (`measure_pending`, a bounded batch per task): the manifest, then per distinct layer the
  footer and the TOC, by HTTP Range requests; never a whole blob. A layer whose figure the layer
  cache knows is not read at all. A layer that is not eStargz (a twin the console did not make)
  leaves the twin's figure unknown, with the reason.
- `figure(row)` says where a twin stands (known, pending, unknown) and `Figure.sentence` is the one
  text every page and the API show: "A node fetches 1.2 MB of 22.0 MB (5.5%) to start".
"""

import logging
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.template.defaultfilters import filesizeformat
from django.utils import timezone

from converter.errors import EstargzBlobError
from converter.image import OCI_INDEX, ImageResult, platform_name
from converter.registry import IMAGE_MEDIA_TYPES, RegistryClient, RegistryError, RegistryProtocolError
from converter.startup import startup_bytes
from pipeline.choices import StartupState, TwinState
from pipeline.models import AcceleratedImage, LayerCacheEntry
from registries.models import Instance

logger = logging.getLogger("apparate.jobs")

# Layer media types an eStargz blob can have: gzip streams (any other cannot hold the footer).
GZIP_LAYER_TYPES = frozenset({"application/vnd.oci.image.layer.v1.tar+gzip",
                              "application/vnd.docker.image.rootfs.diff.tar.gzip"})


# --- The figure and its sentence ------------------------------------------------------------


def byte_text(count: int) -> str:
    """Bytes as the console's pages show them (Django's filesizeformat), with plain spaces."""
    return str(filesizeformat(count)).replace("\xa0", " ")


def percent_text(part: int, whole: int) -> str:
    """`part` as a share of `whole` (> 0): one decimal, ".0" dropped; never rounded to 0% or 100%
    unless it is exactly that ("<0.1%", ">99.9%")."""
    if part <= 0:
        return "0%"
    if part >= whole:
        return "100%"
    value = 100 * part / whole
    if value < 0.1:
        return "<0.1%"
    if value > 99.9:
        return ">99.9%"
    return f"{value:.1f}".removesuffix(".0") + "%"


@dataclass(frozen=True)
class Figure:
    """What a node fetches to start one twin (or several, for the dashboard's total)."""

    state: str  # StartupState
    startup_bytes: int | None = None
    full_pull_bytes: int | None = None
    reason: str = ""  # why it is unknown
    platform: str = ""  # the platform of the headline figure; blank for a single-platform image
    platforms: int = 1  # platforms with a figure (an index has several)

    @property
    def known(self) -> bool:
        return self.state == StartupState.KNOWN

    @property
    def percent(self) -> float | None:
        """startup_bytes / full_pull_bytes in percent (not rounded); None unless known with layers."""
        if not self.known or not self.full_pull_bytes:
            return None
        return 100 * self.startup_bytes / self.full_pull_bytes

    @property
    def share_text(self) -> str:
        """The percentage of the sentence ("5.5%"); blank unless known with layers."""
        return percent_text(self.startup_bytes, self.full_pull_bytes) if self.known and self.full_pull_bytes else ""

    @property
    def sentence(self) -> str:
        """The one text pages and the API show, e.g. "A node fetches 1.2 MB of 22.0 MB (5.5%) to start"."""
        if self.state == StartupState.PENDING:
            return "Not known yet what a node fetches to start: it is read from the registry in the background"
        if self.state == StartupState.UNKNOWN:
            return f"Unknown what a node fetches to start: {self.reason}"
        if not self.full_pull_bytes:
            return "A node fetches nothing to start: the image has no layers"
        return (f"A node fetches {byte_text(self.startup_bytes)} of {byte_text(self.full_pull_bytes)} "
                f"({self.share_text}) to start")

    @property
    def bar_width(self) -> float:
        """Width of the startup part of a 100-unit bar; at least 0.5 when something is fetched, so it shows."""
        if not self.known or not self.full_pull_bytes or not self.startup_bytes:
            return 0.0
        return round(min(100.0, max(0.5, 100 * self.startup_bytes / self.full_pull_bytes)), 2)


def figure(row: AcceleratedImage) -> Figure:
    """Where one twin's figure stands."""
    if row.startup_bytes is not None and row.full_pull_bytes is not None:
        platforms = list(dict.fromkeys(layer.get("platform", "") for layer in row.startup_layers or []))
        return Figure(StartupState.KNOWN, row.startup_bytes, row.full_pull_bytes,
                      platform=platforms[0] if platforms else "", platforms=max(1, len(platforms)))
    if row.startup_error:
        return Figure(StartupState.UNKNOWN, reason=row.startup_error)
    return Figure(StartupState.PENDING)


def twin_of_job(job) -> AcceleratedImage | None:
    """A twin row of the accelerated image the job made (its twins share one figure), preferring
    one whose figure is settled; reads `job.twins.all()`, so a prefetch serves it."""
    rows = [row for row in job.twins.all() if job.result_digest and row.twin_digest == job.result_digest]
    return next((row for row in rows if row.startup_bytes is not None or row.startup_error), rows[0] if rows else None)


@dataclass(frozen=True)
class Total:
    """The dashboard's figure over present twins: a layer blob shared by several twins counts once
    (a node starting them all fetches it once), and so does a twin manifest shared by several tags."""

    figure: Figure
    images: int  # distinct present twin manifests with a known figure
    pending: int
    unknown: int


def total(rows) -> Total:
    startup = whole = 0
    seen_layers: set[str] = set()
    known: set[str] = set()
    pending: set[str] = set()
    unknown: set[str] = set()
    for digest, layers, error, measured in rows.filter(state=TwinState.PRESENT).values_list(
            "twin_digest", "startup_layers", "startup_error", "startup_bytes"):
        if measured is None:
            (unknown if error else pending).add(digest)
            continue
        if digest in known:
            continue
        known.add(digest)
        headline = (layers or [{}])[0].get("platform", "")
        for layer in layers or []:
            if layer.get("platform", "") == headline and layer["digest"] not in seen_layers:
                seen_layers.add(layer["digest"])
                startup += layer["startup_bytes"]
                whole += layer["size"]
    return Total(Figure(StartupState.KNOWN, startup, whole), len(known), len(pending - known),
                 len(unknown - known))


# --- Recording: from a conversion, or measured in the registry ---------------------------------


@dataclass
class Measured:
    """A twin's figure as stored on its rows (`fields()`); `error` when it cannot be known."""

    layers: list[dict] = field(default_factory=list)
    error: str = ""

    def fields(self) -> dict:
        if self.error:
            return {"startup_bytes": None, "full_pull_bytes": None, "startup_layers": None,
                    "startup_error": self.error}
        headline = self.layers[0]["platform"] if self.layers else ""
        first = [layer for layer in self.layers if layer["platform"] == headline]
        complete = all(layer["startup_bytes"] is not None for layer in self.layers)
        return {"startup_bytes": sum(layer["startup_bytes"] for layer in first) if complete else None,
                "full_pull_bytes": sum(layer["size"] for layer in first) if complete else None,
                "startup_layers": self.layers, "startup_error": ""}


def _distinct(platform: str, layers) -> list[dict]:
    """One entry per distinct layer blob of a platform, in manifest order."""
    entries: dict[str, dict] = {}
    for digest, size, figure_bytes in layers:
        entries.setdefault(digest, {"platform": platform, "digest": digest, "startup_bytes": figure_bytes,
                                    "size": size})
    return list(entries.values())


def from_result(result: ImageResult) -> Measured:
    """The figure a conversion recorded; layers the cache gave without one stay null (measured later)."""
    indexed = result.media_type == OCI_INDEX
    layers = []
    for platform in result.platforms:
        layers += _distinct(platform.platform if indexed else "",
                            ((layer.digest, layer.size, layer.startup_bytes) for layer in platform.layers))
    return Measured(layers)


def _platform_manifests(client: RegistryClient, path: str, digest: str) -> list[tuple[str, dict]]:
    """(platform, manifest) of each platform image of the twin: the manifest itself, or the index's
    platform images (attestations and other artifacts left out, as the converter does)."""
    top = client.get_manifest(path, digest)
    if not top.is_index:
        return [("", top.json())]
    found = []
    for entry in top.json().get("manifests") or []:
        platform = platform_name(entry.get("platform") or {})
        if (entry.get("mediaType") not in IMAGE_MEDIA_TYPES or platform == "unknown/unknown"
                or (entry.get("annotations") or {}).get("vnd.docker.reference.type")):
            continue
        found.append((platform, client.get_manifest(path, entry["digest"]).json()))
    return found


def measure(client: RegistryClient, instance, path: str, digest: str, known: dict[str, int]) -> Measured:
    """Measure the twin `path@digest` in the registry: its manifests, then per distinct layer blob the
    footer and the TOC by Range requests, except blobs whose figure `known` or the instance's layer
    cache has (`known` gains every figure found). A layer that is not eStargz gives a Measured with
    `error`. RegistryErrors propagate."""
    platforms = [(platform, [(layer.get("digest", ""), layer.get("size"), layer.get("mediaType"))
                             for layer in manifest.get("layers") or []])
                 for platform, manifest in _platform_manifests(client, path, digest)]
    wanted = {blob for _, listed in platforms for blob, _, _ in listed} - set(known)
    known.update(LayerCacheEntry.objects.filter(instance=instance, digest__in=wanted, startup_bytes__isnull=False)
                 .values_list("digest", "startup_bytes"))
    layers = []
    for platform, listed in platforms:
        for number, (blob, size, media_type) in enumerate(listed, 1):
            if blob in known:
                continue
            where = f"layer {number} of {len(listed)}{f' ({platform})' if platform else ''}, {blob},"
            if media_type not in GZIP_LAYER_TYPES:
                return Measured(error=f"{where} is not eStargz: its media type '{media_type}' is not a gzip layer")
            try:
                known[blob] = startup_bytes(
                    lambda start, length, blob=blob: client.read_blob_range(path, blob, start, length), size).total
            except EstargzBlobError as error:
                return Measured(error=f"{where} is not eStargz: {error}")
        layers += _distinct(platform, ((blob, size, known[blob]) for blob, size, _ in listed))
    return Measured(layers)


@dataclass
class BatchReport:
    measured: int = 0  # twin manifests whose figure is now known
    unknown: int = 0  # ... whose figure cannot be known (reason stored)
    failed: int = 0  # ... the registry did not answer for; tried again later
    remaining: int = 0  # twin manifests of the instance still waiting, after this batch

    def as_dict(self) -> dict:
        return {"measured": self.measured, "unknown": self.unknown, "failed": self.failed,
                "remaining": self.remaining}


def pending(instance):
    """Present twins of the instance whose figure is neither known nor known to be unknown."""
    return AcceleratedImage.objects.filter(instance=instance, state=TwinState.PRESENT, startup_bytes=None,
                                           startup_error="")


def _due(instance):
    retry_before = timezone.now() - timedelta(seconds=settings.APPARATE_STARTUP_RETRY_AFTER)
    return pending(instance).filter(Q(startup_checked_at=None) | Q(startup_checked_at__lt=retry_before))


def measure_pending(instance, limit: int | None = None) -> BatchReport:
    """Measure up to `limit` (APPARATE_STARTUP_BATCH) twin manifests of the instance that wait for
    their figure, the longest-waiting first; every row of a manifest gets its figure. Idempotent: a
    row that got its figure meanwhile is left alone. A registry failure leaves the twin waiting,
    to be tried again after APPARATE_STARTUP_RETRY_AFTER seconds."""
    limit = limit or settings.APPARATE_STARTUP_BATCH
    report = BatchReport()
    batch = []
    waiting = _due(instance).order_by(F("startup_checked_at").asc(nulls_first=True), "pk")
    for row in waiting.only("namespace", "repository", "twin_digest", "startup_layers"):
        if all(row.twin_digest != other.twin_digest for other in batch):
            batch.append(row)
        if len(batch) >= limit:
            break
    if batch:
        known = {layer["digest"]: layer["startup_bytes"] for row in batch for layer in row.startup_layers or []
                 if layer.get("startup_bytes") is not None}
        with instance.registry_client() as client:
            for row in batch:
                _measure_one(instance, client, row, known, report)
    report.remaining = pending(instance).values("twin_digest").distinct().count()
    logger.info("startup-measure instance=%s measured=%s unknown=%s failed=%s remaining=%s", instance.pk,
                report.measured, report.unknown, report.failed, report.remaining)
    return report


def _measure_one(instance, client: RegistryClient, row: AcceleratedImage, known: dict[str, int],
                 report: BatchReport) -> None:
    rows = pending(instance).filter(twin_digest=row.twin_digest)
    try:
        measured = measure(client, instance, row.path, row.twin_digest, known)
    except RegistryProtocolError as error:
        if error.transient:
            return _failed(rows, row, error, report)
        measured = Measured(error=f"the registry's answer cannot be used: {error.message}")
    except RegistryError as error:
        return _failed(rows, row, error, report)
    values = measured.fields()
    rows.update(startup_checked_at=timezone.now(), **values)
    if measured.error:
        report.unknown += 1
        return None
    report.measured += 1
    for layer in measured.layers:  # a later conversion reusing the layer brings its figure
        LayerCacheEntry.objects.filter(instance=instance, digest=layer["digest"], startup_bytes=None).update(
            startup_bytes=layer["startup_bytes"])
    return None


def _failed(rows, row: AcceleratedImage, error: RegistryError, report: BatchReport) -> None:
    rows.update(startup_checked_at=timezone.now())
    report.failed += 1
    logger.warning("startup-measure twin=%s@%s error=%s", row.path, row.twin_digest, error.message)


# --- The background work ------------------------------------------------------------------------


def enqueue_measure(instance_id: int) -> None:
    """Measure the instance's waiting twins in a worker, once the current transaction commits."""
    from pipeline.tasks import measure_startup_task

    transaction.on_commit(lambda: measure_startup_task.delay(instance_id))


def run_measure(instance_id: int) -> BatchReport | None:
    """One bounded batch for one instance (the task's body); enqueues the next batch while twins
    wait and this one got somewhere, so a registry that keeps failing is not asked in a loop."""
    instance = Instance.objects.filter(pk=instance_id).first()
    if instance is None:
        return None
    report = measure_pending(instance)
    if report.remaining and report.measured + report.unknown and _due(instance).exists():
        enqueue_measure(instance_id)
    return report


def measure_all() -> int:
    """Beat's entry: one batch task per instance that has twins waiting for their figure."""
    ids = list(AcceleratedImage.objects.filter(state=TwinState.PRESENT, startup_bytes=None, startup_error="")
               .values_list("instance", flat=True).distinct())
    for instance_id in ids:
        enqueue_measure(instance_id)
    return len(ids)
