"""Node sync, compatibility and labelling, through the official client against the emulator."""

import threading
import time

import pytest
from django.db import connection

from clusters.actions import sync
from clusters.actions.labelling import request_labelling, run_label_job, select_nodes
from clusters.actions.sync import annotate_counts, sync_nodes
from clusters.choices import Compatibility, ConnectionStatus, JobStatus, LabelOperation, LabelResultStatus
from clusters.kube import session_for
from clusters.models import LabelJob, LabelResult, Node
from core.models import AuditEntry
from tests.clusters.conftest import add_fleet
from tests.support.kube_emulator import KubeEmulator

LABEL = "cloud.tencent.com/apparate"
pytestmark = pytest.mark.django_db


def test_connection_reads_version_and_reports_failures(kube_emulator, register):
    cluster = register(kube_emulator)
    ok, message = sync.test_connection(cluster)
    assert ok and "v1.28.4" in message
    cluster.refresh_from_db()
    assert cluster.connection_status == ConnectionStatus.OK and cluster.server_version == "v1.28.4"

    kube_emulator.token_expired = True
    ok, message = sync.test_connection(cluster)
    assert not ok and "expired" in message
    cluster.refresh_from_db()
    assert cluster.connection_status == ConnectionStatus.UNAUTHORIZED

    kube_emulator.stop()
    ok, message = sync.test_connection(cluster)
    assert not ok and "Cannot reach" in message and "connection refused" in message
    cluster.refresh_from_db()
    assert cluster.connection_status == ConnectionStatus.UNREACHABLE


def test_sync_records_facts_and_verdicts(kube_emulator, register):
    add_fleet(kube_emulator)
    kube_emulator.add_node("node-old", kubelet="v1.15.12", runtime="containerd://1.3.9", ready=False)
    cluster = register(kube_emulator)
    result = sync_nodes(cluster)
    assert result.ok and result.created == 5
    nodes = {n.name: n for n in Node.objects.filter(cluster=cluster)}
    a = nodes["node-a"]
    assert (a.kubelet_version, a.container_runtime, a.runtime_version) == ("v1.28.4", "containerd", "1.7.2")
    assert a.os_image.startswith("Ubuntu") and a.architecture == "amd64" and a.kernel_version and a.ready
    assert a.compatibility == Compatibility.COMPATIBLE and a.reasons == []
    assert nodes["node-b"].compatibility == Compatibility.COMPATIBLE
    assert nodes["node-centos"].compatibility == Compatibility.WARNING
    assert "FUSE" in nodes["node-centos"].reasons[0]
    assert nodes["node-docker"].compatibility == Compatibility.INCOMPATIBLE
    assert "docker" in nodes["node-docker"].reasons[0]
    old = nodes["node-old"]
    assert old.compatibility == Compatibility.INCOMPATIBLE and not old.ready
    assert any("older than 1.16" in r for r in old.reasons) and any("1.4.3" in r for r in old.reasons)

    counts = annotate_counts(type(cluster).objects.filter(pk=cluster.pk)).get()
    assert (counts.node_count, counts.compatible_count, counts.labelled_count, counts.ready_count) == (5, 3, 0, 4)

    kube_emulator.delete("nodes", "", "node-old")
    again = sync_nodes(cluster)
    assert again.removed == 1 and again.created == 0
    assert not Node.objects.filter(name="node-old").exists()


def run(job):
    return run_label_job(job.pk)


def test_label_job_patches_with_merge_patch_and_refuses_incompatible(kube_emulator, register, admin_user,
                                                                     django_capture_on_commit_callbacks):
    add_fleet(kube_emulator)
    cluster = register(kube_emulator)
    sync_nodes(cluster)
    nodes = select_nodes(cluster_ids=[cluster.pk])
    with django_capture_on_commit_callbacks() as callbacks:
        job = request_labelling(admin_user, nodes, LabelOperation.LABEL, selection="4 nodes")
    assert len(callbacks) == 1  # enqueued on commit
    assert AuditEntry.objects.filter(model="labeljob", object_id=str(job.pk)).exists()
    job = run(job)
    assert job.status == JobStatus.PARTIAL and job.succeeded == 3 and job.failed == 1
    results = {r.node_name: r for r in LabelResult.objects.filter(job=job)}
    assert results["node-docker"].status == LabelResultStatus.REFUSED
    assert kube_emulator.node("node-a")["metadata"]["labels"][LABEL] == "true"
    assert LABEL not in kube_emulator.node("node-docker")["metadata"]["labels"]
    patches = [r for r in kube_emulator.requests if r[0] == "PATCH"]
    assert len(patches) == 3 and all(r[2] == "application/merge-patch+json" for r in patches)
    assert Node.objects.get(name="node-a").labelled

    # Running the task again changes nothing (guarded by the terminal status).
    run(job)
    assert kube_emulator.count("PATCH", "/nodes/") == 3

    forced = request_labelling(admin_user, nodes.filter(name="node-docker"), LabelOperation.LABEL, force=True)
    assert run(forced).status == JobStatus.SUCCEEDED
    assert kube_emulator.node("node-docker")["metadata"]["labels"][LABEL] == "true"

    unlabel = request_labelling(admin_user, select_nodes(selector=f"{LABEL}=true"),
                                        LabelOperation.UNLABEL)
    assert unlabel.total == 4 and run(unlabel).status == JobStatus.SUCCEEDED
    assert all(LABEL not in kube_emulator.node(n)["metadata"]["labels"] for n in kube_emulator.names("nodes"))
    assert Node.objects.filter(labelled=True).count() == 0


