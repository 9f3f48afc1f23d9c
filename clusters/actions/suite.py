"""The acceleration suite on a cluster: preflight, install, upgrade, uninstall, rollout and recovery.

- Install and upgrade: preflight, apply the objects one by one, then watch the rollout. The suite
  is ready when the DaemonSet rolled out and every labelled node's agent reports, in its current
  revision, that the node is ready to lazy-pull (agent.report); until then each node's row says why.
- Uninstall: set `mode: uninstall` in the agents' ConfigMap, wait until every node confirmed its
  cleanup (stragglers named with their reason), then delete exactly the objects the console
  created. After APPARATE_SUITE_UNINSTALL_TIMEOUT the uninstall fails with the stragglers, and the
  operator may force it (delete without waiting).
- Recovery: `updated_at` is the operation's heartbeat. A busy operation whose worker died (no move
  for APPARATE_SUITE_STALE_AFTER seconds) is taken up again by a redelivered or re-enqueued task,
  up to APPARATE_SUITE_MAX_ATTEMPTS times, then failed with that reason; and it no longer blocks
  a new request.
"""

import logging
import uuid
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from agent import report as agent_report
from clusters import manifests
from clusters.actions.sync import NO_AGENT, agent_pods, lazy_pull_state, pod_trouble, record_agent_reports, sync_nodes
from clusters.choices import (
    SUITE_BUSY,
    SUITE_WORKING,
    USABLE_COMPATIBILITY,
    LazyPull,
    SuiteOperation,
    SuiteStatus,
)
from clusters.kube import KubeError, KubeSession, ref, session_for
from clusters.models import Cluster, Node, Suite
from converter.reference import InvalidReference, parse_reference
from converter.registry import RegistryError
from core.audit import record
from registries.models import Instance

logger = logging.getLogger(__name__)


class SuiteBusy(Exception):
    """A suite operation is already running on this cluster."""


class SuiteNotInstalled(Exception):
    """Uninstall asked for on a cluster where the console never applied the suite."""


def suite_params(suite: Suite) -> manifests.SuiteParams:
    instance = suite.instance
    insecure = instance.url.lower().startswith("http://")
    return manifests.SuiteParams(
        namespace=suite.namespace, registry_host=instance.host, username=instance.username,
        password=instance.password, insecure_registry=insecure,
        image=suite.image or settings.APPARATE_SUITE_IMAGE, version=suite.version or settings.APPARATE_SUITE_VERSION,
        label_key=settings.APPARATE_NODE_LABEL_KEY, label_value=settings.APPARATE_NODE_LABEL_VALUE,
        registry_ca="" if insecure else instance.ca_bundle.strip(),
    )


def is_stale(suite: Suite) -> bool:
    """A busy operation that has not moved for APPARATE_SUITE_STALE_AFTER seconds: its worker is gone."""
    cutoff = timezone.now() - timedelta(seconds=settings.APPARATE_SUITE_STALE_AFTER)
    return suite.status in SUITE_BUSY | {SuiteStatus.ROLLING_OUT} and suite.updated_at < cutoff


