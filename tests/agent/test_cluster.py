"""The agent's side of the Kubernetes API, against the emulator over HTTPS with a service-account
token and CA as a pod has them: its reports, its cleanup decision, the pre-delete hook's wait, and
that every call it makes is one its RBAC (clusters.manifests) allows."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent import report
from agent.cluster import ClusterLink, uninstall_suite
from agent.kubeapi import KubeApi
from agent.status import Code, Status
from clusters import manifests

ROOT = Path(__file__).resolve().parents[2]
LABEL = "cloud.tencent.com/apparate"
NAMESPACE = "apparate-system"
VERBS = {"GET": "get", "PATCH": "patch", "POST": "create", "PUT": "update", "DELETE": "delete"}


def serviceaccount(directory: Path, emulator) -> Path:
    """What kubelet mounts at /var/run/secrets/kubernetes.io/serviceaccount."""
    directory.mkdir()
    (directory / "token").write_text(emulator.token)
    (directory / "ca.crt").write_text(emulator.ca_pem)
    (directory / "namespace").write_text(NAMESPACE)
    return directory


def pod_env(emulator, sa_dir: Path, node: str, **extra) -> dict:
    return {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(emulator.url.rsplit(":", 1)[1]),
            "APPARATE_SERVICEACCOUNT_DIR": str(sa_dir), "APPARATE_NODE_NAME": node, "APPARATE_NAMESPACE": NAMESPACE,
            "APPARATE_POD_NAME": f"apparate-agent-{node}", "APPARATE_AGENT_REVISION": "rev-1",
            "APPARATE_NODE_LABEL": f"{LABEL}=true", **extra}


@pytest.fixture
def cluster(kube_emulator_factory, tmp_path):
    """A TLS API server with the suite's namespace and ConfigMap, two labelled nodes and one without."""
    emulator = kube_emulator_factory(tls=True)
    emulator.create("namespaces", "", {"metadata": {"name": NAMESPACE}})
    emulator.create("configmaps", NAMESPACE, {"metadata": {"name": manifests.CONFIG_MAP},
                                              "data": {"agent.json": "{}"}})
    for name in ("node-a", "node-b"):
        emulator.add_node(name, labels={LABEL: "true"})
    emulator.add_node("node-c")
    return emulator, serviceaccount(tmp_path / "serviceaccount", emulator)


def link_for(emulator, sa_dir, node, **extra) -> ClusterLink:
    link = ClusterLink.from_env(pod_env(emulator, sa_dir, node, **extra))
    assert link is not None
    return link


def annotation(emulator, node) -> dict | None:
    return report.read_report(emulator.node(node))


def allowed(rules: list[dict], verb: str, resource: str, name: str | None) -> bool:
    return any(verb in rule["verbs"] and resource in rule["resources"] and "" in rule["apiGroups"]
               and (not rule.get("resourceNames") or name in rule["resourceNames"]) for rule in rules)


def assert_within_rbac(emulator, cluster_rules: list[dict], namespaced_rules: list[dict]) -> set:
    """Every request made so far is allowed by the rules (cluster-wide ones, or the namespace's)."""
    made = set()
    for method, path, _ in emulator.requests:
        parts = path.strip("/").split("/")[2:]  # after api/v1
        namespace = parts[1] if parts[0] == "namespaces" and len(parts) > 2 else None
        resource_parts = parts[2:] if namespace else parts
        resource, name = resource_parts[0], (resource_parts[1] if len(resource_parts) > 1 else None)
        verb = "list" if method == "GET" and name is None else VERBS[method]
        rules = cluster_rules + (namespaced_rules if namespace == NAMESPACE else [])
        assert allowed(rules, verb, resource, name), (method, path)
        made.add((verb, resource, name))
    return made


def agent_rules() -> tuple[list[dict], list[dict]]:
    rbac = {o["kind"]: o for o in manifests.agent_rbac(NAMESPACE)}
    return rbac["ClusterRole"]["rules"], rbac["Role"]["rules"]


def test_outside_a_pod_there_is_no_link():
    assert ClusterLink.from_env({}) is None
    assert ClusterLink.from_env({"KUBERNETES_SERVICE_HOST": "10.0.0.1"}) is None  # no node name
    link = ClusterLink.from_env({"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "6443",
                                 "APPARATE_NODE_NAME": "n"})
    assert (link.api.server, link.label, link.config_map) == ("https://[fd00::1]:6443",
                                                              ("cloud.tencent.com/apparate", "true"),
                                                              "apparate-agent-config")


