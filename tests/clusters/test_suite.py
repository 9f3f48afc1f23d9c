"""The acceleration suite against the API emulator: preflight, idempotent install, a rollout that is
ready only when every labelled node's agent reports ready, upgrade, an uninstall that waits for the
nodes to confirm their cleanup (stragglers, timeout, force), and operations whose worker died."""

import base64
import json
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from agent.status import Code, Status, fuse_missing
from clusters.actions.suite import (
    SuiteBusy,
    refresh_cleanup,
    refresh_rollout,
    request_suite_operation,
    run_suite_operation,
)
from clusters.actions.sync import sync_nodes
from clusters.choices import LazyPull, SuiteOperation, SuiteStatus
from clusters.models import Node, Suite
from clusters.tasks import recover_stale_suites
from registries.models import Instance
from tests.clusters.conftest import add_fleet
from tests.support.images import push_image

LABEL = "cloud.tencent.com/apparate"
pytestmark = pytest.mark.django_db

SUITE = {("namespaces", ""): ["apparate-system"], ("serviceaccounts", "apparate-system"): ["apparate-agent"],
         ("clusterroles", ""): ["apparate-agent"], ("clusterrolebindings", ""): ["apparate-agent"],
         ("roles", "apparate-system"): ["apparate-agent"], ("rolebindings", "apparate-system"): ["apparate-agent"],
         ("secrets", "apparate-system"): ["apparate-registry-credentials"],
         ("configmaps", "apparate-system"): ["apparate-agent-config"],
         ("daemonsets", "apparate-system"): ["apparate-agent"]}
NOT_CHECKED = ("Not checked: ghcr.io is not a registered registry instance, so the console cannot look for "
               "ghcr.io/apparate/agent:1.0.0. Make sure the nodes can pull it.")


def installed(emulator) -> dict:
    """The suite's objects present in the emulated cluster (the built-in namespaces left out)."""
    found = {(plural, ns): [n for n in emulator.names(plural, ns) if n not in {"default", "kube-system"}]
             for plural, ns in SUITE}
    return {key: names for key, names in found.items() if names}


def operate(cluster, operation, user, **kwargs) -> Suite:
    suite = request_suite_operation(cluster, operation, user, **kwargs)
    return run_suite_operation(suite.pk)


def reports(emulator) -> dict:
    """node → the code of its agent's report."""
    found = {}
    for name in emulator.names("nodes"):
        text = (emulator.node(name)["metadata"].get("annotations") or {}).get("apparate.io/agent-status")
        if text:
            found[name] = json.loads(text)["code"]
    return found


def rows(suite) -> dict:
    return {row["node"]: (row["ready"], row["reason"]) for row in suite.node_status}


def lazy_pull(cluster) -> dict:
    return {n.name: (n.lazy_pull, n.lazy_pull_reason) for n in Node.objects.filter(cluster=cluster)}


@pytest.fixture
def labelled_cluster(kube_emulator, register):
    add_fleet(kube_emulator)
    kube_emulator.patch("nodes", "", "node-a", {"metadata": {"labels": {LABEL: "true"}}})
    kube_emulator.patch("nodes", "", "node-b", {"metadata": {"labels": {LABEL: "true"}}})
    return register(kube_emulator)


