"""The acceleration suite on a cluster: preflight, install, upgrade, uninstall and the rollout."""

import logging

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from clusters import manifests
from clusters.actions.sync import pod_ready, sync_nodes
from clusters.choices import (
    SUITE_BUSY,
    USABLE_COMPATIBILITY,
    SuiteOperation,
    SuiteStatus,
)
from clusters.kube import KubeError, KubeSession, ref, session_for
from clusters.models import Cluster, Node, Suite
from core.audit import record

logger = logging.getLogger(__name__)

class SuiteBusy(Exception):
    """A suite operation is already running on this cluster."""

class SuiteNotInstalled(Exception):
    """Uninstall asked for on a cluster where the console never applied the suite."""

def suite_params(suite: Suite) -> manifests.SuiteParams:
    instance = suite.instance
    return manifests.SuiteParams(
        namespace=suite.namespace, registry_host=instance.host, username=instance.username,
        password=instance.password, insecure_registry=instance.url.lower().startswith("http://"),
        image=suite.image or settings.APPARATE_SUITE_IMAGE, version=suite.version or settings.APPARATE_SUITE_VERSION,
        label_key=settings.APPARATE_NODE_LABEL_KEY, label_value=settings.APPARATE_NODE_LABEL_VALUE,
    )

def request_suite_operation(cluster: Cluster, operation: str, user=None, instance=None, namespace: str = "",
                            version: str = "") -> Suite:
    """Record an install, upgrade or uninstall request, audit it and enqueue it on commit."""
    from clusters.tasks import run_suite_operation

    with transaction.atomic():
        suite, _ = Suite.objects.select_for_update().get_or_create(cluster=cluster)
        if suite.status in SUITE_BUSY:
            raise SuiteBusy(f"A suite {suite.get_operation_display().lower()} is already running on {cluster.name}.")
        if operation == SuiteOperation.UNINSTALL and not suite.applied:  # the new row is rolled back
            raise SuiteNotInstalled("The suite is not installed on this cluster.")
        if operation != SuiteOperation.UNINSTALL:
            if instance is not None:
                suite.instance = instance
            if suite.instance is None:
                raise ValueError("Choose the registry instance whose credentials the nodes use.")
            if namespace and not suite.applied:
                suite.namespace = namespace
            suite.image = settings.APPARATE_SUITE_IMAGE
            suite.version = version or settings.APPARATE_SUITE_VERSION
        suite.operation, suite.status = operation, SuiteStatus.PENDING
        suite.failed_object = suite.last_error = ""
        suite.preflight = []
        suite.requested_by = user if user and user.is_authenticated else None
        suite.started_at, suite.finished_at = timezone.now(), None
        suite.save()
        record("update", suite, {"operation": {"old": None, "new": operation},
                                 "registry": {"old": None, "new": str(suite.instance or "")},
                                 "namespace": {"old": None, "new": suite.namespace},
                                 "version": {"old": None, "new": suite.version}})
        transaction.on_commit(lambda: run_suite_operation.delay(suite.pk))
    return suite

def run_suite_operation(suite_id: int) -> Suite | None:
    """Run a pending suite operation: preflight + apply (install/upgrade) or delete (uninstall)."""
    with transaction.atomic():
        suite = (Suite.objects.select_for_update(of=("self",)).select_related("cluster", "instance")
                 .filter(pk=suite_id).first())
        if suite is None or suite.status != SuiteStatus.PENDING:
            return suite
        uninstall = suite.operation == SuiteOperation.UNINSTALL
        suite.status = SuiteStatus.UNINSTALLING if uninstall else SuiteStatus.PREFLIGHT
        suite.save(update_fields=["status", "updated_at"])
    try:
        with session_for(suite.cluster) as session:
            if uninstall:
                _uninstall(session, suite)
            else:
                _install(session, suite)
    except KubeError as error:
        _fail(suite, error.message)
    return suite

def _fail(suite: Suite, message: str, failed_object: str = "") -> None:
    suite.status, suite.last_error, suite.failed_object = SuiteStatus.FAILED, message, failed_object
    suite.finished_at = timezone.now()
    suite.save()

def preflight(session: KubeSession, suite: Suite) -> list[dict]:
    """Checks before install: reachable, a compatible node, namespace free or ours, RBAC allows it."""
    checks = []
    info = session.version()
    checks.append({"check": "Cluster reachable", "ok": True, "message": f"Kubernetes {info.get('gitVersion', '')}"})
    sync_nodes(suite.cluster)
    compatible = Node.objects.filter(cluster=suite.cluster, compatibility__in=USABLE_COMPATIBILITY).count()
    labelled = Node.objects.filter(cluster=suite.cluster, labelled=True).count()
    checks.append({"check": "Compatible nodes", "ok": compatible > 0,
                   "message": f"{compatible} compatible, {labelled} labelled" if compatible else
                   "No node meets the requirements (see the node list for the reasons)."})
    existing = session.get_or_none("Namespace", suite.namespace)
    ours = existing is None or (existing["metadata"].get("labels") or {}).get(
        "app.kubernetes.io/managed-by") == "apparate"
    checks.append({"check": f"Namespace {suite.namespace}", "ok": ours,
                   "message": "will be created" if existing is None else "already managed by apparate" if ours else
                   "exists and is not managed by apparate; choose another namespace"})
    denied = []
    for obj in manifests.suite_objects(suite_params(suite)):
        namespace = obj["metadata"].get("namespace", "")
        for verb in ("create", "update", "delete"):
            if not session.can_i(verb, obj["kind"], namespace):
                denied.append(f"{verb} {obj['kind']}")
    checks.append({"check": "Permissions", "ok": not denied,
                   "message": f"The cluster credentials may not: {', '.join(denied)}" if denied else
                   "create, update and delete allowed for every object"})
    return checks