def test_label_job_retries_conflicts_and_transient_errors_and_reports_rbac(kube_emulator, register, admin_user):
    add_fleet(kube_emulator)
    cluster = register(kube_emulator)
    sync_nodes(cluster)
    kube_emulator.touch_node("node-a")  # stale resourceVersion → 409, then a fresh GET and retry
    kube_emulator.fail_next("PATCH", "/nodes/node-b$", 503, times=2)
    kube_emulator.fail_next("PATCH", "/nodes/node-centos$", 429, times=1)
    kube_emulator.deny("patch", "nodes", name="node-docker")
    job = request_labelling(admin_user, select_nodes(cluster_ids=[cluster.pk]), LabelOperation.LABEL,
                                    force=True)
    job = run(job)
    results = {r.node_name: r for r in LabelResult.objects.filter(job=job)}
    assert results["node-a"].status == LabelResultStatus.DONE and results["node-a"].attempts == 2
    assert results["node-b"].status == LabelResultStatus.DONE and results["node-b"].attempts == 3
    assert results["node-centos"].attempts == 2
    denied = results["node-docker"]
    assert denied.status == LabelResultStatus.DENIED and "forbidden" in denied.message
    assert job.status == JobStatus.PARTIAL and job.succeeded == 3 and job.failed == 1


def test_label_job_with_expired_token_fails_every_node_with_a_clear_message(kube_emulator, register, admin_user):
    add_fleet(kube_emulator)
    cluster = register(kube_emulator)
    sync_nodes(cluster)
    kube_emulator.token_expired = True
    job = run(request_labelling(admin_user, select_nodes(all_compatible=True), LabelOperation.LABEL))
    assert job.status == JobStatus.FAILED and job.failed == 3
    assert all("expired" in r.message for r in LabelResult.objects.filter(job=job))


def test_auto_label_policy_labels_new_compatible_nodes_on_sync(kube_emulator, register):
    add_fleet(kube_emulator)
    cluster = register(kube_emulator, auto_label=True)
    result = sync_nodes(cluster)
    job = result.auto_label_job
    assert job is not None and job.total == 3  # the Docker node is not compatible
    run(job)
    assert {n for n in kube_emulator.names("nodes") if LABEL in kube_emulator.node(n)["metadata"]["labels"]} == {
        "node-a", "node-b", "node-centos"}
    kube_emulator.add_node("node-new")
    assert sync_nodes(cluster).auto_label_job.total == 1


def test_labelling_2000_nodes_across_4_clusters(kube_emulator_factory, register, admin_user, settings):
    settings.APPARATE_LABEL_CONCURRENCY = 16
    clusters = []
    for index in range(4):
        emulator = kube_emulator_factory()
        for n in range(500):
            emulator.add_node(f"c{index}-node-{n:03d}")
        emulator.fail_next("PATCH", "/nodes/", 503, times=5)
        cluster = register(emulator, name=f"cluster-{index}")
        assert sync_nodes(cluster).created == 500
        clusters.append((cluster, emulator))
    job = run(request_labelling(admin_user, select_nodes(all_compatible=True), LabelOperation.LABEL))
    assert job.total == 2000 and job.succeeded == 2000 and job.status == JobStatus.SUCCEEDED
    assert LabelResult.objects.filter(job=job, status=LabelResultStatus.DONE).count() == 2000
    assert LabelJob.objects.get(pk=job.pk).finished_at is not None
    for _cluster, emulator in clusters:
        assert all(LABEL in emulator.node(n)["metadata"]["labels"] for n in emulator.names("nodes"))
    assert Node.objects.filter(labelled=True).count() == 2000


class SlowEmulator(KubeEmulator):
    """An API server that takes a while per node PATCH, and records when each starts and how many overlap."""

    def __init__(self, started: list, lock: threading.Lock, **kwargs):
        super().__init__(**kwargs)
        self.started, self.started_lock = started, lock
        self.in_flight = self.peak_in_flight = 0

    def patch(self, plural, namespace, name, patch):
        with self.started_lock:
            self.started.append(self)
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        time.sleep(0.2)  # long beside thread start-up, so calls that are meant to overlap do
        try:
            return super().patch(plural, namespace, name, patch)
        finally:
            with self.started_lock:
                self.in_flight -= 1


