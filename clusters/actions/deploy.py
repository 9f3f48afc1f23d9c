"""Deploying workloads onto labelled nodes: accelerated twins as suggestions, the plan (YAML first), the apply."""

import logging
from dataclasses import dataclass, field

import yaml
from django.conf import settings

from clusters import manifests
from clusters.choices import (
    DeployStatus,
    SuiteStatus,
)
from clusters.kube import KubeError, ref, session_for
from clusters.models import Cluster, DeployRequest, Suite
from converter.reference import ImageReference
from pipeline import twins
from pipeline.choices import JobStatus as ConversionStatus
from pipeline.models import AcceleratedImage
from pipeline.naming import is_twin_tag, source_tag
from registries.models import Instance

logger = logging.getLogger(__name__)

MAX_IMAGE_CHOICES = 500

def accelerated_images(instance, limit: int = MAX_IMAGE_CHOICES) -> list[AcceleratedImage]:
    """The instance's accelerated images that are in the registry, from the twin records.

    One per twin tag, left out when stale (a newer push of its tag still converting or failed).
    Ordered by repository and tag.
    """
    return twins.current(instance, limit)

@dataclass(frozen=True)
class TwinLookup:
    """What the conversion jobs say about one image of an instance."""

    original: str  # the source image: what runs without acceleration
    accelerated: str = ""  # its accelerated twin; "" when there is none
    reason: str = ""  # why there is no twin, for the deploy warning

def accelerated_twin(instance, reference: ImageReference) -> TwinLookup:
    """The original and the accelerated twin of an image, answered from the twin records.

    The image may be either side: a source tag (or digest) with a present twin gives its twin; a
    twin gives its source. A twin that was deleted or is missing is no twin, and the reason says
    so. Nothing is read from the registry.
    """
    base = f"{reference.host}/{reference.path}"
    if reference.digest:
        row = twins.row_of_digest(instance, reference.namespace, reference.repository, reference.digest)
        if row is not None and row.twin_digest == reference.digest:
            return TwinLookup(f"{base}@{row.source_digest}", str(reference))
        if row is not None:
            return TwinLookup(str(reference), f"{base}@{row.twin_digest}")
        return TwinLookup(str(reference), reason=f"No accelerated image of {base}@{reference.digest} is in the "
                                                 "registry.")
    tag = reference.tag or "latest"
    if is_twin_tag(tag):
        row = twins.row_of_tag(instance, reference.namespace, reference.repository, source_tag(tag))
        if row is not None and row.is_present:
            return TwinLookup(f"{base}:{row.source_tag}", f"{base}:{tag}")  # the image is a twin
    original = f"{base}:{tag}"
    row = twins.row_of_tag(instance, reference.namespace, reference.repository, tag)
    latest = twins.latest_job_of_tag(instance, reference.namespace, reference.repository, tag)
    made = None if row is None else row.job.created_at if row.job else row.created_at
    if latest is not None and latest.status != ConversionStatus.SUCCEEDED and (
            made is None or (latest.pk != row.job_id and latest.created_at > made)):
        return TwinLookup(original, reason=f"{original} has no current accelerated twin: its latest conversion "
                                           f"(job #{latest.pk}) is {latest.get_status_display().lower()}.")
    if row is not None and row.is_present:
        return TwinLookup(original, f"{base}:{row.twin_tag}")
    if row is not None:
        return TwinLookup(original, reason=f"{original} has no accelerated twin now. {twins.describe_gone(row)}")
    if latest is not None:
        return TwinLookup(original, reason=f"{original} has no accelerated twin in the registry yet (job "
                                           f"#{latest.pk} converted its content).")
    return TwinLookup(original, reason=f"{original} has no accelerated twin: it was never converted "
                                       "(add a rule or use Convert now on the Jobs page).")

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
        return yaml.safe_dump_all(_mask_secrets(self.objects), sort_keys=False)

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