def _install(session: KubeSession, suite: Suite) -> None:
    if suite.instance is None:
        _fail(suite, "The registry instance was deleted; choose another and install again.")
        return
    suite.preflight = preflight(session, suite)
    failed = [c for c in suite.preflight if not c["ok"]]
    if failed:
        _fail(suite, "Preflight failed: " + "; ".join(f"{c['check']}: {c['message']}" for c in failed))
        return
    suite.status = SuiteStatus.APPLYING
    suite.save(update_fields=["status", "preflight", "updated_at"])
    previously = {(o["kind"], o["name"], o.get("namespace", "")): o for o in suite.applied}
    applied = []
    for obj in manifests.suite_objects(suite_params(suite)):
        meta = obj["metadata"]
        identity = (obj["kind"], meta["name"], meta.get("namespace", ""))
        try:
            _stored, created = session.apply(obj)
        except KubeError as error:
            # Keep what was already applied (and what earlier runs created) so uninstall can remove it.
            suite.applied = _merge_applied(previously, applied)
            _fail(suite, error.message, ref(obj))
            return
        before = previously.get(identity)
        applied.append({"kind": identity[0], "name": identity[1], "namespace": identity[2],
                        "apiVersion": obj["apiVersion"], "created": created or bool(before and before["created"])})
        suite.applied = _merge_applied(previously, applied)
        suite.save(update_fields=["applied", "updated_at"])
    suite.status = SuiteStatus.ROLLING_OUT
    suite.save(update_fields=["status", "applied", "updated_at"])
    from clusters.tasks import watch_rollout

    transaction.on_commit(lambda: watch_rollout.apply_async((suite.pk,), countdown=1))

def _merge_applied(previously: dict, applied: list[dict]) -> list[dict]:
    now_keys = {(o["kind"], o["name"], o["namespace"]) for o in applied}
    return applied + [o for key, o in previously.items() if key not in now_keys]

def refresh_rollout(suite: Suite) -> Suite:
    """Read the agent DaemonSet and its pods: desired/ready/updated and each node's state."""
    params_namespace = suite.namespace
    try:
        with session_for(suite.cluster) as session:
            ds = session.get("DaemonSet", manifests.AGENT, params_namespace)
            pods = session.list("Pod", params_namespace, label_selector=f"app.kubernetes.io/name={manifests.AGENT}")
    except KubeError as error:
        suite.last_error = error.message
        suite.save(update_fields=["last_error", "updated_at"])
        return suite
    status = ds.get("status") or {}
    suite.desired = status.get("desiredNumberScheduled", 0)
    suite.ready = status.get("numberReady", 0)
    suite.updated = status.get("updatedNumberScheduled", 0)
    nodes = []
    for pod in sorted(pods, key=lambda p: p["spec"].get("nodeName", "")):
        statuses = (pod.get("status") or {}).get("containerStatuses", [])
        waiting = next((s.get("state", {}).get("waiting") for s in statuses
                        if s.get("state", {}).get("waiting")), None)
        nodes.append({"node": pod["spec"].get("nodeName", ""), "pod": pod["metadata"]["name"], "ready": pod_ready(pod),
                      "reason": (waiting or {}).get("reason", "") or (pod.get("status") or {}).get("phase", "")})
    suite.node_status = nodes
    suite.last_error = ""
    ready_nodes = {n["node"] for n in nodes if n["ready"]}
    Node.objects.filter(cluster=suite.cluster).exclude(name__in=ready_nodes).update(agent_ready=False)
    Node.objects.filter(cluster=suite.cluster, name__in=ready_nodes).update(agent_ready=True)
    observed = status.get("observedGeneration", 0) >= ds["metadata"].get("generation", 0)
    if observed and suite.ready == suite.desired == suite.updated:
        suite.status, suite.finished_at = SuiteStatus.READY, timezone.now()
    elif suite.started_at and (timezone.now() - suite.started_at).total_seconds() > \
            settings.APPARATE_SUITE_ROLLOUT_TIMEOUT:
        stuck = ", ".join(f"{n['node']} ({n['reason']})" for n in nodes if not n["ready"])
        suite.status, suite.finished_at = SuiteStatus.FAILED, timezone.now()
        suite.failed_object = f"DaemonSet {params_namespace}/{manifests.AGENT}"
        suite.last_error = f"The agent did not become ready in time on: {stuck}"
    suite.save()
    return suite

def _uninstall(session: KubeSession, suite: Suite) -> None:
    remaining = list(suite.applied)
    for obj in reversed(list(suite.applied)):
        if obj["created"]:
            try:
                session.delete(obj["kind"], obj["name"], obj.get("namespace", ""))
            except KubeError as error:
                suite.applied = remaining
                where = f"{obj['namespace']}/" if obj.get("namespace") else ""
                _fail(suite, error.message, f"{obj['kind']} {where}{obj['name']}")
                return
        remaining.remove(obj)
        suite.applied = remaining
        suite.save(update_fields=["applied", "updated_at"])
    Node.objects.filter(cluster=suite.cluster).update(agent_ready=False)
    suite.status, suite.finished_at = SuiteStatus.NOT_INSTALLED, timezone.now()
    suite.desired = suite.ready = suite.updated = 0
    suite.node_status = []
    suite.save()