def test_reports_are_written_on_the_node_when_they_change_or_are_due(cluster):
    emulator, sa_dir = cluster
    link = link_for(emulator, sa_dir, "node-a")
    ready = Status(True, Code.READY, "containerd uses the stargz snapshotter", "1.6.20",
                   checked_at="2025-01-01T00:00:00Z")

    link.report(ready)
    assert annotation(emulator, "node-a") == {
        "ready": True, "code": "ready", "reason": "containerd uses the stargz snapshotter",
        "containerd_version": "1.6.20", "checked_at": "2025-01-01T00:00:00Z", "revision": "rev-1",
        "pod": "apparate-agent-node-a", "notes": []}
    patches = emulator.count("PATCH", "/nodes/node-a$")
    link.report(Status(True, Code.READY, "containerd uses the stargz snapshotter", "1.6.20",
                       checked_at="2025-01-01T00:00:30Z"))  # the next check: same status, new time
    assert emulator.count("PATCH", "/nodes/node-a$") == patches  # nothing new to say yet
    link.report(Status(False, Code.FUSE_MISSING, "x" * 5000))
    assert emulator.count("PATCH", "/nodes/node-a$") == patches + 1
    written = annotation(emulator, "node-a")
    assert (written["code"], len(written["reason"])) == ("fuse_missing", 1000)  # bounded
    assert written["checked_at"]  # a status without a time gets the time of the report

    due = link_for(emulator, sa_dir, "node-b", APPARATE_REPORT_INTERVAL="0")
    due.report(ready)
    due.report(ready)
    assert emulator.count("PATCH", "/nodes/node-b$") == 2  # unchanged, but due again
    assert assert_within_rbac(emulator, *agent_rules()) == {("patch", "nodes", "node-a"),
                                                            ("patch", "nodes", "node-b")}


def test_the_cleanup_decision(cluster):
    emulator, sa_dir = cluster
    link = link_for(emulator, sa_dir, "node-a")
    assert link.should_clean_up() is False  # pod restart or upgrade: still labelled, no uninstall
    assert link.uninstall_requested() is False

    emulator.patch("nodes", "", "node-a", {"metadata": {"labels": {LABEL: None}}})
    assert link.should_clean_up() is True  # the label was removed
    emulator.patch("nodes", "", "node-a", {"metadata": {"labels": {LABEL: "false"}}})
    assert link.should_clean_up() is True  # another value is not the label either
    emulator.patch("nodes", "", "node-a", {"metadata": {"labels": {LABEL: "true"}}})

    emulator.patch("configmaps", NAMESPACE, manifests.CONFIG_MAP, {"data": {"mode": "uninstall"}})
    assert link.uninstall_requested() is True
    assert link.should_clean_up() is True

    emulator.deny("get", "configmaps")
    assert link.uninstall_requested() is True  # cannot read: the last answer stands
    assert link.should_clean_up() is False  # in doubt, the node is left lazy-pulling
    emulator.denied.clear()

    emulator.delete("configmaps", NAMESPACE, manifests.CONFIG_MAP)
    assert link.should_clean_up() is True  # the suite is being removed
    assert assert_within_rbac(emulator, *agent_rules()) == {("get", "configmaps", "apparate-agent-config"),
                                                            ("get", "nodes", "node-a")}

    emulator.stop()
    assert link.should_clean_up() is False  # the API server cannot be reached: left as it is


def confirm(emulator, node: str, code: Code = Code.REMOVED) -> None:
    status = Status(code == Code.READY, code, "", checked_at="2025-01-01T00:00:00Z")
    value = report.encode(status.as_dict(), "rev-1", f"apparate-agent-{node}")
    emulator.patch("nodes", "", node, {"metadata": {"annotations": {report.ANNOTATION: value}}})


def agent_pod(emulator, node: str, phase: str = "Running") -> None:
    emulator.create("pods", NAMESPACE, {"metadata": {"name": f"apparate-agent-{node}",
                                                     "labels": manifests.AGENT_LABELS}, "spec": {"nodeName": node}})
    with emulator.lock:
        emulator.objects[("pods", NAMESPACE, f"apparate-agent-{node}")]["status"] = {"phase": phase}


