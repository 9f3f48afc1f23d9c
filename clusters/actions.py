"""Domain verbs of the clusters app; views, the API and tasks all call these.

Outbound calls go through clusters.kube only. Machine-written fields (connection status, node
facts, job progress) are written with queryset updates or on models that opt out of the audit
log; every operator request (labelling, suite operations, deploys) is audited when it is made.
"""

import logging
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field

import yaml
from django.conf import settings
from django.db import connections, transaction
from django.db.models import Count, OuterRef, Q, Subquery
from django.utils import timezone

from clusters import manifests
from clusters.choices import (
    JOB_TERMINAL,
    LABEL_RESULT_OK,
    SUITE_BUSY,
    USABLE_COMPATIBILITY,
    ConnectionStatus,
    DeployStatus,
    JobStatus,
    LabelOperation,
    LabelResultStatus,
    SuiteOperation,
    SuiteStatus,
)
from clusters.compatibility import verdict
from clusters.kube import Connection, KubeError, KubeSession, ref
from clusters.models import Cluster, DeployRequest, LabelJob, LabelResult, Node, Suite
from clusters.validators import parse_label_selector, selector_matches
from console.audit import record
from converter.reference import ImageReference
from registries.models import Instance
from rules.choices import JobStatus as ConversionStatus
from rules.models import ConversionJob

logger = logging.getLogger(__name__)
MAX_LABEL_THREADS = 128
PROGRESS_BATCH = 200  # results written (and progress shown) every this many nodes
CONNECTION_STATUS_OF = {"unauthorized": ConnectionStatus.UNAUTHORIZED, "unreachable": ConnectionStatus.UNREACHABLE,
                        "tls": ConnectionStatus.UNREACHABLE}


def session_for(cluster: Cluster, pool_size: int = 4) -> KubeSession:
    return KubeSession(Connection.of(cluster), pool_size=pool_size)


def annotate_counts(queryset):
    """Clusters with node counts: nodes, compatible (incl. warnings), labelled, ready."""
    return queryset.annotate(
        node_count=Count("nodes"),
        compatible_count=Count("nodes", filter=Q(nodes__compatibility__in=USABLE_COMPATIBILITY)),
        labelled_count=Count("nodes", filter=Q(nodes__labelled=True)),
        ready_count=Count("nodes", filter=Q(nodes__ready=True)),
    )


# --- connection and node sync ----------------------------------------------------------------
def test_connection(cluster: Cluster) -> tuple[bool, str]:
    """Read /version; record the outcome on the cluster. (ok, message)."""
    try:
        with session_for(cluster) as session:
            info = session.version()
    except KubeError as error:
        _record_connection(cluster, CONNECTION_STATUS_OF.get(error.kind, ConnectionStatus.ERROR), error.message)
        return False, error.message
    version = str(info.get("gitVersion") or f"v{info.get('major')}.{info.get('minor')}")
    _record_connection(cluster, ConnectionStatus.OK, "", version)
    return True, f"Connected: Kubernetes {version}."


def _record_connection(cluster: Cluster, status: str, error: str, version: str | None = None) -> None:
    values = {"connection_status": status, "last_error": error, "last_checked_at": timezone.now()}
    if version is not None:
        values["server_version"] = version
    Cluster.objects.filter(pk=cluster.pk).update(**values)
    for name, value in values.items():
        setattr(cluster, name, value)


@dataclass
class SyncResult:
    ok: bool
    message: str
    created: int = 0
    updated: int = 0
    removed: int = 0
    auto_label_job: LabelJob | None = None


def _node_facts(item: dict, label_key: str, label_value: str, agent_ready_nodes: set[str]) -> dict:
    meta, status = item.get("metadata") or {}, item.get("status") or {}
    info = status.get("nodeInfo") or {}
    runtime, _, runtime_version = (info.get("containerRuntimeVersion") or "").partition("://")
    labels = meta.get("labels") or {}
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
    judged = verdict(info.get("kubeletVersion", ""), runtime, runtime_version, info.get("osImage", ""),
                     info.get("operatingSystem", "linux"))
    return {
        "uid": meta.get("uid", ""), "resource_version": meta.get("resourceVersion", ""), "labels": labels,
        "ready": ready, "kubelet_version": info.get("kubeletVersion", ""), "container_runtime": runtime,
        "runtime_version": runtime_version, "os_image": info.get("osImage", ""),
        "kernel_version": info.get("kernelVersion", ""), "architecture": info.get("architecture", ""),
        "labelled": labels.get(label_key) == label_value, "agent_ready": meta.get("name") in agent_ready_nodes,
        "compatibility": judged.compatibility, "reasons": judged.reasons,
    }