def test_install_is_ready_when_every_labelled_nodes_agent_reports_ready(kube_emulator, labelled_cluster, instance,
                                                                       admin_user, emulated_agents):
    suite = operate(labelled_cluster, SuiteOperation.INSTALL, admin_user, instance=instance)
    assert suite.status == SuiteStatus.ROLLING_OUT, suite.last_error
    assert [c["check"] for c in suite.preflight] == ["Cluster reachable", "Compatible nodes",
                                                     "Namespace apparate-system", "Permissions", "Agent image"]
    assert all(check["ok"] for check in suite.preflight)
    assert suite.preflight[-1]["message"] == NOT_CHECKED
    assert installed(kube_emulator) == SUITE
    assert all(o["created"] for o in suite.applied) and len(suite.applied) == 9

    secret = kube_emulator.get_object("secrets", "apparate-registry-credentials", "apparate-system")
    assert secret["type"] == "kubernetes.io/dockerconfigjson"
    auths = json.loads(base64.b64decode(secret["data"][".dockerconfigjson"]))["auths"]
    assert auths["registry.example.com"]["username"] == "robot"
    assert auths["registry.example.com"]["password"] == "s3cret&<pass>"
    config = kube_emulator.get_object("configmaps", "apparate-agent-config", "apparate-system")["data"]
    assert json.loads(config["agent.json"]) == {"no_background_fetch": False,
                                                "registries": [{"url": "https://registry.example.com"}]}
    ds = kube_emulator.get_object("daemonsets", "apparate-agent", "apparate-system")
    assert ds["spec"]["template"]["spec"]["nodeSelector"] == {LABEL: "true"}
    assert ds["spec"]["template"]["spec"]["containers"][0]["image"] == "ghcr.io/apparate/agent:1.0.0"

    # Running pods are not enough: the suite waits for the agents' reports.
    suite = refresh_rollout(suite)
    assert (suite.desired, suite.updated, suite.ready, suite.status) == (2, 2, 0, SuiteStatus.ROLLING_OUT)
    assert rows(suite) == {"node-a": (False, "the agent is starting: it has not reported yet"),
                           "node-b": (False, "the agent is starting: it has not reported yet")}
    emulated_agents.statuses["node-b"] = Status.failed(Code.FUSE_MISSING, fuse_missing("/dev/fuse"))
    emulated_agents.tick()
    suite = refresh_rollout(suite)
    assert (suite.ready, suite.status) == (1, SuiteStatus.ROLLING_OUT)
    assert rows(suite) == {"node-a": (True, ""), "node-b": (False, fuse_missing("/dev/fuse"))}
    assert lazy_pull(labelled_cluster)["node-b"] == (LazyPull.PULLS_IN_FULL, fuse_missing("/dev/fuse"))
    assert lazy_pull(labelled_cluster)["node-a"] == (LazyPull.READY, "")

    del emulated_agents.statuses["node-b"]  # FUSE installed, agent restarted
    emulated_agents.tick()
    suite = refresh_rollout(suite)
    assert (suite.desired, suite.ready, suite.updated, suite.status) == (2, 2, 2, SuiteStatus.READY)
    sync_nodes(labelled_cluster)  # a sync reads the same reports
    assert set(Node.objects.filter(agent_ready=True).values_list("name", flat=True)) == {"node-a", "node-b"}
    assert lazy_pull(labelled_cluster)["node-docker"] == (LazyPull.NOT_LABELLED, "")
    assert Node.objects.get(name="node-a").agent_report["containerd_version"] == "1.7.2"

    # Installing again is idempotent: objects are replaced, nothing duplicated, still "created by us".
    generation = ds["metadata"]["generation"]
    suite = operate(labelled_cluster, SuiteOperation.INSTALL, admin_user)
    assert suite.status == SuiteStatus.ROLLING_OUT and installed(kube_emulator) == SUITE
    assert all(o["created"] for o in suite.applied)
    assert kube_emulator.get_object("daemonsets", "apparate-agent", "apparate-system")["metadata"]["generation"] \
        == generation
    assert refresh_rollout(suite).status == SuiteStatus.READY


def test_an_upgrade_waits_for_reports_of_the_new_agent(kube_emulator, labelled_cluster, instance, admin_user,
                                                       emulated_agents):
    suite = operate(labelled_cluster, SuiteOperation.INSTALL, admin_user, instance=instance)
    refresh_rollout(suite)
    emulated_agents.tick()
    assert refresh_rollout(suite).status == SuiteStatus.READY
    generation = kube_emulator.get_object("daemonsets", "apparate-agent", "apparate-system")["metadata"]["generation"]

    suite = operate(labelled_cluster, SuiteOperation.UPGRADE, admin_user, version="1.0.1")
    ds = kube_emulator.get_object("daemonsets", "apparate-agent", "apparate-system")
    assert ds["spec"]["template"]["spec"]["containers"][0]["image"] == "ghcr.io/apparate/agent:1.0.1"
    assert ds["metadata"]["generation"] == generation + 1
    suite = refresh_rollout(suite)  # new pods run; the reports on the nodes are the old agents'
    assert suite.status == SuiteStatus.ROLLING_OUT
    waiting = "waiting for the new agent to report (the last report is from the previous revision)"
    assert rows(suite) == {"node-a": (False, waiting), "node-b": (False, waiting)}
    emulated_agents.tick()
    assert refresh_rollout(suite).status == SuiteStatus.READY