def test_the_pre_delete_hook_waits_for_every_node_and_names_stragglers(cluster):
    emulator, sa_dir = cluster
    for node in ("node-a", "node-b"):
        confirm(emulator, node, Code.READY)
        agent_pod(emulator, node)
    confirm(emulator, "node-c", Code.REMOVED)  # cleaned up when its label went
    api = KubeApi.in_cluster(pod_env(emulator, sa_dir, "-"))
    said = []

    waiting = uninstall_suite(api, NAMESPACE, timeout=0, say=said.append)

    data = emulator.get_object("configmaps", manifests.CONFIG_MAP, NAMESPACE)["data"]
    assert data["mode"] == "uninstall"
    assert set(waiting) == {"node-a", "node-b"}
    assert waiting["node-a"] == "the agent has not cleaned up yet (last report: ready (2025-01-01T00:00:00Z))"
    confirm(emulator, "node-a")

    env = {**os.environ, **pod_env(emulator, sa_dir, "-"), "PYTHONPATH": str(ROOT)}
    hook = subprocess.run([sys.executable, "-m", "agent", "uninstall-suite", "--timeout", "0"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert hook.returncode == 1
    assert hook.stderr.splitlines()[0] == "1 nodes did not confirm their cleanup within 0 s:"
    assert hook.stderr.splitlines()[1] == ("  node-b: the agent has not cleaned up yet (last report: ready "
                                           "(2025-01-01T00:00:00Z))")

    confirm(emulator, "node-b")
    started = time.monotonic()
    hook = subprocess.run([sys.executable, "-m", "agent", "uninstall-suite", "--timeout", "30"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert (hook.returncode, hook.stdout.splitlines()[-1]) == (0, "every node confirmed its cleanup")
    assert time.monotonic() - started < 30
    assert all(annotation(emulator, node) is None for node in ("node-a", "node-b", "node-c"))  # as they were
    hook_rules = {o["kind"]: o for o in manifests.uninstall_hook_objects(
        manifests.SuiteParams(NAMESPACE, "r", "", "", False, "i", "1", LABEL, "true"), 240)}
    made = assert_within_rbac(emulator, hook_rules["ClusterRole"]["rules"], hook_rules["Role"]["rules"])
    assert {("list", "nodes", None), ("list", "pods", None), ("patch", "configmaps", "apparate-agent-config"),
            ("patch", "nodes", "node-a")} <= made


def test_the_hook_without_a_config_map_has_nothing_to_ask(cluster):
    emulator, sa_dir = cluster
    emulator.delete("configmaps", NAMESPACE, manifests.CONFIG_MAP)
    said = []
    api = KubeApi.in_cluster(pod_env(emulator, sa_dir, "-"))
    assert uninstall_suite(api, NAMESPACE, timeout=5, say=said.append) == {}
    assert said == ["the ConfigMap apparate-system/apparate-agent-config is gone: agents clean up when they are "
                    "stopped"]


def test_which_nodes_an_uninstall_waits_for():
    def node(name, code=None, ready=True):
        reason = "it did not come back" if code == "containerd_restart_failed" else ""
        annotations = ({report.ANNOTATION: report.encode({"code": code, "checked_at": "t", "reason": reason}, "r", "p")}
                       if code else {})
        return {"metadata": {"name": name, "annotations": annotations},
                "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}

    def pod(name, phase="Running"):
        return {"spec": {"nodeName": name}, "status": {"phase": phase}}

    nodes = [node("done", "removed"), node("never-ran"), node("starting"), node("installed", "ready"),
             node("failed", "containerd_restart_failed"),
             node("down", "ready", ready=False), node("gone", "fuse_missing"), node("pending", "ready"),
             node("broken-agent", "not json")]
    nodes[-1]["metadata"]["annotations"][report.ANNOTATION] = "{not json"
    pods = [pod("starting"), pod("installed"), pod("down"), pod("pending", "Pending"), pod("done"), pod("failed")]
    assert report.awaiting_cleanup(nodes, pods) == {
        "starting": "the agent is running but has not reported yet",
        "installed": "the agent has not cleaned up yet (last report: ready (t))",
        "failed": "the agent has not cleaned up yet (last report: containerd_restart_failed (t): it did not come back)",
        "down": "the node is not Ready: its agent cleans up once the node is back (last report: ready (t))",
        "gone": "no agent runs on this node, and it did not confirm its cleanup (last report: fuse_missing (t))",
        "pending": "the agent pod is Pending (last report: ready (t))",
    }
    assert json.loads(nodes[0]["metadata"]["annotations"][report.ANNOTATION])["code"] == "removed"
