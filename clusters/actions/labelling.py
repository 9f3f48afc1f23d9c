"""Labelling nodes: select them, request a label job, and run it with bounded concurrency and retries."""

import logging
import random
import time
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import ExitStack

from django.conf import settings
from django.db import connections, transaction
from django.db.models import Count, F, Q
from django.utils import timezone

from clusters.choices import (
    JOB_TERMINAL,
    LABEL_RESULT_OK,
    USABLE_COMPATIBILITY,
    JobStatus,
    LabelOperation,
    LabelResultStatus,
)
from clusters.kube import KubeError, KubeSession, session_for
from clusters.models import Cluster, LabelJob, LabelResult, Node
from clusters.validators import parse_label_selector, selector_matches
from core.audit import record
from core.queue import UNAVAILABLE_REASON, send_on_commit

logger = logging.getLogger(__name__)

MAX_LABEL_THREADS = 128

PROGRESS_SECONDS = 0.5  # results are written, and progress shown, this often (the job page polls every 1 s)

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
        send_on_commit(lambda: run_label_job.delay(job.pk), lambda: _not_sent(job.pk))
    return job


def _not_sent(job_id: int) -> None:
    """A label job the broker could not take: failed, and each of its pending nodes with it, for that reason."""
    now = timezone.now()
    failed = LabelResult.objects.filter(job_id=job_id, status=LabelResultStatus.PENDING).update(
        status=LabelResultStatus.FAILED, message=UNAVAILABLE_REASON, finished_at=now)
    LabelJob.objects.filter(pk=job_id, status=JobStatus.PENDING).update(
        status=JobStatus.FAILED, last_error=UNAVAILABLE_REASON, finished_at=now, failed=F("failed") + failed)


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
    APPARATE_LABEL_CONCURRENCY calls in flight per cluster; results are written in bulk every PROGRESS_SECONDS."""
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
    # One pool per cluster, so every cluster has its own calls in flight from the start (a shared pool
    # fed cluster by cluster left most threads waiting on the first cluster); the thread budget is shared.
    workers = max(1, min(concurrency, MAX_LABEL_THREADS // max(len(clusters), 1)))
    sessions = {pk: session_for(cluster, pool_size=workers) for pk, cluster in clusters.items()}
    aborts: dict[int, dict] = {pk: {} for pk in clusters}

    def label(result: LabelResult) -> dict | None:
        """PATCH one node and note the outcome on its result; the job's own thread writes it later, in bulk."""
        result.status, result.message, result.attempts, obj = _label_one(
            sessions[result.cluster_id], result.node_name, labels,
            result.node.resource_version if result.node else "", aborts[result.cluster_id])
        result.finished_at = timezone.now()
        return obj

    try:
        with ExitStack() as stack:
            pools = {pk: stack.enter_context(ThreadPoolExecutor(workers, thread_name_prefix=f"label-{pk}"))
                     for pk in clusters}
            futures = {pools[result.cluster_id].submit(label, result): result for result in pending}
            waiting = set(futures)
            while waiting:
                # Wake when all is done or progress is due: one wake-up per interval rather than per
                # node leaves the CPU to the PATCH threads.
                done, waiting = wait(waiting, timeout=PROGRESS_SECONDS)
                nodes = []
                for future in done:
                    obj, node = future.result(), futures[future].node
                    if obj is not None and node is not None:
                        node.labels = obj["metadata"].get("labels") or {}
                        node.resource_version = obj["metadata"].get("resourceVersion", "")
                        node.labelled = node.labels.get(key) == value
                        nodes.append(node)
                _save_results(job, [futures[future] for future in done], nodes)
    finally:
        for session in sessions.values():
            session.close()
    return _finish_job(job)

def _write_rows(model, fields: list[str], rows: list, chunk: int = 500) -> None:
    """UPDATE many rows, each with its own values, in one `UPDATE … FROM (VALUES …)` per chunk of rows.

    bulk_update's CASE expressions cost seconds of CPU for thousands of rows, and executemany one
    round trip per row (most of the label job's overhead on PostgreSQL); this is one round trip per chunk.
    """
    if not rows:
        return
    connection = connections[model.objects.db]
    quote = connection.ops.quote_name
    columns = [model._meta.pk, *(model._meta.get_field(name) for name in fields)]
    if connection.vendor == "postgresql":  # VALUES columns are typed from their literals: name each type
        row_sql = "(" + ", ".join(f"CAST(%s AS {column.db_type(connection)})" for column in columns) + ")"
    else:  # SQLite applies each column's affinity on assignment (a CAST to datetime would make it a number)
        row_sql = "(" + ", ".join("%s" for _ in columns) + ")"
    table = quote(model._meta.db_table)
    # VALUES columns are called column1, column2, … in both PostgreSQL and SQLite; column1 is the key.
    assignments = ", ".join(f"{quote(column.column)} = v.column{index}"
                            for index, column in enumerate(columns[1:], start=2))
    with connection.cursor() as cursor:
        for first in range(0, len(rows), chunk):
            part = rows[first:first + chunk]
            # Identifiers and types come from model metadata (quoted); every value is a query parameter.
            sql = (f"UPDATE {table} SET {assignments} FROM (VALUES {', '.join([row_sql] * len(part))}) AS v "  # noqa: S608
                   f"WHERE {table}.{quote(model._meta.pk.column)} = v.column1")
            cursor.execute(sql, [column.get_db_prep_save(getattr(row, column.attname), connection)
                                 for row in part for column in columns])

def _save_results(job: LabelJob, batch: list[LabelResult], nodes: list[Node]) -> None:
    """Write finished results and the nodes they changed, and the job's counts: one transaction."""
    if not batch:
        return
    with transaction.atomic():  # one commit per batch, not one per row
        _write_rows(LabelResult, ["status", "message", "attempts", "finished_at"], batch)
        _write_rows(Node, ["labels", "resource_version", "labelled"], nodes)
        counts = LabelResult.objects.filter(job=job).aggregate(
            ok=Count("pk", filter=Q(status__in=LABEL_RESULT_OK)),
            bad=Count("pk", filter=~Q(status__in=[*LABEL_RESULT_OK, LabelResultStatus.PENDING])),
        )
        LabelJob.objects.filter(pk=job.pk).update(succeeded=counts["ok"], failed=counts["bad"])

def _finish_job(job: LabelJob) -> LabelJob:
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