def request_suite_operation(cluster: Cluster, operation: str, user=None, instance=None, namespace: str = "",
                            version: str = "", force: bool = False) -> Suite:
    """Record an install, upgrade or uninstall request, audit it and enqueue it on commit.

    `force` (uninstall only) deletes the objects without waiting for the nodes to clean up."""
    from clusters.tasks import run_suite_operation

    if force and operation != SuiteOperation.UNINSTALL:
        raise ValueError("Only an uninstall can be forced.")
    with transaction.atomic():
        suite, _ = Suite.objects.select_for_update().get_or_create(cluster=cluster)
        if suite.status in SUITE_BUSY and not is_stale(suite):
            raise SuiteBusy(f"A suite {suite.get_operation_display().lower()} is already running on {cluster.name}.")
        if operation == SuiteOperation.UNINSTALL and not suite.applied:  # the new row is rolled back
            raise SuiteNotInstalled("The suite is not installed on this cluster.")
        superseded = suite.get_status_display() if suite.status in SUITE_BUSY else None
        if operation != SuiteOperation.UNINSTALL:
            if instance is not None:
                suite.instance = instance
            if suite.instance is None:
                raise ValueError("Choose the registry instance whose credentials the nodes use.")
            if namespace and not suite.applied:
                suite.namespace = namespace
            suite.image = settings.APPARATE_SUITE_IMAGE
            suite.version = version or settings.APPARATE_SUITE_VERSION
        suite.operation, suite.status, suite.force = operation, SuiteStatus.PENDING, force
        suite.failed_object = suite.last_error = ""
        suite.preflight, suite.node_status = [], []
        suite.attempts, suite.cleanup_started_at, suite.watch_id = 0, None, ""
        suite.requested_by = user if user and user.is_authenticated else None
        suite.started_at, suite.finished_at = timezone.now(), None
        suite.save()
        changes = {"operation": {"old": None, "new": operation},
                   "registry": {"old": None, "new": str(suite.instance or "")},
                   "namespace": {"old": None, "new": suite.namespace},
                   "version": {"old": None, "new": suite.version}, "force": {"old": None, "new": force}}
        if superseded:
            changes["superseded"] = {"old": superseded, "new": "its worker stopped; taken over by this request"}
        record("update", suite, changes)
        transaction.on_commit(lambda: run_suite_operation.delay(suite.pk))
    return suite


def run_suite_operation(suite_id: int) -> Suite | None:
    """Run a pending suite operation, or take up one whose worker died: preflight + apply
    (install/upgrade), or ask the nodes to clean up and then delete (uninstall)."""
    with transaction.atomic():
        suite = (Suite.objects.select_for_update(of=("self",)).select_related("cluster", "instance")
                 .filter(pk=suite_id).first())
        if suite is None:
            return None
        if suite.status != SuiteStatus.PENDING and not (suite.status in SUITE_WORKING - {SuiteStatus.CLEANING_NODES}
                                                        and is_stale(suite)):
            return suite  # done, or being run by a live worker
        if suite.status != SuiteStatus.PENDING:
            logger.warning("suite=%s action=take-over status=%s", suite.pk, suite.status)
        suite.attempts += 1
        if suite.attempts > settings.APPARATE_SUITE_MAX_ATTEMPTS:
            _fail(suite, f"The {suite.get_operation_display().lower()} was taken up {suite.attempts - 1} times and "
                         "its worker stopped each time (see the workers' logs); request it again.")
            return suite
        uninstall = suite.operation == SuiteOperation.UNINSTALL
        suite.status = SuiteStatus.UNINSTALLING if uninstall else SuiteStatus.PREFLIGHT
        suite.save(update_fields=["status", "attempts", "updated_at"])
    try:
        with session_for(suite.cluster) as session:
            if uninstall:
                _uninstall(session, suite)
            else:
                _install(session, suite)
    except KubeError as error:
        _fail(suite, error.message)
    return suite


def _save_watched(suite: Suite, watched: str) -> None:
    """Save a watcher's refresh unless the suite moved on meanwhile (a new request, another watcher)."""
    with transaction.atomic():
        current = Suite.objects.select_for_update().filter(pk=suite.pk).values_list("status", "watch_id").first()
        if current == (watched, suite.watch_id):
            suite.save()


def _fail(suite: Suite, message: str, failed_object: str = "") -> None:
    suite.status, suite.last_error, suite.failed_object = SuiteStatus.FAILED, message, failed_object
    suite.finished_at = timezone.now()
    suite.save()