def _agent_ready_nodes(session: KubeSession, cluster: Cluster) -> set[str]:
    suite = Suite.objects.filter(cluster=cluster).first()
    if suite is None or not suite.applied:
        return set()
    try:
        pods = session.list("Pod", suite.namespace, label_selector=f"app.kubernetes.io/name={manifests.AGENT}")
    except KubeError:
        return set()
    return {p["spec"].get("nodeName") for p in pods if _pod_ready(p)}


def _pod_ready(pod: dict) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def sync_nodes(cluster: Cluster) -> SyncResult:
    """Read every node of the cluster and store its facts and verdict; auto-label if the policy says so."""
    try:
        with session_for(cluster) as session:
            items = session.list("Node")
            agents = _agent_ready_nodes(session, cluster)
    except KubeError as error:
        _record_connection(cluster, CONNECTION_STATUS_OF.get(error.kind, ConnectionStatus.ERROR), error.message)
        return SyncResult(False, error.message)
    key, value = settings.APPARATE_NODE_LABEL_KEY, settings.APPARATE_NODE_LABEL_VALUE
    seen = {item["metadata"]["name"]: _node_facts(item, key, value, agents) for item in items}
    fields = list(next(iter(seen.values())).keys()) if seen else []
    with transaction.atomic():
        existing = {node.name: node for node in Node.objects.select_for_update().filter(cluster=cluster)}
        created = [Node(cluster=cluster, name=name, **facts) for name, facts in seen.items() if name not in existing]
        changed = []
        for name, facts in seen.items():
            node = existing.get(name)
            if node is not None and any(getattr(node, f) != v for f, v in facts.items()):
                for f, v in facts.items():
                    setattr(node, f, v)
                changed.append(node)
        Node.objects.bulk_create(created, batch_size=500)
        if changed:
            for node in changed:
                node.last_seen_at = timezone.now()
            Node.objects.bulk_update(changed, [*fields, "last_seen_at"], batch_size=500)
        removed, _ = Node.objects.filter(cluster=cluster).exclude(name__in=list(seen)).delete()
        Cluster.objects.filter(pk=cluster.pk).update(
            last_synced_at=timezone.now(), connection_status=ConnectionStatus.OK, last_error=""
        )
    result = SyncResult(True, f"{len(seen)} nodes: {len(created)} new, {len(changed)} changed, {removed} removed.",
                        len(created), len(changed), removed)
    if cluster.auto_label and created:
        fresh = Node.objects.filter(cluster=cluster, name__in=[n.name for n in created],
                                    compatibility__in=USABLE_COMPATIBILITY, labelled=False)
        if fresh.exists():
            result.auto_label_job = request_labelling(
                None, fresh, LabelOperation.LABEL, force=False, selection=f"auto-label policy of {cluster.name}"
            )
    return result


def sync_all_clusters() -> dict[str, str]:
    """Periodic: sync every cluster; one failing cluster doesn't stop the others."""
    return {cluster.name: sync_nodes(cluster).message for cluster in Cluster.objects.all()}


# --- labelling ---------------------------------------------------------------------------------
def select_nodes(cluster_ids=None, node_ids=None, all_compatible: bool = False, selector: str = ""):
    """Nodes chosen by checkbox (ids), by "all compatible", or by a label selector, in some clusters."""
    nodes = Node.objects.select_related("cluster")
    if cluster_ids:
        nodes = nodes.filter(cluster_id__in=cluster_ids)
    if node_ids:
        nodes = nodes.filter(pk__in=node_ids)
    if all_compatible:
        nodes = nodes.filter(compatibility__in=USABLE_COMPATIBILITY)
    if selector:
        terms = parse_label_selector(selector)
        matching = [n.pk for n in nodes.select_related(None).only("pk", "labels") if selector_matches(terms, n.labels)]
        nodes = Node.objects.select_related("cluster").filter(pk__in=matching)
    return nodes