def test_uninstall_waits_for_every_node_to_clean_up_then_deletes(kube_emulator, labelled_cluster, instance,
                                                                  admin_user, emulated_agents):
    suite = operate(labelled_cluster, SuiteOperation.INSTALL, admin_user, instance=instance)
    refresh_rollout(suite)
    emulated_agents.tick()
    assert refresh_rollout(suite).status == SuiteStatus.READY
    kube_emulator.create("configmaps", "default", {"metadata": {"name": "unrelated"}})

    suite = operate(labelled_cluster, SuiteOperation.UNINSTALL, admin_user)

    assert suite.status == SuiteStatus.CLEANING_NODES
    config = kube_emulator.get_object("configmaps", "apparate-agent-config", "apparate-system")["data"]
    assert config["mode"] == "uninstall"
    assert installed(kube_emulator) == SUITE  # nothing is deleted before the nodes confirmed
    with pytest.raises(SuiteBusy):
        request_suite_operation(labelled_cluster, SuiteOperation.INSTALL, admin_user)
    suite = refresh_cleanup(suite)
    assert suite.status == SuiteStatus.CLEANING_NODES
    assert set(rows(suite)) == {"node-a", "node-b"}
    assert rows(suite)["node-a"][1].startswith("the agent has not cleaned up yet (last report: ready (")

    emulated_agents.silent = {"node-b"}  # node-b's agent has not polled yet
    emulated_agents.tick()
    suite = refresh_cleanup(suite)
    assert suite.status == SuiteStatus.CLEANING_NODES and set(rows(suite)) == {"node-b"}
    assert reports(kube_emulator) == {"node-a": "removed", "node-b": "ready"}
    assert installed(kube_emulator) == SUITE

    emulated_agents.silent = set()
    emulated_agents.tick()
    suite = refresh_cleanup(suite)
    assert suite.status == SuiteStatus.NOT_INSTALLED and suite.applied == [] and suite.node_status == []
    assert installed(kube_emulator) == {}
    assert kube_emulator.names("configmaps", "default") == ["unrelated"]
    assert reports(kube_emulator) == {}  # the nodes carry no report any more
    assert not Node.objects.filter(agent_ready=True).exists()
    assert lazy_pull(labelled_cluster)["node-a"] == (LazyPull.PULLS_IN_FULL, "agent not running yet")