def agent_image_check(image: str) -> dict:
    """Preflight: does the agent image exist? Asked of its registry when that is a registered instance."""
    check = "Agent image"
    try:
        reference = parse_reference(image)
    except InvalidReference as error:
        return {"check": check, "ok": False, "message": f"{image} is not an image address: {error}"}
    instance = next((i for i in Instance.objects.all() if i.host == reference.host), None)
    if instance is None:
        return {"check": check, "ok": True, "message": f"Not checked: {reference.host} is not a registered registry "
                f"instance, so the console cannot look for {image}. Make sure the nodes can pull it."}
    try:
        with instance.registry_client(retries=0) as client:
            found = client.head_manifest(reference.path, reference.tag or "latest")
    except RegistryError as error:
        return {"check": check, "ok": False, "message": f"{image} could not be looked up in {instance.name}: "
                f"{error.message}"}
    if found is None:
        return {"check": check, "ok": False, "message": f"{image} does not exist in {instance.name}: build it with "
                "`make agent-image` and push it there, or mirror it (README, \"The agent image\")."}
    return {"check": check, "ok": True, "message": f"{image} found in {instance.name} ({found.digest})"}


def preflight(session: KubeSession, suite: Suite) -> list[dict]:
    """Checks before install: reachable, a compatible node, namespace free or ours, RBAC allows it,
    and the agent image exists (when the console can look)."""
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
    # Worded to stay true once the install ran (the page keeps showing the checks).
    message = ("did not exist: the install creates it" if existing is None else "managed by apparate" if ours else
               "exists and is not managed by apparate; choose another namespace")
    checks.append({"check": f"Namespace {suite.namespace}", "ok": ours, "message": message})
    denied = []
    params = suite_params(suite)
    for obj in manifests.suite_objects(params):
        namespace = obj["metadata"].get("namespace", "")
        for verb in ("create", "update", "delete"):
            if not session.can_i(verb, obj["kind"], namespace):
                denied.append(f"{verb} {obj['kind']}")
    checks.append({"check": "Permissions", "ok": not denied,
                   "message": f"The cluster credentials may not: {', '.join(denied)}" if denied else
                   "create, update and delete allowed for every object"})
    checks.append(agent_image_check(manifests.image_ref(params)))
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
    suite.status, suite.watch_id = SuiteStatus.ROLLING_OUT, uuid.uuid4().hex
    suite.save(update_fields=["status", "applied", "watch_id", "updated_at"])
    from clusters.tasks import watch_rollout

    watch_id = suite.watch_id
    transaction.on_commit(lambda: watch_rollout.apply_async((suite.pk, watch_id), countdown=1))


def _merge_applied(previously: dict, applied: list[dict]) -> list[dict]:
    now_keys = {(o["kind"], o["name"], o["namespace"]) for o in applied}
    return applied + [o for key, o in previously.items() if key not in now_keys]


def _labelled(item: dict) -> bool:
    labels = (item.get("metadata") or {}).get("labels") or {}
    return labels.get(settings.APPARATE_NODE_LABEL_KEY) == settings.APPARATE_NODE_LABEL_VALUE


def rollout_rows(nodes: list[dict], pods: list[dict], revision: str) -> list[dict]:
    """One row per labelled node: its agent pod, and whether the current agent reports it ready."""
    by_node = {(p.get("spec") or {}).get("nodeName", ""): p for p in pods}
    rows = []
    for item in sorted((n for n in nodes if _labelled(n)), key=lambda n: n["metadata"]["name"]):
        name = item["metadata"]["name"]
        pod = by_node.get(name)
        trouble = pod_trouble(pod) if pod else "not scheduled yet"
        report = agent_report.read_report(item)
        state, reason = lazy_pull_state(True, report, trouble)
        if report is None and pod and not trouble:
            reason = "the agent is starting: it has not reported yet"
        elif state == LazyPull.READY and report["revision"] != revision:
            state, reason = LazyPull.PULLS_IN_FULL, "waiting for the new agent to report (the last report is from " \
                                                    "the previous revision)"
        rows.append({"node": name, "pod": (pod or {}).get("metadata", {}).get("name", ""),
                     "ready": state == LazyPull.READY, "reason": reason})
    return rows


def _read_agents(suite: Suite, node_selector: str = "") -> tuple[dict | None, list[dict], list[dict]]:
    with session_for(suite.cluster) as session:
        ds = session.get_or_none("DaemonSet", manifests.AGENT, suite.namespace)
        nodes = session.list("Node", label_selector=node_selector)
        pods = agent_pods(session, suite.namespace)
    return ds, nodes, pods