def request_labelling(user, nodes, operation: str, force: bool = False, selection: str = "") -> LabelJob:
    """Create a label job with one result per node, audit the request, and enqueue it on commit.

    Labelling an incompatible node is refused (recorded per node) unless `force` is set.
    """
    from clusters.tasks import run_label_job

    with transaction.atomic():
        job = LabelJob.objects.create(operation=operation, force=force, selection=selection[:500],
                                      requested_by=user if user and user.is_authenticated else None)
        results = []
        for node in nodes.select_related(None).only("pk", "name", "cluster_id", "compatibility"):
            refused = (operation == LabelOperation.LABEL and not force
                       and node.compatibility not in USABLE_COMPATIBILITY)
            results.append(LabelResult(
                job=job, cluster_id=node.cluster_id, node=node, node_name=node.name,
                status=LabelResultStatus.REFUSED if refused else LabelResultStatus.PENDING,
                message="Incompatible node: label it anyway with 'force'." if refused else "",
                finished_at=timezone.now() if refused else None,
            ))
        LabelResult.objects.bulk_create(results, batch_size=1000)
        refused_count = sum(1 for r in results if r.status == LabelResultStatus.REFUSED)
        LabelJob.objects.filter(pk=job.pk).update(total=len(results), failed=refused_count)
        job.total, job.failed = len(results), refused_count
        record("create", job, {"operation": {"old": None, "new": operation}, "force": {"old": None, "new": force},
                               "selection": {"old": None, "new": selection},
                               "nodes": {"old": None, "new": len(results)}})
        transaction.on_commit(lambda: run_label_job.delay(job.pk))
    return job


def _backoff(attempt: int) -> float:
    return min(0.1 * 2 ** (attempt - 1), 5.0) * random.uniform(0.5, 1.5)  # noqa: S311 (jitter, not crypto)


def _label_one(session: KubeSession, name: str, labels: dict, resource_version: str, abort: dict):
    """Patch one node, retrying 409 (with a fresh resourceVersion), 429, 5xx and connection errors.

    Returns (status, message, attempts, node object or None).
    """
    max_attempts = settings.APPARATE_LABEL_MAX_ATTEMPTS
    last = ""
    for attempt in range(1, max_attempts + 1):
        if abort.get("message"):
            return LabelResultStatus.FAILED, abort["message"], attempt - 1, None
        try:
            obj = session.patch_node_labels(name, labels, resource_version)
        except KubeError as error:
            last = error.message
            if error.kind == "conflict":
                try:
                    resource_version = session.get("Node", name)["metadata"]["resourceVersion"]
                except KubeError as refresh:
                    if refresh.kind == "not_found":
                        return LabelResultStatus.NOT_FOUND, "The node no longer exists.", attempt, None
                    last = refresh.message
                continue
            if error.kind == "forbidden":
                return LabelResultStatus.DENIED, error.message, attempt, None
            if error.kind == "not_found":
                return LabelResultStatus.NOT_FOUND, "The node no longer exists.", attempt, None
            if error.kind in {"unauthorized", "tls"}:
                abort["message"] = error.message
                return LabelResultStatus.FAILED, error.message, attempt, None
            if error.retryable and attempt < max_attempts:
                time.sleep(_backoff(attempt))
                continue
            if error.kind == "unreachable":
                abort["message"] = error.message
            return LabelResultStatus.FAILED, error.message, attempt, None
        unchanged = obj["metadata"].get("resourceVersion") == resource_version and bool(resource_version)
        return (LabelResultStatus.UNCHANGED if unchanged else LabelResultStatus.DONE), "", attempt, obj
    return LabelResultStatus.FAILED, f"Gave up after {max_attempts} attempts: {last}", max_attempts, None


