"""The acceleration suite: preflight, idempotent install, rollout status, upgrade, exact uninstall."""

import base64
import json

import pytest

from clusters.actions.suite import SuiteBusy, refresh_rollout, request_suite_operation, run_suite_operation
from clusters.actions.sync import sync_nodes
from clusters.choices import SuiteOperation, SuiteStatus
from clusters.models import Node, Suite
from tests.clusters.conftest import add_fleet

LABEL = "cloud.tencent.com/apparate"
pytestmark = pytest.mark.django_db

SUITE = {("namespaces", ""): ["apparate-system"], ("serviceaccounts", "apparate-system"): ["apparate-agent"],
         ("clusterroles", ""): ["apparate-agent"], ("clusterrolebindings", ""): ["apparate-agent"],
         ("secrets", "apparate-system"): ["apparate-registry-credentials"],
         ("configmaps", "apparate-system"): ["apparate-agent-config"],
         ("daemonsets", "apparate-system"): ["apparate-agent"]}


def installed(emulator) -> dict:
    """The suite's objects present in the emulated cluster (the built-in namespaces left out)."""
    found = {(plural, ns): [n for n in emulator.names(plural, ns) if n not in {"default", "kube-system"}]
             for plural, ns in SUITE}
    return {key: names for key, names in found.items() if names}


def operate(cluster, operation, user, **kwargs) -> Suite:
    suite = request_suite_operation(cluster, operation, user, **kwargs)
    return run_suite_operation(suite.pk)


@pytest.fixture
def labelled_cluster(kube_emulator, register):
    add_fleet(kube_emulator)
    kube_emulator.patch("nodes", "", "node-a", {"metadata": {"labels": {LABEL: "true"}}})
    kube_emulator.patch("nodes", "", "node-b", {"metadata": {"labels": {LABEL: "true"}}})
    return register(kube_emulator)


def test_install_rollout_upgrade_and_uninstall(kube_emulator, labelled_cluster, instance, admin_user):
    kube_emulator.rollout_step = 1
    suite = operate(labelled_cluster, SuiteOperation.INSTALL, admin_user, instance=instance)
    assert suite.status == SuiteStatus.ROLLING_OUT, suite.last_error
    assert all(check["ok"] for check in suite.preflight)
    assert installed(kube_emulator) == SUITE
    assert all(o["created"] for o in suite.applied) and len(suite.applied) == 7

    secret = kube_emulator.get_object("secrets", "apparate-registry-credentials", "apparate-system")
    assert secret["type"] == "kubernetes.io/dockerconfigjson"
    auths = json.loads(base64.b64decode(secret["data"][".dockerconfigjson"]))["auths"]
    assert auths["registry.example.com"]["username"] == "robot"
    assert auths["registry.example.com"]["password"] == "s3cret&<pass>"
    config = kube_emulator.get_object("configmaps", "apparate-agent-config", "apparate-system")["data"]["config.toml"]
    assert '[[resolver.host."registry.example.com".mirrors]]' in config and "insecure = false" in config
    ds = kube_emulator.get_object("daemonsets", "apparate-agent", "apparate-system")
    assert ds["spec"]["template"]["spec"]["nodeSelector"] == {LABEL: "true"}

    # The agent becomes ready one node per status read: the view sees the rollout progress.
    suite = refresh_rollout(suite)
    assert (suite.desired, suite.ready, suite.status) == (2, 1, SuiteStatus.ROLLING_OUT)
    suite = refresh_rollout(suite)
    assert (suite.desired, suite.ready, suite.updated, suite.status) == (2, 2, 2, SuiteStatus.READY)
    assert {n["node"] for n in suite.node_status if n["ready"]} == {"node-a", "node-b"}
    assert set(Node.objects.filter(agent_ready=True).values_list("name", flat=True)) == {"node-a", "node-b"}
    sync_nodes(labelled_cluster)  # a sync reads the agent pods too
    assert set(Node.objects.filter(agent_ready=True).values_list("name", flat=True)) == {"node-a", "node-b"}

    # Installing again is idempotent: objects are replaced, nothing duplicated, still "created by us".
    generation = ds["metadata"]["generation"]
    suite = operate(labelled_cluster, SuiteOperation.INSTALL, admin_user)
    assert suite.status == SuiteStatus.ROLLING_OUT and installed(kube_emulator) == SUITE
    assert all(o["created"] for o in suite.applied)
    assert kube_emulator.get_object("daemonsets", "apparate-agent", "apparate-system")["metadata"]["generation"] \
        == generation

    suite = operate(labelled_cluster, SuiteOperation.UPGRADE, admin_user, version="0.16.0")
    ds = kube_emulator.get_object("daemonsets", "apparate-agent", "apparate-system")
    assert ds["spec"]["template"]["spec"]["containers"][0]["image"].endswith(":0.16.0")
    assert ds["metadata"]["generation"] == generation + 1

    kube_emulator.create("configmaps", "default", {"metadata": {"name": "unrelated"}})
    suite = operate(labelled_cluster, SuiteOperation.UNINSTALL, admin_user)
    assert suite.status == SuiteStatus.NOT_INSTALLED and suite.applied == []
    assert installed(kube_emulator) == {}
    assert kube_emulator.names("configmaps", "default") == ["unrelated"]
    assert not Node.objects.filter(agent_ready=True).exists()