def refresh_rollout(suite: Suite) -> Suite:
    """Read the DaemonSet, its pods and the labelled nodes' agent reports; ready when all report ready."""
    labelled = f"{settings.APPARATE_NODE_LABEL_KEY}={settings.APPARATE_NODE_LABEL_VALUE}"
    try:  # the labelled nodes only: a rollout concerns no other
        ds, nodes, pods = _read_agents(suite, labelled)
    except KubeError as error:
        suite.last_error = error.message
        _save_watched(suite, SuiteStatus.ROLLING_OUT)
        return suite
    if ds is None:
        _fail(suite, "The agent DaemonSet is gone from the cluster; install again.",
              f"DaemonSet {suite.namespace}/{manifests.AGENT}")
        return suite
    record_agent_reports(suite.cluster, nodes, {(p.get("spec") or {}).get("nodeName", ""): pod_trouble(p)
                                                for p in pods if pod_trouble(p)})
    status = ds.get("status") or {}
    suite.desired = status.get("desiredNumberScheduled", 0)
    suite.updated = status.get("updatedNumberScheduled", 0)
    revision = ((ds["spec"]["template"]["metadata"].get("annotations") or {})
                .get(manifests.REVISION_ANNOTATION, ""))
    suite.node_status = rollout_rows(nodes, pods, revision)
    suite.ready = sum(1 for row in suite.node_status if row["ready"])
    suite.last_error = ""
    observed = status.get("observedGeneration", 0) >= ds["metadata"].get("generation", 0)
    rolled_out = observed and suite.updated == suite.desired
    if rolled_out and all(row["ready"] for row in suite.node_status):
        suite.status, suite.finished_at = SuiteStatus.READY, timezone.now()
    elif suite.started_at and (timezone.now() - suite.started_at).total_seconds() > \
            settings.APPARATE_SUITE_ROLLOUT_TIMEOUT:
        stuck = "; ".join(f"{row['node']} ({row['reason']})" for row in suite.node_status if not row["ready"])
        suite.status, suite.finished_at = SuiteStatus.FAILED, timezone.now()
        suite.failed_object = f"DaemonSet {suite.namespace}/{manifests.AGENT}"
        suite.last_error = (f"The agent did not become ready in time on: {stuck}" if stuck else
                            "The agent DaemonSet did not finish its rollout in time.")
    _save_watched(suite, SuiteStatus.ROLLING_OUT)
    return suite


def _uninstall(session: KubeSession, suite: Suite) -> None:
    """Ask the agents to clean their nodes up (then `refresh_cleanup` waits); forced: delete at once."""
    has_config = any(o["kind"] == "ConfigMap" and o["name"] == manifests.CONFIG_MAP for o in suite.applied)
    if suite.force or not has_config:
        _delete_objects(session, suite)
        return
    try:
        session.merge_patch("ConfigMap", manifests.CONFIG_MAP,
                            {"data": {agent_report.MODE_KEY: agent_report.UNINSTALL}}, suite.namespace)
    except KubeError as error:
        if error.kind != "not_found":
            raise
        _delete_objects(session, suite)  # no agent can be asked: the ConfigMap they read is gone
        return
    suite.status, suite.cleanup_started_at = SuiteStatus.CLEANING_NODES, timezone.now()
    suite.watch_id = uuid.uuid4().hex
    suite.save(update_fields=["status", "cleanup_started_at", "watch_id", "updated_at"])
    from clusters.tasks import watch_cleanup

    watch_id = suite.watch_id
    transaction.on_commit(lambda: watch_cleanup.apply_async((suite.pk, watch_id), countdown=1))