def test_label_job_patches_all_clusters_at_once_each_within_its_concurrency(register, admin_user, settings):
    """Every cluster has its own `APPARATE_LABEL_CONCURRENCY` calls in flight from the start (one cluster
    after another would leave the others idle), never more; results and node rows are written in bulk."""
    settings.APPARATE_LABEL_CONCURRENCY = 2
    started, lock = [], threading.Lock()
    emulators = [SlowEmulator(started, lock).start() for _ in range(2)]
    try:
        for index, emulator in enumerate(emulators):
            for n in range(5):
                emulator.add_node(f"c{index}-node-{n}", labels={"team": f"it's \"{index}\" ✓"})
            sync_nodes(register(emulator, name=f"cluster-{index}"))
        job = run(request_labelling(admin_user, select_nodes(all_compatible=True), LabelOperation.LABEL))
    finally:
        for emulator in emulators:
            emulator.stop()
    assert job.status == JobStatus.SUCCEEDED and job.succeeded == 10
    assert [e.peak_in_flight for e in emulators] == [2, 2]
    assert sorted(started[:4], key=emulators.index) == [emulators[0]] * 2 + [emulators[1]] * 2
    results = LabelResult.objects.filter(job=job)
    assert {(r.status, r.attempts, r.message) for r in results} == {(LabelResultStatus.DONE, 1, "")}
    assert all(r.finished_at is not None and r.finished_at >= job.started_at for r in results)
    for index, emulator in enumerate(emulators):
        for node in Node.objects.filter(name__startswith=f"c{index}-"):
            stored = emulator.node(node.name)["metadata"]
            assert node.labels == stored["labels"] and node.labels["team"] == f"it's \"{index}\" ✓"
            assert node.resource_version == stored["resourceVersion"] and node.labelled


@pytest.mark.django_db(transaction=True)
def test_label_job_progress_is_written_while_it_runs(register, admin_user, settings):
    """Results reach the database every PROGRESS_SECONDS, so the job page's "n of m done" moves
    during a slow job rather than jumping at the end."""
    settings.APPARATE_LABEL_CONCURRENCY = 1
    seen: list[int] = []

    class Watching(SlowEmulator):
        def patch(self, plural, namespace, name, patch):
            seen.append(LabelJob.objects.get().succeeded)  # what the page would show as this node starts
            connection.close()  # this server thread's own connection
            return super().patch(plural, namespace, name, patch)

    emulator = Watching([], threading.Lock()).start()
    try:
        for n in range(8):  # 8 calls of 0.2 s one after another: several progress intervals
            emulator.add_node(f"node-{n}")
        sync_nodes(register(emulator))
        job = run(request_labelling(admin_user, select_nodes(all_compatible=True), LabelOperation.LABEL))
    finally:
        emulator.stop()
    assert job.status == JobStatus.SUCCEEDED and job.succeeded == 8
    assert seen[0] == 0 and any(0 < count < 8 for count in seen), seen
    assert seen == sorted(seen)


def test_node_list_follows_continue_pages(kube_emulator, register):
    for n in range(5):
        kube_emulator.add_node(f"n{n}")
    with session_for(register(kube_emulator)) as session:
        names = [item["metadata"]["name"] for item in session.list("Node", page_size=2)]
    assert names == ["n0", "n1", "n2", "n3", "n4"]
    assert kube_emulator.count("GET", "^/api/v1/nodes$") == 3


def test_periodic_sync_is_scheduled_and_survives_a_broken_cluster(kube_emulator_factory, register, settings):
    from console.celery import app

    entry = settings.CELERY_BEAT_SCHEDULE["clusters-sync-nodes"]
    assert entry["task"] in app.tasks and entry["schedule"] == settings.APPARATE_NODE_SYNC_INTERVAL
    healthy, broken = kube_emulator_factory(), kube_emulator_factory()
    healthy.add_node("ok-node")
    register(healthy, name="healthy")
    register(broken, name="broken")
    broken.stop()
    outcome = app.tasks[entry["task"]].apply().get()
    assert outcome["healthy"].startswith("1 nodes") and "Cannot reach" in outcome["broken"]
    assert Node.objects.filter(name="ok-node").exists()


def test_tls_with_ca_client_certificate_and_clear_tls_errors(kube_emulator_factory, register):
    emulator = kube_emulator_factory(tls=True)
    emulator.add_node("secure-node")
    cluster = register(emulator, ca_data=emulator.ca_pem)
    assert sync.test_connection(cluster)[0]

    by_certificate = register(emulator, name="cert", token="", ca_data=emulator.ca_pem,
                              client_certificate=emulator.client_cert_pem, client_key=emulator.client_key_pem)
    assert sync_nodes(by_certificate).created == 1

    unknown_ca = register(emulator, name="no-ca")
    ok, message = sync.test_connection(unknown_ca)
    assert not ok and "TLS verification" in message
    unknown_ca.refresh_from_db()
    assert unknown_ca.connection_status == ConnectionStatus.UNREACHABLE

    skipping = register(emulator, name="insecure", insecure_skip_tls_verify=True)
    assert sync.test_connection(skipping)[0]