def test_stragglers_are_named_until_the_timeout_then_the_uninstall_can_be_forced(
        kube_emulator, labelled_cluster, instance, admin_user, emulated_agents, settings):
    suite = operate(labelled_cluster, SuiteOperation.INSTALL, admin_user, instance=instance)
    refresh_rollout(suite)
    emulated_agents.tick()
    assert refresh_rollout(suite).status == SuiteStatus.READY
    kube_emulator.patch("nodes", "", "node-b", {"status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}})
    emulated_agents.silent = {"node-b"}  # the node is down: its agent does not run

    suite = operate(labelled_cluster, SuiteOperation.UNINSTALL, admin_user)
    emulated_agents.tick()
    suite = refresh_cleanup(suite)
    assert suite.status == SuiteStatus.CLEANING_NODES and set(rows(suite)) == {"node-b"}
    why = rows(suite)["node-b"][1]
    assert why.startswith("the node is not Ready: its agent cleans up once the node is back (last report: ready (")
    settings.APPARATE_SUITE_UNINSTALL_TIMEOUT = 0
    suite = refresh_cleanup(suite)
    assert suite.status == SuiteStatus.FAILED
    assert suite.last_error == (
        f"1 nodes did not confirm their cleanup within 0 s: node-b ({why}). Uninstall again to keep waiting, or "
        "force the uninstall to delete the suite now (a node whose agent cannot run then keeps the snapshotter "
        "and containerd's configuration).")
    assert installed(kube_emulator) == SUITE

    with pytest.raises(ValueError, match=r"^Only an uninstall can be forced\.$"):
        request_suite_operation(labelled_cluster, SuiteOperation.INSTALL, admin_user, force=True)
    suite = operate(labelled_cluster, SuiteOperation.UNINSTALL, admin_user, force=True)
    assert suite.status == SuiteStatus.NOT_INSTALLED and installed(kube_emulator) == {}


def test_uninstall_keeps_what_existed_before(kube_emulator, labelled_cluster, instance, admin_user):
    kube_emulator.create("namespaces", "", {"metadata": {"name": "apparate-system",
                                                         "labels": {"app.kubernetes.io/managed-by": "apparate"}}})
    suite = operate(labelled_cluster, SuiteOperation.INSTALL, admin_user, instance=instance)
    assert suite.status == SuiteStatus.ROLLING_OUT
    assert [o["created"] for o in suite.applied if o["kind"] == "Namespace"] == [False]
    operate(labelled_cluster, SuiteOperation.UNINSTALL, admin_user, force=True)
    assert kube_emulator.names("namespaces") == ["apparate-system", "default", "kube-system"]
    assert kube_emulator.names("clusterroles") == [] and kube_emulator.names("daemonsets") == []


def test_preflight_refuses_foreign_namespace_and_missing_permissions(kube_emulator, labelled_cluster, instance,
                                                                     admin_user):
    kube_emulator.create("namespaces", "", {"metadata": {"name": "apparate-system"}})
    kube_emulator.deny("create", "clusterrolebindings")
    kube_emulator.deny("update", "roles")
    suite = operate(labelled_cluster, SuiteOperation.INSTALL, admin_user, instance=instance)
    assert suite.status == SuiteStatus.FAILED
    assert suite.last_error == ("Preflight failed: Namespace apparate-system: exists and is not managed by apparate; "
                                "choose another namespace; Permissions: The cluster credentials may not: create "
                                "ClusterRoleBinding, update Role")
    assert suite.applied == [] and kube_emulator.names("daemonsets") == []


def test_preflight_needs_a_compatible_node(kube_emulator, register, instance, admin_user):
    kube_emulator.add_node("only-docker", runtime="docker://20.10.7")
    suite = operate(register(kube_emulator), SuiteOperation.INSTALL, admin_user, instance=instance)
    assert suite.status == SuiteStatus.FAILED and "No node meets the requirements" in suite.last_error


@pytest.mark.registry
def test_preflight_looks_for_the_agent_image_in_a_registered_instance(kube_emulator, labelled_cluster, instance,
                                                                      admin_user, registry, settings, tmp_path):
    own = Instance.objects.create(name="own", url=registry.url)
    settings.APPARATE_SUITE_IMAGE = f"{registry.host}/apparate/agent"
    suite = operate(labelled_cluster, SuiteOperation.INSTALL, admin_user, instance=instance)
    assert suite.status == SuiteStatus.FAILED and kube_emulator.names("daemonsets") == []
    assert suite.preflight[-1] == {
        "check": "Agent image", "ok": False,
        "message": f"{registry.host}/apparate/agent:1.0.0 does not exist in own: build it with `make agent-image` and "
                   "push it there, or mirror it (README, \"The agent image\")."}

    digest = push_image(tmp_path, f"{registry.host}/apparate/agent:1.0.0")
    suite = operate(labelled_cluster, SuiteOperation.INSTALL, admin_user, instance=own)
    assert suite.status == SuiteStatus.ROLLING_OUT, suite.last_error
    assert suite.preflight[-1] == {"check": "Agent image", "ok": True,
                                   "message": f"{registry.host}/apparate/agent:1.0.0 found in own ({digest})"}


def test_failed_object_is_named_and_retry_completes(kube_emulator, labelled_cluster, instance, admin_user):
    kube_emulator.fail_next("POST", "/configmaps$", 403)
    suite = operate(labelled_cluster, SuiteOperation.INSTALL, admin_user, instance=instance)
    assert suite.status == SuiteStatus.FAILED
    assert suite.failed_object == "ConfigMap apparate-system/apparate-agent-config"
    # What was applied before the failure is reported (and would be removed by uninstall).
    assert [o["kind"] for o in suite.applied] == ["Namespace", "ServiceAccount", "ClusterRole",
                                                  "ClusterRoleBinding", "Role", "RoleBinding", "Secret"]
    suite = operate(labelled_cluster, SuiteOperation.INSTALL, admin_user)
    assert suite.status == SuiteStatus.ROLLING_OUT and installed(kube_emulator) == SUITE
    assert all(o["created"] for o in suite.applied)


def test_rollout_names_nodes_whose_agent_fails(kube_emulator, labelled_cluster, instance, admin_user, settings,
                                               emulated_agents):
    kube_emulator.broken_agent_nodes = {"node-b"}
    suite = operate(labelled_cluster, SuiteOperation.INSTALL, admin_user, instance=instance)
    suite = refresh_rollout(suite)
    emulated_agents.tick()
    suite = refresh_rollout(suite)
    assert (suite.desired, suite.ready) == (2, 1) and suite.status == SuiteStatus.ROLLING_OUT
    assert rows(suite)["node-b"] == (False, "agent not running yet: its pod is CrashLoopBackOff")
    assert lazy_pull(labelled_cluster)["node-b"] == (LazyPull.PULLS_IN_FULL,
                                                     "agent not running yet: its pod is CrashLoopBackOff")
    settings.APPARATE_SUITE_ROLLOUT_TIMEOUT = 0
    suite = refresh_rollout(suite)
    assert suite.status == SuiteStatus.FAILED
    assert suite.last_error == ("The agent did not become ready in time on: node-b (agent not running yet: its pod "
                                "is CrashLoopBackOff)")
    assert suite.failed_object == "DaemonSet apparate-system/apparate-agent"


def test_unreachable_cluster_fails_with_a_clear_message(kube_emulator, labelled_cluster, instance, admin_user):
    kube_emulator.stop()
    suite = operate(labelled_cluster, SuiteOperation.INSTALL, admin_user, instance=instance)
    assert suite.status == SuiteStatus.FAILED and "Cannot reach" in suite.last_error


def test_busy_suite_refuses_a_second_request(kube_emulator, labelled_cluster, instance, admin_user):
    request_suite_operation(labelled_cluster, SuiteOperation.INSTALL, admin_user, instance=instance)
    with pytest.raises(SuiteBusy):
        request_suite_operation(labelled_cluster, SuiteOperation.UNINSTALL, admin_user)


def _worker_died(suite: Suite, status: str, seconds_ago: float) -> None:
    """The operation's worker was killed mid-way: its status stays, its heartbeat stops."""
    Suite.objects.filter(pk=suite.pk).update(status=status, updated_at=timezone.now() - timedelta(seconds=seconds_ago))


def test_an_operation_whose_worker_died_is_taken_up_again(kube_emulator, labelled_cluster, instance, admin_user,
                                                          settings):
    suite = request_suite_operation(labelled_cluster, SuiteOperation.INSTALL, admin_user, instance=instance)
    _worker_died(suite, SuiteStatus.APPLYING, settings.APPARATE_SUITE_STALE_AFTER - 30)
    # The redelivered task leaves an operation that is still moving to its worker ...
    assert run_suite_operation(suite.pk).status == SuiteStatus.APPLYING
    with pytest.raises(SuiteBusy):
        request_suite_operation(labelled_cluster, SuiteOperation.UNINSTALL, admin_user)
    # ... and takes up one that stopped moving.
    _worker_died(suite, SuiteStatus.APPLYING, settings.APPARATE_SUITE_STALE_AFTER + 1)
    suite = run_suite_operation(suite.pk)
    assert (suite.status, suite.attempts) == (SuiteStatus.ROLLING_OUT, 1)
    assert installed(kube_emulator) == SUITE


def test_an_operation_whose_worker_keeps_dying_fails_with_the_reason(kube_emulator, labelled_cluster, instance,
                                                                     admin_user, settings):
    suite = request_suite_operation(labelled_cluster, SuiteOperation.INSTALL, admin_user, instance=instance)
    Suite.objects.filter(pk=suite.pk).update(attempts=settings.APPARATE_SUITE_MAX_ATTEMPTS)
    _worker_died(suite, SuiteStatus.PREFLIGHT, settings.APPARATE_SUITE_STALE_AFTER + 1)
    suite = run_suite_operation(suite.pk)
    assert suite.status == SuiteStatus.FAILED
    assert suite.last_error == ("The install was taken up 3 times and its worker stopped each time (see the workers' "
                                "logs); request it again.")
    assert kube_emulator.names("daemonsets") == []


def test_a_stale_operation_no_longer_blocks_a_new_request(kube_emulator, labelled_cluster, instance, admin_user,
                                                          settings):
    suite = operate(labelled_cluster, SuiteOperation.INSTALL, admin_user, instance=instance)
    _worker_died(suite, SuiteStatus.UNINSTALLING, settings.APPARATE_SUITE_STALE_AFTER + 1)
    suite = operate(labelled_cluster, SuiteOperation.UNINSTALL, admin_user, force=True)
    assert suite.status == SuiteStatus.NOT_INSTALLED and installed(kube_emulator) == {}


def _wait_for(predicate, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError("timed out")


@pytest.mark.django_db(transaction=True)
def test_the_periodic_recovery_takes_up_dead_operations_in_a_real_worker(kube_emulator, labelled_cluster, instance,
                                                                         admin_user, settings, celery_worker,
                                                                         emulated_agents):
    stale = timezone.now() - timedelta(seconds=settings.APPARATE_SUITE_STALE_AFTER + 1)
    # An install whose worker died while applying (the message is gone: acknowledged, or a broker restart).
    suite = Suite.objects.create(cluster=labelled_cluster, instance=instance, operation=SuiteOperation.INSTALL,
                                 status=SuiteStatus.APPLYING, image="ghcr.io/apparate/agent", version="1.0.0",
                                 started_at=stale)
    Suite.objects.filter(pk=suite.pk).update(updated_at=stale)

    assert recover_stale_suites() == [suite.pk]  # the periodic task: the operation goes to the worker
    _wait_for(lambda: Suite.objects.get(pk=suite.pk).status == SuiteStatus.READY or emulated_agents.tick())
    assert installed(kube_emulator) == SUITE and Suite.objects.get(pk=suite.pk).attempts == 1

    # An uninstall whose watcher died while the nodes were cleaning up.
    kube_emulator.patch("configmaps", "apparate-system", "apparate-agent-config", {"data": {"mode": "uninstall"}})
    Suite.objects.filter(pk=suite.pk).update(operation=SuiteOperation.UNINSTALL, status=SuiteStatus.CLEANING_NODES,
                                             cleanup_started_at=timezone.now(), watch_id="a-watcher-that-died",
                                             updated_at=stale)
    assert recover_stale_suites() == [suite.pk]
    _wait_for(lambda: Suite.objects.get(pk=suite.pk).status == SuiteStatus.NOT_INSTALLED or emulated_agents.tick())
    assert installed(kube_emulator) == {}
    assert f"suite={suite.pk} action=take-over status=applying" in celery_worker.log()


def test_the_agent_config_follows_the_instance_scheme_and_ca(kube_emulator_factory, kube_emulator, labelled_cluster,
                                                             admin_user):
    ca = kube_emulator_factory(tls=True).ca_pem  # any real CA certificate
    private = Instance.objects.create(name="private", url="https://registry.internal:8443", ca_bundle=ca)
    operate(labelled_cluster, SuiteOperation.INSTALL, admin_user, instance=private)
    config = kube_emulator.get_object("configmaps", "apparate-agent-config", "apparate-system")["data"]
    assert json.loads(config["agent.json"])["registries"] == [{"ca": ca.strip(), "url": "https://registry.internal:8443"}]

    plain = Instance.objects.create(name="plain", url="http://10.0.0.5:5000", ca_bundle=ca)  # a CA means nothing here
    operate(labelled_cluster, SuiteOperation.UPGRADE, admin_user, instance=plain)
    config = kube_emulator.get_object("configmaps", "apparate-agent-config", "apparate-system")["data"]
    assert json.loads(config["agent.json"])["registries"] == [{"url": "http://10.0.0.5:5000"}]
    secret = kube_emulator.get_object("secrets", "apparate-registry-credentials", "apparate-system")
    assert json.loads(base64.b64decode(secret["data"][".dockerconfigjson"])) == {"auths": {}}  # anonymous
