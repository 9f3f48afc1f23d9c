"""Deploying workloads onto labelled nodes: accelerated twins as suggestions, the plan (YAML first), the apply.

A deploy is previewed, confirmed, then applied by a worker:
- `plan_deploy` builds the objects (pull Secret, Deployment) and the warnings; `preview_deploy`
  records them as a DeployRequest in the "previewed" state with the plan's digest;
- `confirm_deploy` accepts exactly that row, by id, from the user who previewed it, within
  PREVIEW_TTL and with the same digest; anything else needs a new preview;
- `run_deploy` (a task) rebuilds the objects from the row, refuses them if their digest is not
  the previewed one, and applies them acting only on objects the deploy created (the label
  `app.kubernetes.io/managed-by: apparate` and the annotation `apparate.io/owner: deploy`). A
  foreign object of the same name is never replaced; a pull Secret written for a deploy that then
  fails is removed again.
Operators deploy only into the namespaces the cluster allows (`Cluster.deploy_namespaces`).
"""

import hashlib
import json
from dataclasses import dataclass, field
from datetime import timedelta

import yaml
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from clusters import manifests
from clusters.choices import (
    DeployStatus,
    RolloutState,
    SuiteStatus,
)
from clusters.kube import KubeError, KubeSession, ref, session_for
from clusters.models import Cluster, DeployRequest, Suite
from converter.reference import ImageReference
from core.audit import record
from core.queue import UNAVAILABLE_REASON, send_on_commit
from pipeline import twins
from pipeline.choices import JobStatus as ConversionStatus
from pipeline.models import AcceleratedImage
from pipeline.naming import is_twin_tag, source_tag
from registries.models import Instance

MAX_IMAGE_CHOICES = 500
PREVIEW_TTL = timedelta(minutes=15)  # a confirmation must follow its preview within this
OWNER_ANNOTATION = "apparate.io/owner"
OWNER = "deploy"

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

class DeployRefused(Exception):
    """A deploy that cannot go ahead, with a message saying why and what to do."""


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

    @property
    def digest(self) -> str:
        return plan_digest(self.cluster.pk, self.objects)


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


