"""Cluster connections and node sync: what each node is, whether it can lazy-pull, and its label.

Whether a labelled node is ready to lazy-pull comes from its agent's report, an annotation the
agent writes on its own Node (agent.report): ready when the agent says containerd uses the loaded
stargz snapshotter, else the agent's reason, "agent not running yet" (with its pod's trouble when
it has one), or a report too old to trust. Until then the node pulls accelerated twins in full.
"""

import logging
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Q
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from agent import report as agent_report
from clusters import manifests
from clusters.actions.labelling import request_labelling
from clusters.choices import (
    USABLE_COMPATIBILITY,
    ConnectionStatus,
    LabelOperation,
    LazyPull,
    SyncStatus,
)
from clusters.compatibility import verdict
from clusters.kube import KubeError, KubeSession, session_for
from clusters.models import Cluster, LabelJob, Node, Suite
from core.queue import UNAVAILABLE_REASON, send_on_commit

logger = logging.getLogger(__name__)

CONNECTION_STATUS_OF = {"unauthorized": ConnectionStatus.UNAUTHORIZED, "unreachable": ConnectionStatus.UNREACHABLE,
                        "tls": ConnectionStatus.UNREACHABLE}

def annotate_counts(queryset):
    """Clusters with node counts: nodes, compatible (incl. warnings), labelled, ready, ready to lazy-pull."""
    return queryset.annotate(
        node_count=Count("nodes"),
        compatible_count=Count("nodes", filter=Q(nodes__compatibility__in=USABLE_COMPATIBILITY)),
        labelled_count=Count("nodes", filter=Q(nodes__labelled=True)),
        ready_count=Count("nodes", filter=Q(nodes__ready=True)),
        lazy_pull_ready_count=Count("nodes", filter=Q(nodes__lazy_pull=LazyPull.READY)),
    )

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

NO_AGENT = "agent not running yet"


def lazy_pull_state(labelled: bool, report: dict | None, pod_trouble: str = "", now=None) -> tuple[str, str]:
    """(LazyPull state, reason) of a node, from its label and its agent's last report."""
    now = now or timezone.now()
    code = report["code"] if report else ""
    if not labelled:
        if report and code != agent_report.REMOVED:
            return LazyPull.NOT_LABELLED, ("the label was removed; the agent has not confirmed that it cleaned "
                                           f"the node up (last report: {code})")
        return LazyPull.NOT_LABELLED, ""
    if report is None:
        return LazyPull.PULLS_IN_FULL, NO_AGENT + (f": its pod is {pod_trouble}" if pod_trouble else "")
    checked = parse_datetime(report["checked_at"]) if report["checked_at"] else None
    if checked is None or (now - checked).total_seconds() > settings.APPARATE_AGENT_REPORT_STALE_AFTER:
        since = report["checked_at"] or "an unknown time"
        return LazyPull.PULLS_IN_FULL, ((f"agent not running: its pod is {pod_trouble}; " if pod_trouble else "")
                                        + f"no report from the agent since {since}")
    if code == agent_report.REMOVED:
        return LazyPull.PULLS_IN_FULL, "the agent cleaned this node up (suite uninstall)"
    if report["ready"] and code == agent_report.READY:
        return LazyPull.READY, ""
    return LazyPull.PULLS_IN_FULL, report["reason"] or f"the agent reports {code}"


def agent_facts(item: dict, labelled: bool, pod_trouble: str = "") -> dict:
    """The Node fields that come from the agent's report."""
    report = agent_report.read_report(item)
    state, reason = lazy_pull_state(labelled, report, pod_trouble)
    return {"agent_report": report or {}, "lazy_pull": state, "lazy_pull_reason": reason,
            "agent_ready": state == LazyPull.READY}


def _node_facts(item: dict, label_key: str, label_value: str, pod_troubles: dict[str, str]) -> dict:
    meta, status = item.get("metadata") or {}, item.get("status") or {}
    info = status.get("nodeInfo") or {}
    runtime, _, runtime_version = (info.get("containerRuntimeVersion") or "").partition("://")
    labels = meta.get("labels") or {}
    labelled = labels.get(label_key) == label_value
    judged = verdict(info.get("kubeletVersion", ""), runtime, runtime_version, info.get("osImage", ""),
                     info.get("operatingSystem", "linux"))
    return {
        "uid": meta.get("uid", ""), "resource_version": meta.get("resourceVersion", ""), "labels": labels,
        "ready": agent_report.node_ready(item), "kubelet_version": info.get("kubeletVersion", ""),
        "container_runtime": runtime, "runtime_version": runtime_version, "os_image": info.get("osImage", ""),
        "kernel_version": info.get("kernelVersion", ""), "architecture": info.get("architecture", ""),
        "labelled": labelled, **agent_facts(item, labelled, pod_troubles.get(meta.get("name", ""), "")),
        "compatibility": judged.compatibility, "reasons": judged.reasons,
    }


