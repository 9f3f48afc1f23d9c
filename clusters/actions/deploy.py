"""Deploying workloads onto labelled nodes: accelerated twins as suggestions, the plan (YAML first), the apply."""

import logging
from dataclasses import dataclass, field

import yaml
from django.conf import settings
from django.db.models import OuterRef, Subquery

from clusters import manifests
from clusters.choices import (
    DeployStatus,
    SuiteStatus,
)
from clusters.kube import KubeError, ref, session_for
from clusters.models import Cluster, DeployRequest, Suite
from converter.reference import ImageReference
from pipeline.choices import JobStatus as ConversionStatus
from pipeline.models import ConversionJob
from registries.models import Instance

logger = logging.getLogger(__name__)

MAX_IMAGE_CHOICES = 500

def _jobs_of(instance, reference: ImageReference):
    return ConversionJob.objects.filter(instance=instance, namespace=reference.namespace,
                                        repository=reference.repository).order_by("-created_at", "-pk")

def accelerated_images(instance, limit: int = MAX_IMAGE_CHOICES) -> list[ConversionJob]:
    """The instance's accelerated images the console knows of, from its conversion jobs.

    One per source tag: the twin of a tag counts when the tag's latest job succeeded (a newer push
    still converting or failed means the twin is stale). Ordered by repository and tag.
    """
    latest = ConversionJob.objects.filter(
        instance=OuterRef("instance"), namespace=OuterRef("namespace"), repository=OuterRef("repository"),
        source_tag=OuterRef("source_tag"),
    ).order_by("-created_at", "-pk").values("pk")[:1]
    jobs = (ConversionJob.objects.filter(instance=instance, status=ConversionStatus.SUCCEEDED)
            .exclude(result_tag="").filter(pk=Subquery(latest)).select_related("instance")
            .order_by("namespace", "repository", "source_tag"))
    return list(jobs[:limit])

@dataclass(frozen=True)
class TwinLookup:
    """What the conversion jobs say about one image of an instance."""

    original: str  # the source image: what runs without acceleration
    accelerated: str = ""  # its accelerated twin; "" when there is none
    reason: str = ""  # why there is no twin, for the deploy warning

def accelerated_twin(instance, reference: ImageReference) -> TwinLookup:
    """The original and the accelerated twin of an image, answered from the instance's jobs.

    The image may be either side: a source tag (or digest) whose conversion succeeded gives its
    twin; a twin gives its source. Nothing is read from the registry.
    """
    jobs = _jobs_of(instance, reference)
    succeeded = jobs.filter(status=ConversionStatus.SUCCEEDED)
    base = f"{reference.host}/{reference.path}"
    if reference.digest:
        job = succeeded.filter(result_digest=reference.digest).first()
        if job is not None:
            return TwinLookup(f"{base}@{job.source_digest}", str(reference))
        job = succeeded.filter(source_digest=reference.digest).exclude(result_digest="").first()
        if job is not None:
            return TwinLookup(str(reference), f"{base}@{job.result_digest}")
        return TwinLookup(str(reference), reason=f"No conversion of {base}@{reference.digest} has succeeded.")
    tag = reference.tag or "latest"
    suffix = settings.APPARATE_ACCELERATED_SUFFIX
    if tag.endswith(suffix) and _latest_job_of_tag(succeeded, tag.removesuffix(suffix)) is not None:
        return TwinLookup(f"{base}:{tag.removesuffix(suffix)}", f"{base}:{tag}")  # the image is a twin
    original = f"{base}:{tag}"
    latest = _latest_job_of_tag(jobs, tag)
    if latest is None:
        return TwinLookup(original, reason=f"{original} has no accelerated twin: it was never converted "
                                           "(add a rule or use Convert now on the Jobs page).")
    if latest.status != ConversionStatus.SUCCEEDED or not latest.result_tag:
        return TwinLookup(original, reason=f"{original} has no current accelerated twin: its latest conversion "
                                           f"(job #{latest.pk}) is {latest.get_status_display().lower()}.")
    return TwinLookup(original, f"{original}{suffix}")

