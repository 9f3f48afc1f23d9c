"""Figures for the dashboard, gathered only from the models that exist.

The apps grow issue by issue, so every figure is optional: a model that is not installed
(LookupError) or lacks a field simply leaves its figure out, and the dashboard still renders.
"""

import importlib
from dataclasses import dataclass, field
from datetime import timedelta

from django.apps import apps
from django.core.exceptions import FieldDoesNotExist
from django.db.models import Count, Q, Sum
from django.utils import timezone

from console.actions import worker_status

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
    """Everything the dashboard shows; None means "this part of the product is not installed"."""

    instances: dict | None = None
    rules: dict | None = None
    events: dict | None = None
    clusters: dict | None = None
    jobs: dict | None = None
    worker: dict = field(default_factory=dict)
    checklist: list[Step] = field(default_factory=list)

    @property
    def getting_started(self) -> bool:
        """True while some checklist step is still open."""
        return any(not step.done for step in self.checklist)

    @property
    def steps_done(self) -> int:
        return sum(step.done for step in self.checklist)


def _model(label: str):
    try:
        return apps.get_model(label)
    except LookupError:
        return None


def _has_fields(model, *names: str) -> bool:
    try:
        for name in names:
            model._meta.get_field(name)
    except FieldDoesNotExist:
        return False
    return True


def _colours(app_label: str) -> dict:
    """The app's `choices.COLOURS` map (value → badge colour), if it has one."""
    try:
        return getattr(importlib.import_module(f"{app_label}.choices"), "COLOURS", {})
    except ImportError:
        return {}


def _instances(figures: Figures) -> None:
    Instance = _model("registries.Instance")
    if Instance is None:
        return
    figures.instances = Instance.objects.aggregate(
        total=Count("pk"),
        accelerated=Count("pk", filter=Q(acceleration_enabled=True)),
    )


def _rules(figures: Figures) -> None:
    Rule = _model("rules.Rule")
    if Rule is None or not _has_fields(Rule, "enabled"):
        return
    figures.rules = Rule.objects.aggregate(total=Count("pk"), enabled=Count("pk", filter=Q(enabled=True)))


def _events(figures: Figures, now) -> None:
    PushEvent = _model("registries.PushEvent")
    if PushEvent is None or not _has_fields(PushEvent, "outcome", "received_at"):
        return
    since = now - RECENT_WINDOW
    recent = PushEvent.objects.filter(received_at__gte=since)
    counts = dict(recent.values_list("outcome").annotate(n=Count("pk")).order_by())
    colours = _colours("registries")
    by_outcome = [
        {"value": value, "label": label, "count": counts.get(value, 0), "colour": colours.get(value, "grey")}
        for value, label in PushEvent._meta.get_field("outcome").flatchoices
    ]
    skipped = PushEvent.objects.filter(outcome="skipped").select_related("instance")[:RECENT_SKIPPED_LIMIT]
    figures.events = {
        "since": since,
        "total": sum(counts.values()),
        "by_outcome": by_outcome,
        "recent_skipped": list(skipped),
        "ever": PushEvent.objects.exists(),
    }


def _clusters(figures: Figures) -> None:
    Cluster = _model("clusters.Cluster")
    if Cluster is None:
        return
    figures.clusters = {"total": Cluster.objects.count()}
    Node = _model("clusters.Node")
    if Node is not None:
        labelled = Q(labelled=True) if _has_fields(Node, "labelled") else Q(pk__in=[])
        figures.clusters |= Node.objects.aggregate(nodes=Count("pk"), labelled=Count("pk", filter=labelled))


def _jobs(figures: Figures) -> None:
    """Jobs by state, images accelerated, storage the twins add, and the latest failures."""
    ConversionJob = _model("rules.ConversionJob")
    if ConversionJob is None:
        return
    from rules.choices import JOB_COLOURS, JobStatus

    counts = dict(ConversionJob.objects.values_list("status").annotate(n=Count("pk")).order_by())
    succeeded = ConversionJob.objects.filter(status=JobStatus.SUCCEEDED)
    figures.jobs = {
        "by_state": [{"value": value, "label": label, "count": counts.get(value, 0),
                      "colour": JOB_COLOURS.get(value, "grey")} for value, label in JobStatus.choices],
        "accelerated": succeeded.count(),
        "storage_added": succeeded.aggregate(total=Sum("result_size"))["total"] or 0,
        "recent_failures": list(ConversionJob.objects.filter(status=JobStatus.FAILED).select_related("instance")
                                .order_by("-finished_at", "-id")[:RECENT_SKIPPED_LIMIT]),
    }


def _checklist(figures: Figures) -> list[Step]:
    steps = []
    if figures.instances is not None:
        steps.append(Step("Register a registry instance", figures.instances["total"] > 0, "registries:list",
                          "Tell apparate where your registry is and how to log in to it."))
        steps.append(Step("Enable acceleration on an instance", figures.instances["accelerated"] > 0,
                          "registries:list", "Accelerated twins are stored beside the originals."))
    if figures.rules is not None:
        steps.append(Step("Add an acceleration rule", figures.rules["enabled"] > 0, "rules:list",
                          "Choose which namespaces, repositories and tags get converted."))
    if figures.events is not None:
        steps.append(Step("Configure the registry webhook", figures.events["ever"], "registries:list",
                          "Paste the webhook configuration into your registry; ticked at the first push."))
    if figures.clusters is not None:
        steps.append(Step("Register a Kubernetes cluster", figures.clusters["total"] > 0, "clusters:list",
                          "Label nodes and install the acceleration suite so they lazy-pull."))
    return steps


def gather(now=None) -> Figures:
    """Collect the dashboard figures for the models installed right now."""
    figures = Figures(worker=worker_status(now))
    _instances(figures)
    _rules(figures)
    _events(figures, now or timezone.now())
    _clusters(figures)
    _jobs(figures)
    figures.checklist = _checklist(figures)
    return figures