def run_label_job(job_id: int) -> LabelJob | None:
    """Patch every pending node of the job: all clusters at once, at most
    APPARATE_LABEL_CONCURRENCY calls in flight per cluster; results are written as they arrive."""
    with transaction.atomic():
        job = LabelJob.objects.select_for_update().filter(pk=job_id).first()
        if job is None or job.status in JOB_TERMINAL:
            return job
        job.status, job.attempts = JobStatus.RUNNING, job.attempts + 1
        job.started_at = job.started_at or timezone.now()
        job.save(update_fields=["status", "attempts", "started_at"])
    key, value = settings.APPARATE_NODE_LABEL_KEY, settings.APPARATE_NODE_LABEL_VALUE
    labels = {key: value if job.operation == LabelOperation.LABEL else None}
    pending = list(LabelResult.objects.filter(job=job, status=LabelResultStatus.PENDING).select_related("node"))
    clusters = Cluster.objects.in_bulk({r.cluster_id for r in pending})
    concurrency = max(1, settings.APPARATE_LABEL_CONCURRENCY)
    sessions = {pk: session_for(cluster, pool_size=concurrency) for pk, cluster in clusters.items()}
    slots = {pk: threading.BoundedSemaphore(concurrency) for pk in clusters}
    aborts: dict[int, dict] = {pk: {} for pk in clusters}

    def label(result: LabelResult):
        with slots[result.cluster_id]:
            return _label_one(sessions[result.cluster_id], result.node_name, labels,
                              result.node.resource_version if result.node else "", aborts[result.cluster_id])

    done_nodes: list[Node] = []
    batch: list[LabelResult] = []
    try:
        with ThreadPoolExecutor(min(concurrency * max(len(clusters), 1), MAX_LABEL_THREADS)) as pool:
            futures = {pool.submit(label, result): result for result in pending}
            for future in as_completed(futures):
                result = futures[future]
                result.status, result.message, result.attempts, obj = future.result()
                result.finished_at = timezone.now()
                batch.append(result)
                if obj is not None and result.node is not None:
                    node = result.node
                    node.labels = obj["metadata"].get("labels") or {}
                    node.resource_version = obj["metadata"].get("resourceVersion", "")
                    node.labelled = node.labels.get(key) == value
                    done_nodes.append(node)
                if len(batch) >= PROGRESS_BATCH:
                    _save_results(job, batch)
                    batch = []
    finally:
        for session in sessions.values():
            session.close()
    _save_results(job, batch)
    _write_rows(Node, ["labels", "resource_version", "labelled"], done_nodes)
    return _finish_job(job)


def _write_rows(model, fields: list[str], rows: list) -> None:
    """UPDATE many rows, each with its own values, in one executemany.

    bulk_update's CASE expressions cost seconds of CPU for thousands of rows; this costs milliseconds.
    """
    if not rows:
        return
    connection = connections[model.objects.db]
    columns = [model._meta.get_field(name) for name in fields]
    quote = connection.ops.quote_name
    assignments = ", ".join(f"{quote(column.column)} = %s" for column in columns)
    # Identifiers come from model metadata (quoted); every value is a query parameter.
    sql = f"UPDATE {quote(model._meta.db_table)} SET {assignments} WHERE {quote(model._meta.pk.column)} = %s"  # noqa: S608
    params = [[column.get_db_prep_save(getattr(row, column.attname), connection) for column in columns] + [row.pk]
              for row in rows]
    with connection.cursor() as cursor:
        cursor.executemany(sql, params)


def _save_results(job: LabelJob, batch: list[LabelResult]) -> None:
    if not batch:
        return
    _write_rows(LabelResult, ["status", "message", "attempts", "finished_at"], batch)
    counts = LabelResult.objects.filter(job=job).aggregate(
        ok=Count("pk", filter=Q(status__in=LABEL_RESULT_OK)),
        bad=Count("pk", filter=~Q(status__in=[*LABEL_RESULT_OK, LabelResultStatus.PENDING])),
    )
    LabelJob.objects.filter(pk=job.pk).update(succeeded=counts["ok"], failed=counts["bad"])


def _finish_job(job: LabelJob) -> LabelJob:
    _save_results(job, [])
    job.refresh_from_db()
    results = LabelResult.objects.filter(job=job)
    counts = results.aggregate(ok=Count("pk", filter=Q(status__in=LABEL_RESULT_OK)),
                               pending=Count("pk", filter=Q(status=LabelResultStatus.PENDING)))
    bad = job.total - counts["ok"] - counts["pending"]
    if counts["pending"]:
        job.status = JobStatus.FAILED
        job.last_error = f"{counts['pending']} nodes were not attempted."
    elif bad == 0:
        job.status = JobStatus.SUCCEEDED
    else:
        job.status = JobStatus.PARTIAL if counts["ok"] else JobStatus.FAILED
    job.succeeded, job.failed, job.finished_at = counts["ok"], bad, timezone.now()
    job.save(update_fields=["status", "succeeded", "failed", "finished_at", "last_error"])
    return job


# --- acceleration suite ---------------------------------------------------------------------
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
        nodes.append({"node": pod["spec"].get("nodeName", ""), "pod": pod["metadata"]["name"], "ready": _pod_ready(pod),
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


# --- deploy ------------------------------------------------------------------------------
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


def deploy(plan: DeployPlan, user=None) -> DeployRequest:
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