def _latest_job_of_tag(jobs, tag: str) -> ConversionJob | None:
    """The newest of `jobs` (newest first) that converted `tag`: as its source tag or as a further
    tag of the same content (twin tags; checked in Python, as SQLite cannot search JSON lists)."""
    return next((job for job in jobs if job.source_tag == tag or tag in job.twin_tags), None)

@dataclass
class DeployPlan:
    cluster: Cluster
    instance: Instance
    namespace: str
    name: str
    replicas: int
    image: str  # what the Deployment runs
    accelerated: bool  # the accelerated twin, pinned to labelled nodes
    original_image: str
    accelerated_image: str  # "" when the image has no accelerated twin
    warnings: list[str] = field(default_factory=list)
    objects: list[dict] = field(default_factory=list)

    @property
    def yaml(self) -> str:
        return yaml.dump_all(_mask_secrets(self.objects), Dumper=PlainDumper, sort_keys=False)


class PlainDumper(yaml.SafeDumper):
    """Writes a dict used twice (a Deployment's labels) in full each time, not as &id001/*id001."""

    def ignore_aliases(self, data) -> bool:
        return True

def _mask_secrets(objects: list[dict]) -> list[dict]:
    shown = []
    for obj in objects:
        if obj["kind"] == "Secret":
            obj = {**obj, "data": {k: "<hidden>" for k in obj.get("data", {})}}
        shown.append(obj)
    return shown

def plan_deploy(cluster: Cluster, instance: Instance, namespace: str, name: str, replicas: int,
                reference: ImageReference, use_original: bool = False) -> DeployPlan:
    """What a deploy would apply, and the warnings that suggest the original image instead.

    The image may be given by its original or its twin: the plan runs the twin (pinned to labelled
    nodes) when there is one, unless `use_original`. The pull secret carries the instance's
    credentials (none for an anonymous instance).
    """
    twin = accelerated_twin(instance, reference)
    warnings = []
    if not twin.accelerated:
        warnings.append(f"{twin.reason} It would start with a full pull.")
    if not cluster.nodes.filter(labelled=True).exists():
        warnings.append("No node of this cluster carries the acceleration label: pods pinned to labelled nodes "
                        "would stay Pending.")
    suite = Suite.objects.filter(cluster=cluster).first()
    if suite is None or suite.status != SuiteStatus.READY:
        warnings.append("The acceleration suite is not ready on this cluster: nodes cannot lazy-pull yet.")
    pin = bool(twin.accelerated) and not use_original
    chosen = twin.accelerated if pin else twin.original
    objects, secret_name = [], None
    if not instance.is_anonymous:
        secret_name = manifests.workload_pull_secret_name(instance.pk)
        objects.append(manifests.pull_secret(namespace, instance.host, instance.username, instance.password,
                                             name=secret_name))
    selector = {settings.APPARATE_NODE_LABEL_KEY: settings.APPARATE_NODE_LABEL_VALUE} if pin else None
    objects.append(manifests.deployment(namespace, name, replicas, chosen, selector, secret_name))
    return DeployPlan(cluster, instance, namespace, name, replicas, chosen, pin, twin.original, twin.accelerated,
                      warnings, objects)

def apply_deploy(plan: DeployPlan, user=None) -> DeployRequest:
    """Apply the plan's pull secret and Deployment; the request is recorded (and audited) either way."""
    status, message = DeployStatus.SUCCEEDED, ""
    try:
        with session_for(plan.cluster) as session:
            for obj in plan.objects:
                try:
                    session.apply(obj)
                except KubeError as error:
                    raise KubeError(f"{ref(obj)}: {error.message}", error.kind, error.status) from None
        message = f"Deployment {plan.namespace}/{plan.name} applied with {plan.image}."
    except KubeError as error:
        status, message = DeployStatus.FAILED, error.message
    return DeployRequest.objects.create(
        cluster=plan.cluster, instance=plan.instance, namespace=plan.namespace, name=plan.name,
        replicas=plan.replicas, image=plan.image, accelerated=plan.accelerated, status=status, message=message,
        requested_by=user if user and user.is_authenticated else None,
    )