def agent_pods(session: KubeSession, namespace: str) -> list[dict]:
    return session.list("Pod", namespace, label_selector=manifests.AGENT_SELECTOR)


def pod_trouble(pod: dict) -> str:
    """What keeps an agent pod from running (ImagePullBackOff, CrashLoopBackOff, Pending...), or ""."""
    status = pod.get("status") or {}
    for container in status.get("containerStatuses") or []:
        waiting = (container.get("state") or {}).get("waiting")
        if waiting and waiting.get("reason") not in (None, "", "ContainerCreating"):
            return waiting["reason"]
    return "" if status.get("phase") == "Running" else status.get("phase", "Pending")


def _pod_troubles(session: KubeSession, cluster: Cluster) -> dict[str, str]:
    suite = Suite.objects.filter(cluster=cluster).first()
    if suite is None or not suite.applied:
        return {}
    try:
        pods = agent_pods(session, suite.namespace)
    except KubeError:
        return {}
    troubles = {(p.get("spec") or {}).get("nodeName", ""): pod_trouble(p) for p in pods}
    return {node: trouble for node, trouble in troubles.items() if trouble}


def record_agent_reports(cluster: Cluster, items: list[dict], pod_troubles: dict[str, str]) -> None:
    """Refresh the agent fields of the cluster's known nodes from Node objects just read."""
    key, value = settings.APPARATE_NODE_LABEL_KEY, settings.APPARATE_NODE_LABEL_VALUE
    by_name = {(item.get("metadata") or {}).get("name"): item for item in items}
    changed = []
    for node in Node.objects.filter(cluster=cluster, name__in=list(by_name)):
        item = by_name[node.name]
        labelled = ((item.get("metadata") or {}).get("labels") or {}).get(key) == value
        facts = {"labelled": labelled, **agent_facts(item, labelled, pod_troubles.get(node.name, ""))}
        if any(getattr(node, f) != v for f, v in facts.items()):
            for f, v in facts.items():
                setattr(node, f, v)
            changed.append(node)
    Node.objects.bulk_update(changed, ["labelled", "agent_report", "lazy_pull", "lazy_pull_reason", "agent_ready"],
                             batch_size=500)


def sync_nodes(cluster: Cluster) -> SyncResult:
    """Read every node of the cluster and store its facts and verdict; auto-label if the policy says so."""
    try:
        with session_for(cluster) as session:
            items = session.list("Node")
            troubles = _pod_troubles(session, cluster)
    except KubeError as error:
        _record_connection(cluster, CONNECTION_STATUS_OF.get(error.kind, ConnectionStatus.ERROR), error.message)
        return SyncResult(False, error.message)
    key, value = settings.APPARATE_NODE_LABEL_KEY, settings.APPARATE_NODE_LABEL_VALUE
    seen = {item["metadata"]["name"]: _node_facts(item, key, value, troubles) for item in items}
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

def request_sync(cluster: Cluster, test_first: bool = False) -> Cluster:
    """Queue a node sync (after a connection test, for a cluster just registered or moved) in a worker.

    The cluster's `sync_status` says it is queued until the worker takes it; a sync already queued
    is not queued twice.
    """
    from clusters.tasks import sync_cluster_nodes

    with transaction.atomic():
        queued = Cluster.objects.filter(pk=cluster.pk).exclude(sync_status=SyncStatus.QUEUED).update(
            sync_status=SyncStatus.QUEUED)
        if queued:  # a sync the broker could not take does not stay queued for nobody
            send_on_commit(lambda: sync_cluster_nodes.delay(cluster.pk, test_first),
                           lambda: Cluster.objects.filter(pk=cluster.pk, sync_status=SyncStatus.QUEUED).update(
                               sync_status=SyncStatus.IDLE, sync_message=UNAVAILABLE_REASON))
    cluster.sync_status = SyncStatus.QUEUED
    return cluster


def run_sync(cluster_id: int, test_first: bool = False) -> str:
    """A sync in a worker (the task's body): optionally test the connection, sync, record the outcome."""
    cluster = Cluster.objects.filter(pk=cluster_id).first()
    if cluster is None:
        return "cluster deleted"
    Cluster.objects.filter(pk=cluster.pk).update(sync_status=SyncStatus.RUNNING)
    message = ""
    try:
        ok, message = test_connection(cluster) if test_first else (True, "")
        if ok:
            result = sync_nodes(cluster)
            message = result.message
            if result.auto_label_job:
                message += f" The auto-label policy started label job #{result.auto_label_job.pk}."
    finally:
        Cluster.objects.filter(pk=cluster.pk).update(sync_status=SyncStatus.IDLE, sync_message=message)
    return message


def sync_all_clusters() -> dict[str, str]:
    """Periodic: sync every cluster; one failing cluster doesn't stop the others."""
    return {cluster.name: run_sync(cluster.pk) for cluster in Cluster.objects.all()}