def refresh_cleanup(suite: Suite) -> Suite:
    """Read every node's agent report: delete the suite once all confirmed their cleanup; name the
    stragglers, and fail after APPARATE_SUITE_UNINSTALL_TIMEOUT (the operator may then force)."""
    timeout = settings.APPARATE_SUITE_UNINSTALL_TIMEOUT
    elapsed = (timezone.now() - (suite.cleanup_started_at or timezone.now())).total_seconds()
    try:
        _ds, nodes, pods = _read_agents(suite)
        record_agent_reports(suite.cluster, nodes, {})
        waiting = agent_report.awaiting_cleanup(nodes, pods)
        suite.node_status = [{"node": name, "ready": False, "reason": why} for name, why in sorted(waiting.items())]
        suite.last_error = ""
        if not waiting:
            with session_for(suite.cluster) as session:
                _forget_reports(session, nodes)
                _delete_objects(session, suite)
            return suite
    except KubeError as error:
        suite.last_error = error.message
        waiting = {row["node"]: row["reason"] for row in suite.node_status}
    if elapsed > timeout:
        stragglers = "; ".join(f"{row['node']} ({row['reason']})" for row in suite.node_status)
        suite.status, suite.finished_at = SuiteStatus.FAILED, timezone.now()
        suite.last_error = (
            f"{len(waiting)} nodes did not confirm their cleanup within {timeout:g} s: {stragglers}. Uninstall "
            "again to keep waiting, or force the uninstall to delete the suite now (a node whose agent cannot "
            "run then keeps the snapshotter and containerd's configuration)."
            if waiting else f"The nodes could not be read within {timeout:g} s: {suite.last_error}")
    _save_watched(suite, SuiteStatus.CLEANING_NODES)
    return suite


def _forget_reports(session: KubeSession, nodes: list[dict]) -> None:
    """Take the agents' `removed` reports off the Nodes: the nodes are as they were."""
    for item in nodes:
        report = agent_report.read_report(item)
        if report is not None and report["code"] == agent_report.REMOVED:
            try:
                session.merge_patch("Node", item["metadata"]["name"],
                                    {"metadata": {"annotations": {agent_report.ANNOTATION: None}}})
            except KubeError as error:
                if error.kind != "not_found":
                    raise


def _delete_objects(session: KubeSession, suite: Suite) -> None:
    """Delete the objects the console created, in reverse order; those that existed before stay."""
    suite.status = SuiteStatus.UNINSTALLING
    suite.save(update_fields=["status", "updated_at"])
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
    Node.objects.filter(cluster=suite.cluster).update(agent_ready=False, agent_report={}, lazy_pull_reason="",
                                                      lazy_pull=LazyPull.NOT_LABELLED)
    Node.objects.filter(cluster=suite.cluster, labelled=True).update(lazy_pull=LazyPull.PULLS_IN_FULL,
                                                                     lazy_pull_reason=NO_AGENT)
    suite.status, suite.finished_at = SuiteStatus.NOT_INSTALLED, timezone.now()
    suite.desired = suite.ready = suite.updated = 0
    suite.node_status = []
    suite.save()


def recover_stale_suites() -> list[int]:
    """Periodic: take up suite operations whose worker died (nothing moved for APPARATE_SUITE_STALE_AFTER
    seconds): operations are enqueued again, watchers restarted (the old chain, if alive, then stops)."""
    from clusters.tasks import run_suite_operation, watch_cleanup, watch_rollout

    cutoff = timezone.now() - timedelta(seconds=settings.APPARATE_SUITE_STALE_AFTER)
    recovered = []
    for suite in Suite.objects.filter(status__in=SUITE_BUSY | {SuiteStatus.ROLLING_OUT}, updated_at__lt=cutoff):
        logger.warning("suite=%s action=recover-stale status=%s", suite.pk, suite.status)
        if suite.status in (SuiteStatus.CLEANING_NODES, SuiteStatus.ROLLING_OUT):
            suite.watch_id = uuid.uuid4().hex
            suite.save(update_fields=["watch_id", "updated_at"])
            task = watch_cleanup if suite.status == SuiteStatus.CLEANING_NODES else watch_rollout
            task.delay(suite.pk, suite.watch_id)
        else:
            run_suite_operation.delay(suite.pk)
        recovered.append(suite.pk)
    return recovered