def plan_digest(cluster_id: int, objects: list[dict]) -> str:
    """sha256 of what is shown in a preview: the cluster and the objects (Secret data hidden)."""
    canonical = json.dumps({"cluster": cluster_id, "objects": _mask_secrets(objects)}, sort_keys=True,
                           separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def namespace_refusal(cluster: Cluster, namespace: str) -> str:
    """Why operators may not deploy into `namespace` on this cluster ("" when they may)."""
    if namespace in cluster.deploy_namespaces:
        return ""
    allowed = ", ".join(cluster.deploy_namespaces) or "none"
    return (f"Deploys to {cluster.name} may use only these namespaces: {allowed}. An admin can allow more on "
            "the cluster's settings.")


def deploy_objects(instance: Instance, namespace: str, name: str, replicas: int, image: str,
                   pinned: bool) -> list[dict]:
    """The pull Secret (none for an anonymous instance) and the Deployment, both marked as the deploy's."""
    objects, secret_name = [], None
    if not instance.is_anonymous:
        secret_name = manifests.workload_pull_secret_name(instance.pk)
        objects.append(manifests.pull_secret(namespace, instance.host, instance.username, instance.password,
                                             name=secret_name))
    selector = {settings.APPARATE_NODE_LABEL_KEY: settings.APPARATE_NODE_LABEL_VALUE} if pinned else None
    objects.append(manifests.deployment(namespace, name, replicas, image, selector, secret_name))
    for obj in objects:
        obj["metadata"]["annotations"] = {**obj["metadata"].get("annotations", {}), OWNER_ANNOTATION: OWNER}
    return objects


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
    return DeployPlan(cluster, instance, namespace, name, replicas, chosen, pin, twin.original, twin.accelerated,
                      warnings, deploy_objects(instance, namespace, name, replicas, chosen, pin))


def preview_deploy(plan: DeployPlan, user) -> DeployRequest:
    """Record the plan as a previewed DeployRequest: what `confirm_deploy` may later apply.

    Previews older than PREVIEW_TTL that nobody confirmed are removed on the way.
    """
    DeployRequest.objects.filter(status=DeployStatus.PREVIEWED, created_at__lt=timezone.now() - PREVIEW_TTL).delete()
    return DeployRequest.objects.create(
        cluster=plan.cluster, instance=plan.instance, namespace=plan.namespace, name=plan.name,
        replicas=plan.replicas, image=plan.image, accelerated=plan.accelerated, status=DeployStatus.PREVIEWED,
        plan_digest=plan.digest, plan_yaml=plan.yaml, warnings=plan.warnings,
        requested_by=user if user and user.is_authenticated else None,
    )


def confirm_deploy(deploy_id, user, digest: str) -> DeployRequest:
    """Confirm a previewed deploy: audited, then applied by a worker (enqueued on commit).

    DeployRefused unless the row is a preview of this user, younger than PREVIEW_TTL, whose digest
    is `digest` and whose namespace the cluster still allows.
    """
    from clusters.tasks import run_deploy_task

    with transaction.atomic():
        deploy = None
        if str(deploy_id).isdigit():
            deploy = (DeployRequest.objects.select_for_update(of=("self",)).select_related("cluster")
                      .filter(pk=deploy_id).first())
        if deploy is None:
            raise DeployRefused("There is no such preview: preview the deploy first.")
        if deploy.status != DeployStatus.PREVIEWED:
            raise DeployRefused(f"Deploy #{deploy.pk} was already confirmed ({deploy.get_status_display().lower()}).")
        if user is None or deploy.requested_by_id != user.pk:
            raise DeployRefused("Only the user who previewed a deploy can confirm it: preview it yourself.")
        if deploy.created_at < timezone.now() - PREVIEW_TTL:
            raise DeployRefused(f"The preview is older than {PREVIEW_TTL.seconds // 60} minutes: preview the deploy "
                                "again.")
        if digest != deploy.plan_digest:
            raise DeployRefused("The deploy changed since its preview (its fields, or the image's twin): review the "
                                "new preview and confirm that one.")
        refusal = namespace_refusal(deploy.cluster, deploy.namespace)
        if refusal:
            raise DeployRefused(refusal)
        deploy.status, deploy.confirmed_at = DeployStatus.PENDING, timezone.now()
        deploy.save(update_fields=["status", "confirmed_at"])
        record("create", deploy, {field_name: {"old": None, "new": value} for field_name, value in (
            ("cluster", deploy.cluster.name), ("namespace", deploy.namespace), ("name", deploy.name),
            ("replicas", deploy.replicas), ("image", deploy.image), ("accelerated", deploy.accelerated),
            ("plan_digest", deploy.plan_digest))})
        send_on_commit(lambda: run_deploy_task.delay(deploy.pk),
                       lambda: DeployRequest.objects.filter(pk=deploy.pk, status=DeployStatus.PENDING).update(
                           status=DeployStatus.FAILED, message=UNAVAILABLE_REASON, finished_at=timezone.now()))
    return deploy


def run_deploy(deploy_id: int) -> DeployRequest | None:
    """Apply a confirmed deploy (the task's body); a second run of a finished one changes nothing."""
    with transaction.atomic():
        deploy = (DeployRequest.objects.select_for_update(of=("self",)).select_related("cluster", "instance")
                  .filter(pk=deploy_id).first())
        if deploy is None or deploy.status not in {DeployStatus.PENDING, DeployStatus.APPLYING}:
            return deploy
        deploy.status = DeployStatus.APPLYING
        deploy.save(update_fields=["status"])
    try:
        deploy.message = _apply(deploy)
        deploy.status = DeployStatus.SUCCEEDED
    except (DeployRefused, KubeError) as error:
        deploy.message = str(error) if isinstance(error, DeployRefused) else error.message
        deploy.status = DeployStatus.FAILED
    deploy.finished_at = timezone.now()
    deploy.save(update_fields=["status", "message", "finished_at"])
    if deploy.status == DeployStatus.SUCCEEDED:
        watch_rollout(deploy)
    return deploy


# --- The rollout after the apply -------------------------------------------------------------

NODE_SELECTOR_MISMATCH = "didn't match Pod's node affinity/selector"


def _pod_row(pod: dict, deploy: DeployRequest) -> dict:
    """One pod of the rollout: where it runs, whether it is ready, and why not, in plain words."""
    status = pod.get("status") or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    ready = (conditions.get("Ready") or {}).get("status") == "True"
    node = (pod.get("spec") or {}).get("nodeName", "")
    row = {"name": (pod.get("metadata") or {}).get("name", ""), "node": node, "phase": status.get("phase", "Pending"),
           "ready": ready, "reason": "", "detail": "", "no_labelled_node": False}
    scheduled = conditions.get("PodScheduled") or {}
    waiting = next((c["state"]["waiting"] for c in status.get("containerStatuses") or []
                    if (c.get("state") or {}).get("waiting")), None)
    if ready:
        return row
    if not node and scheduled.get("status") == "False":
        message = str(scheduled.get("message") or "")[:500]
        row["detail"] = message
        if deploy.accelerated and NODE_SELECTOR_MISMATCH in message:
            label = f"{settings.APPARATE_NODE_LABEL_KEY}={settings.APPARATE_NODE_LABEL_VALUE}"
            row["reason"] = (f"No node can take it: the pod runs only on nodes labelled {label}, and no ready node "
                             "carries that label. Label nodes for acceleration on the Nodes page.")
            row["no_labelled_node"] = True
        else:
            row["reason"] = f"The scheduler cannot place it ({scheduled.get('reason') or 'Unschedulable'})."
    elif waiting is not None:
        row["reason"] = f"Its container is waiting: {waiting.get('reason', 'waiting')}."
        row["detail"] = str(waiting.get("message") or "")[:500]
    elif not node:
        row["reason"] = "Waiting for the scheduler."
    else:
        row["reason"] = "Started, not ready yet." if row["phase"] == "Running" else f"{row['phase']} on {node}."
    return row


def read_rollout(session: KubeSession, deploy: DeployRequest) -> dict:
    """The Deployment's rollout as the API server reports it: its replica counts and its pods
    (listed by the Deployment's selector), and whether every wanted pod is updated and ready."""
    deployment = session.get_or_none("Deployment", deploy.name, deploy.namespace)
    if deployment is None:
        return {"state": RolloutState.GONE, "pods": [], "wanted": deploy.replicas, "ready": 0}
    match = ((deployment.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    selector = ",".join(f"{key}={value}" for key, value in sorted(match.items()))
    pods = sorted((_pod_row(pod, deploy) for pod in session.list("Pod", deploy.namespace, label_selector=selector)),
                  key=lambda row: (row["ready"], row["name"]))
    status = deployment.get("status") or {}
    wanted = (deployment.get("spec") or {}).get("replicas", 1)
    ready = status.get("readyReplicas", 0)
    complete = (status.get("observedGeneration", 0) >= deployment["metadata"].get("generation", 0)
                and status.get("updatedReplicas", 0) == wanted and ready == wanted
                and status.get("replicas", 0) == wanted)
    return {"state": RolloutState.COMPLETE if complete else RolloutState.PROGRESSING, "pods": pods,
            "wanted": wanted, "ready": ready}


def watch_rollout(deploy: DeployRequest) -> None:
    """(Re)start watching an applied deploy's rollout: a worker reads it every second until it is
    complete or APPARATE_DEPLOY_ROLLOUT_WATCH seconds have passed."""
    from clusters.tasks import watch_deploy_rollout

    deploy.rollout_watch_since = timezone.now()
    if deploy.rollout:
        deploy.rollout = {**deploy.rollout, "state": RolloutState.PROGRESSING}
    DeployRequest.objects.filter(pk=deploy.pk).update(rollout_watch_since=deploy.rollout_watch_since,
                                                      rollout=deploy.rollout)
    deploy_id = deploy.pk
    transaction.on_commit(lambda: watch_deploy_rollout.apply_async((deploy_id,), countdown=1))


def refresh_rollout(deploy_id: int) -> DeployRequest | None:
    """Read the rollout once and store it on the deploy; None when there is nothing (more) to watch.
    An unreachable cluster is noted and tried again at the next read."""
    deploy = DeployRequest.objects.select_related("cluster").filter(pk=deploy_id).first()
    if deploy is None or deploy.status != DeployStatus.SUCCEEDED or not deploy.rollout_watched:
        return None
    try:
        with session_for(deploy.cluster) as session:
            rollout = read_rollout(session, deploy)
    except KubeError as error:
        rollout = {**deploy.rollout, "error": error.message}
        rollout.setdefault("state", RolloutState.PROGRESSING)
    watched_for = (timezone.now() - deploy.rollout_watch_since).total_seconds()
    if rollout["state"] == RolloutState.PROGRESSING and watched_for > settings.APPARATE_DEPLOY_ROLLOUT_WATCH:
        rollout["state"] = RolloutState.STALLED
    deploy.rollout, deploy.rollout_checked_at = rollout, timezone.now()
    deploy.save(update_fields=["rollout", "rollout_checked_at"])
    return deploy


def _apply(deploy: DeployRequest) -> str:
    refusal = namespace_refusal(deploy.cluster, deploy.namespace)
    if refusal:
        raise DeployRefused(refusal)
    if deploy.instance is None:
        raise DeployRefused("The registry instance of this deploy was deleted: preview the deploy again.")
    objects = deploy_objects(deploy.instance, deploy.namespace, deploy.name, deploy.replicas, deploy.image,
                             deploy.accelerated)
    if plan_digest(deploy.cluster_id, objects) != deploy.plan_digest:
        raise DeployRefused("What the deploy would apply is no longer what was previewed (the registry instance "
                            "or the console's settings changed): preview the deploy again.")
    with session_for(deploy.cluster) as session:
        apply_owned(session, objects)
    return f"Deployment {deploy.namespace}/{deploy.name} applied with {deploy.image}."


def owned_by_deploy(obj: dict) -> bool:
    meta = obj.get("metadata") or {}
    return ((meta.get("labels") or {}).get("app.kubernetes.io/managed-by") == manifests.MANAGED_BY[
        "app.kubernetes.io/managed-by"] and (meta.get("annotations") or {}).get(OWNER_ANNOTATION) == OWNER)


def apply_owned(session: KubeSession, objects: list[dict]) -> None:
    """Create the objects, or replace those a deploy created; nothing at all if any name is taken.

    Every object is checked before the first is written. Replacing sends the resourceVersion that
    was checked, so an object swapped meanwhile is a conflict, not an overwrite; a create that
    finds the name taken (409) is not turned into a replace. A pull Secret this call created is
    deleted again when a later object fails.
    """
    found = []
    for obj in objects:
        meta = obj["metadata"]
        existing = session.get_or_none(obj["kind"], meta["name"], meta.get("namespace", ""))
        if existing is not None and not owned_by_deploy(existing):
            raise DeployRefused(f"{ref(obj)} already exists and was not created by an apparate deploy; nothing was "
                                "changed. Choose another name.")
        found.append(existing)
    created: list[dict] = []
    for obj, existing in zip(objects, found, strict=True):
        try:
            if existing is None:
                session.create(obj)
                created.append(obj)
            else:
                session.replace(obj, existing["metadata"]["resourceVersion"])
        except KubeError as error:
            what = {"conflict": "it changed or appeared while deploying; deploy again"}.get(error.kind, error.message)
            message = f"{ref(obj)}: {what}"
            for written in created:
                try:
                    session.delete(written["kind"], written["metadata"]["name"], written["metadata"]["namespace"])
                except KubeError as cleanup:
                    message += f" (removing {ref(written)} failed too: {cleanup.message})"
            raise KubeError(message, error.kind, error.status) from None