def test_uninstall_keeps_what_existed_before(kube_emulator, labelled_cluster, instance, admin_user):
    kube_emulator.create("namespaces", "", {"metadata": {"name": "apparate-system",
                                                         "labels": {"app.kubernetes.io/managed-by": "apparate"}}})
    suite = operate(labelled_cluster, SuiteOperation.INSTALL, admin_user, instance=instance)
    assert suite.status == SuiteStatus.ROLLING_OUT
    assert [o["created"] for o in suite.applied if o["kind"] == "Namespace"] == [False]
    operate(labelled_cluster, SuiteOperation.UNINSTALL, admin_user)
    assert kube_emulator.names("namespaces") == ["apparate-system", "default", "kube-system"]
    assert kube_emulator.names("clusterroles") == [] and kube_emulator.names("daemonsets") == []


def test_preflight_refuses_foreign_namespace_and_missing_permissions(kube_emulator, labelled_cluster, instance,
                                                                     admin_user):
    kube_emulator.create("namespaces", "", {"metadata": {"name": "apparate-system"}})
    kube_emulator.deny("create", "clusterrolebindings")
    suite = operate(labelled_cluster, SuiteOperation.INSTALL, admin_user, instance=instance)
    assert suite.status == SuiteStatus.FAILED
    assert "not managed by apparate" in suite.last_error and "create ClusterRoleBinding" in suite.last_error
    assert suite.applied == [] and kube_emulator.names("daemonsets") == []


def test_preflight_needs_a_compatible_node(kube_emulator, register, instance, admin_user):
    kube_emulator.add_node("only-docker", runtime="docker://20.10.7")
    suite = operate(register(kube_emulator), SuiteOperation.INSTALL, admin_user, instance=instance)
    assert suite.status == SuiteStatus.FAILED and "No node meets the requirements" in suite.last_error


def test_failed_object_is_named_and_retry_completes(kube_emulator, labelled_cluster, instance, admin_user):
    kube_emulator.fail_next("POST", "/configmaps$", 403)
    suite = operate(labelled_cluster, SuiteOperation.INSTALL, admin_user, instance=instance)
    assert suite.status == SuiteStatus.FAILED
    assert suite.failed_object == "ConfigMap apparate-system/apparate-agent-config"
    # What was applied before the failure is reported (and would be removed by uninstall).
    assert [o["kind"] for o in suite.applied] == ["Namespace", "ServiceAccount", "ClusterRole",
                                                  "ClusterRoleBinding", "Secret"]
    suite = operate(labelled_cluster, SuiteOperation.INSTALL, admin_user)
    assert suite.status == SuiteStatus.ROLLING_OUT and installed(kube_emulator) == SUITE
    assert all(o["created"] for o in suite.applied)


def test_rollout_names_nodes_whose_agent_fails(kube_emulator, labelled_cluster, instance, admin_user, settings):
    kube_emulator.broken_agent_nodes = {"node-b"}
    suite = operate(labelled_cluster, SuiteOperation.INSTALL, admin_user, instance=instance)
    suite = refresh_rollout(suite)
    assert (suite.desired, suite.ready) == (2, 1) and suite.status == SuiteStatus.ROLLING_OUT
    assert {n["node"]: n["reason"] for n in suite.node_status}["node-b"] == "CrashLoopBackOff"
    settings.APPARATE_SUITE_ROLLOUT_TIMEOUT = 0
    suite = refresh_rollout(suite)
    assert suite.status == SuiteStatus.FAILED and "node-b (CrashLoopBackOff)" in suite.last_error
    assert suite.failed_object == "DaemonSet apparate-system/apparate-agent"


def test_unreachable_cluster_fails_with_a_clear_message(kube_emulator, labelled_cluster, instance, admin_user):
    kube_emulator.stop()
    suite = operate(labelled_cluster, SuiteOperation.INSTALL, admin_user, instance=instance)
    assert suite.status == SuiteStatus.FAILED and "Cannot reach" in suite.last_error


def test_busy_suite_refuses_a_second_request(kube_emulator, labelled_cluster, instance, admin_user):
    request_suite_operation(labelled_cluster, SuiteOperation.INSTALL, admin_user, instance=instance)
    with pytest.raises(SuiteBusy):
        request_suite_operation(labelled_cluster, SuiteOperation.UNINSTALL, admin_user)

