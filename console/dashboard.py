"""Figures for the dashboard: instances, rules, pushes, jobs, clusters, the worker, the
getting-started checklist, and the charts of pushes, conversions, conversion time and storage."""

from dataclasses import dataclass, field
from datetime import timedelta

from django.db.models import Count, Exists, OuterRef, Q, Sum
from django.db.models.functions import TruncDay, TruncHour
from django.template.defaultfilters import filesizeformat
from django.utils import timezone
from django.utils.formats import date_format

from clusters.models import Cluster, Node
from console.charts import Chart, Series
from core.actions import worker_status
from core.aggregates import Percentile, Seconds
from pipeline import startup, twins
from pipeline.choices import COLOURS as PUSH_COLOURS
from pipeline.choices import JOB_COLOURS, JobStatus, PushOutcome, PushReason, PushSource, TwinState
from pipeline.models import AcceleratedImage, ConversionJob, PushEvent
from registries.models import Instance
from rules.models import Rule

RECENT_WINDOW = timedelta(hours=24)
RECENT_SKIPPED_LIMIT = 8


@dataclass(frozen=True)
class Step:
    """One step of the getting-started checklist."""

    label: str
    done: bool
    url_name: str
    hint: str


@dataclass
class Figures:
    """Everything the dashboard shows."""

    instances: dict
    rules: dict
    events: dict
    clusters: dict
    jobs: dict
    worker: dict
    checklist: list[Step] = field(default_factory=list)

    @property
    def getting_started(self) -> bool:
        """True while some checklist step is still open."""
        return any(not step.done for step in self.checklist)

    @property
    def steps_done(self) -> int:
        return sum(step.done for step in self.checklist)


def _events(now) -> dict:
    """Pushes of the last 24 hours by outcome, and the latest skips worth a look: not the registry
    reporting the console's own twin pushes (counted apart), not skips a later conversion resolved.
    Test deliveries (Send test event) are not pushes: left out."""
    since = now - RECENT_WINDOW
    pushes = PushEvent.objects.exclude(source=PushSource.TEST)
    counts = dict(pushes.filter(received_at__gte=since).values_list("outcome")
                  .annotate(n=Count("pk")).order_by())
    resolved = AcceleratedImage.objects.filter(
        instance=OuterRef("instance"), namespace=OuterRef("namespace"), repository=OuterRef("repository"),
        source_digest=OuterRef("digest"), state=TwinState.PRESENT).exclude(source_digest="")
    skipped = pushes.filter(outcome=PushOutcome.SKIPPED).select_related("instance")
    return {
        "since": since,
        "total": sum(counts.values()),
        "by_outcome": [{"value": value, "label": label, "count": counts.get(value, 0),
                        "colour": PUSH_COLOURS.get(value, "grey")} for value, label in PushOutcome.choices],
        "recent_skipped": list(skipped.exclude(reason=PushReason.ACCELERATED_TAG).exclude(Exists(resolved))
                               [:RECENT_SKIPPED_LIMIT]),
        "twin_pushes": skipped.filter(reason=PushReason.ACCELERATED_TAG, received_at__gte=since).count(),
        "ever": PushEvent.objects.exists(),
    }


def _jobs() -> dict:
    """Jobs by state, accelerated images present, the storage they add and what a node fetches to start
    them, and the latest failures."""
    counts = dict(ConversionJob.objects.values_list("status").annotate(n=Count("pk")).order_by())
    present = twins.storage(AcceleratedImage.objects.all())
    return {
        "by_state": [{"value": value, "label": label, "count": counts.get(value, 0),
                      "colour": JOB_COLOURS.get(value, "grey")} for value, label in JobStatus.choices],
        "accelerated": present.count,
        "storage_added": present.bytes,
        "startup": startup.total(AcceleratedImage.objects.all()),
        "recent_failures": list(ConversionJob.objects.filter(status=JobStatus.FAILED).select_related("instance")
                                .order_by("-finished_at", "-id")[:RECENT_SKIPPED_LIMIT]),
    }


CHART_DAYS = 14
CHART_HOURS = 24


def _buckets(now, unit: str, count: int) -> list:
    """The starts of the last `count` days or hours up to `now` (in the current time zone), oldest first."""
    local = timezone.localtime(now)
    if unit == "day":
        last = local.replace(hour=0, minute=0, second=0, microsecond=0)
        return [last - timedelta(days=back) for back in range(count - 1, -1, -1)]
    last = local.replace(minute=0, second=0, microsecond=0)
    return [last - timedelta(hours=back) for back in range(count - 1, -1, -1)]


def _per(rows, key: str, starts: list) -> list:
    """The `key` figure of each bucket start (0 where the query found no row)."""
    found = {timezone.localtime(row["bucket"]): row[key] for row in rows}
    return [found.get(start) or 0 for start in starts]


