"""Figures for the dashboard: instances, rules, pushes, jobs, clusters, the worker, and the
getting-started checklist."""

from dataclasses import dataclass, field
from datetime import timedelta

from django.db.models import Count, Exists, OuterRef, Q
from django.utils import timezone

from clusters.models import Cluster, Node
from core.actions import worker_status
from pipeline import twins
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
    """Jobs by state, accelerated images present and the storage they add, and the latest failures."""
    counts = dict(ConversionJob.objects.values_list("status").annotate(n=Count("pk")).order_by())
    present = twins.storage(AcceleratedImage.objects.all())
    return {
        "by_state": [{"value": value, "label": label, "count": counts.get(value, 0),
                      "colour": JOB_COLOURS.get(value, "grey")} for value, label in JobStatus.choices],
        "accelerated": present.count,
        "storage_added": present.bytes,
        "recent_failures": list(ConversionJob.objects.filter(status=JobStatus.FAILED).select_related("instance")
                                .order_by("-finished_at", "-id")[:RECENT_SKIPPED_LIMIT]),
    }


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