def _activity_chart(now, unit: str, count: int) -> Chart:
    """Pushes received (the console's own twin pushes left out) and conversions that succeeded or
    failed, per day or hour: three grouped queries."""
    starts = _buckets(now, unit, count)
    trunc = TruncDay if unit == "day" else TruncHour
    pushes = (PushEvent.objects.filter(received_at__gte=starts[0]).exclude(reason=PushReason.ACCELERATED_TAG)
              .annotate(bucket=trunc("received_at")).values("bucket").annotate(n=Count("pk")).order_by())
    finished = ConversionJob.objects.filter(finished_at__gte=starts[0]).annotate(bucket=trunc("finished_at")).values(
        "bucket").order_by()
    converted = finished.filter(status=JobStatus.SUCCEEDED).annotate(n=Count("pk"))
    failed = finished.filter(status=JobStatus.FAILED).annotate(n=Count("pk"))
    label = "M j" if unit == "day" else "H:i"
    span = f"the last {count} days" if unit == "day" else f"the last {count} hours"
    return Chart(
        id=f"activity-{unit}", title=f"Pushes and conversions per {unit}, {span}",
        description=f"Bars per {unit}: pushes received, conversions that succeeded and conversions that failed.",
        categories=[date_format(start, label) for start in starts],
        series=[Series("Pushes", _per(pushes, "n", starts)), Series("Converted", _per(converted, "n", starts)),
                Series("Failed", _per(failed, "n", starts))],
        empty_text=f"No pushes or conversions in {span}.", axis_label="count", counts=True)


def _succeeded_per_day(starts: list):
    return (ConversionJob.objects.filter(status=JobStatus.SUCCEEDED, finished_at__gte=starts[0])
            .exclude(started_at=None).annotate(bucket=TruncDay("finished_at")).values("bucket").order_by())


def _seconds(value: float) -> str:
    return f"{value:.0f} s" if value >= 10 else f"{value:.1f} s"


def _conversion_time_chart(now) -> Chart:
    """Median and 90th percentile of the time conversions took, per day (computed in the database)."""
    starts = _buckets(now, "day", CHART_DAYS)
    rows = list(_succeeded_per_day(starts).annotate(
        median=Percentile(Seconds("finished_at", "started_at"), 0.5),
        p90=Percentile(Seconds("finished_at", "started_at"), 0.9)))
    found = {timezone.localtime(row["bucket"]): row for row in rows}
    return Chart(
        id="conversion-time", title=f"Conversion time per day, the last {CHART_DAYS} days",
        description="Lines: the median and the 90th percentile of the time a successful conversion took, per day.",
        categories=[date_format(start, "M j") for start in starts],
        series=[Series("Median", [round(found[s]["median"], 1) if s in found else None for s in starts]),
                Series("90th percentile", [round(found[s]["p90"], 1) if s in found else None for s in starts])],
        kind="lines", value_text=_seconds, empty_text=f"No conversion succeeded in the last {CHART_DAYS} days.",
        axis_label="seconds")


def _storage_chart(now) -> Chart:
    """Bytes of accelerated images written per day: the size of each successful conversion's result."""
    starts = _buckets(now, "day", CHART_DAYS)
    rows = _succeeded_per_day(starts).annotate(added=Sum("result_size"))
    return Chart(
        id="storage-added", title=f"Storage added by accelerated twins per day, the last {CHART_DAYS} days",
        description="Bars: the size of the accelerated images that conversions wrote each day (manifests, "
                    "configs and layers).",
        categories=[date_format(start, "M j") for start in starts],
        series=[Series("Added", _per(rows, "added", starts))], value_text=filesizeformat,
        empty_text=f"No accelerated image was written in the last {CHART_DAYS} days.", axis_label="bytes")


def charts(now=None) -> list[Chart]:
    """The dashboard's pictures (see console.charts), each from queries that aggregate in the database."""
    now = now or timezone.now()
    return [_activity_chart(now, "day", CHART_DAYS), _activity_chart(now, "hour", CHART_HOURS),
            _conversion_time_chart(now), _storage_chart(now)]


def _checklist(figures: Figures) -> list[Step]:
    return [
        Step("Register a registry instance", figures.instances["total"] > 0, "registries:list",
             "Tell apparate where your registry is and how to log in to it."),
        Step("Enable acceleration on an instance", figures.instances["accelerated"] > 0, "registries:list",
             "Accelerated twins are stored beside the originals."),
        Step("Add an acceleration rule", figures.rules["enabled"] > 0, "rules:list",
             "Choose which namespaces, repositories and tags get converted."),
        Step("Configure the registry webhook", figures.events["ever"], "registries:list",
             "Paste the webhook configuration into your registry; ticked at the first push."),
        Step("Register a Kubernetes cluster", figures.clusters["total"] > 0, "clusters:list",
             "Label nodes and install the acceleration suite so they lazy-pull."),
    ]


def gather(now=None) -> Figures:
    """Collect the dashboard figures."""
    figures = Figures(
        instances=Instance.objects.aggregate(total=Count("pk"),
                                             accelerated=Count("pk", filter=Q(acceleration_enabled=True))),
        rules=Rule.objects.aggregate(total=Count("pk"), enabled=Count("pk", filter=Q(enabled=True))),
        events=_events(now or timezone.now()),
        clusters={"total": Cluster.objects.count(),
                  **Node.objects.aggregate(nodes=Count("pk"), labelled=Count("pk", filter=Q(labelled=True)))},
        jobs=_jobs(),
        worker=worker_status(now),
    )
    figures.checklist = _checklist(figures)
    return figures
