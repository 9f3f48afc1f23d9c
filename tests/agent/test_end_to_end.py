"""One click really makes a node lazy-pull, and removing its label restores it.

The console labels a node and installs the suite in the emulated cluster (over HTTPS, as any
cluster). The agent's `run` loop then runs as the DaemonSet's pod would on that node: its
configuration is what kubelet would project from the suite's ConfigMap and Secret, its
environment is the DaemonSet's (downward API included), its API server is the emulator reached
with a service-account token and CA, and its node is a private containerd with the stargz
snapshotter. Only the host root and the service manager are injected (see tests/support/node.py).
"""

import base64
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent import report
from agent.cluster import ClusterLink
from agent.run import run
from clusters import manifests
from clusters.actions.labelling import request_labelling, run_label_job
from clusters.actions.suite import (
    refresh_cleanup,
    refresh_rollout,
    request_suite_operation,
    run_suite_operation,
    suite_params,
)
from clusters.actions.sync import sync_nodes
from clusters.choices import AuthMethod, LabelOperation, LazyPull, SuiteOperation, SuiteStatus
from clusters.models import Cluster, Node
from registries.models import Instance
from tests.support.images import push_image
from tests.support.node import push_lazy_image

pytestmark = [pytest.mark.node, pytest.mark.registry, pytest.mark.django_db]
NAMESPACE = "apparate-system"


def pod_on(emulator, node: str) -> dict | None:
    emulator.reconcile()  # the DaemonSet controller's pass
    for name in emulator.names("pods", NAMESPACE):
        pod = emulator.get_object("pods", name, NAMESPACE)
        if pod["spec"]["nodeName"] == node:
            return pod
    return None


def projected_config(emulator, ds: dict, directory: Path) -> None:
    """The agent's config volume, as kubelet projects it from the ConfigMap and the Secret."""
    volume = next(v for v in ds["spec"]["template"]["spec"]["volumes"] if v["name"] == "config")
    directory.mkdir()
    for source in volume["projected"]["sources"]:
        if "configMap" in source:
            data = emulator.get_object("configmaps", source["configMap"]["name"], NAMESPACE)["data"]
            files = {item["path"]: data[item["key"]].encode() for item in source["configMap"]["items"]}
        else:
            data = emulator.get_object("secrets", source["secret"]["name"], NAMESPACE)["data"]
            files = {item["path"]: base64.b64decode(data[item["key"]]) for item in source["secret"]["items"]}
        for path, content in files.items():
            (directory / path).write_bytes(content)


def container_env(emulator, ds: dict, pod: dict, serviceaccount: Path) -> dict[str, str]:
    """The agent container's environment: the DaemonSet's env (downward API resolved for this pod) and
    what kubelet adds to every pod."""
    template = ds["spec"]["template"]
    fields = {"spec.nodeName": pod["spec"]["nodeName"], "metadata.name": pod["metadata"]["name"],
              "metadata.namespace": NAMESPACE}
    env = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": emulator.url.rsplit(":", 1)[1],
           "APPARATE_SERVICEACCOUNT_DIR": str(serviceaccount)}
    for item in template["spec"]["containers"][0]["env"]:
        if "value" in item:
            env[item["name"]] = item["value"]
            continue
        path = item["valueFrom"]["fieldRef"]["fieldPath"]
        annotation = re.fullmatch(r"metadata\.annotations\['(.+)'\]", path)
        env[item["name"]] = template["metadata"]["annotations"][annotation[1]] if annotation else fields[path]
    return env


def wait_for(predicate, timeout: float = 90.0, what: str = ""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@dataclass
class Setup:
    emulator: object
    cluster: Cluster
    suite: object
    node: object
    host: str
    image: object
    original: bytes
    stop: threading.Event
    agent: threading.Thread

    def finish(self) -> None:
        """SIGTERM, and the agent's end."""
        self.stop.set()
        self.agent.join(timeout=180)
        assert not self.agent.is_alive()


@pytest.fixture
def one_click(make_node, registry, counting_proxy, registry_name, kube_emulator_factory, tmp_path, settings):
    """The console labels node-1 and installs the suite; the agent's pod runs on node-1 until `finish()`."""
    proxy = counting_proxy(registry.url)
    host = f"{registry_name}:{proxy.port}"
    image = push_lazy_image(tmp_path, registry.url, "team/app")
    settings.APPARATE_SUITE_IMAGE = f"{host}/apparate/agent"
    push_image(tmp_path, f"{registry.host}/apparate/agent:1.0.0")  # the agent image, found by the preflight
    emulator = kube_emulator_factory(tls=True)
    emulator.add_node("node-1", runtime="containerd://1.6.20", os_image="Ubuntu 22.04.3 LTS")
    emulator.add_node("node-2")
    cluster = Cluster.objects.create(name="e2e", server=emulator.url, ca_data=emulator.ca_pem, token=emulator.token,
                                     auth_method=AuthMethod.TOKEN)
    instance = Instance.objects.create(name="local", url=f"http://{host}")
    sync_nodes(cluster)

    run_label_job(request_labelling(None, Node.objects.filter(name="node-1"), LabelOperation.LABEL).pk)
    suite = run_suite_operation(request_suite_operation(cluster, SuiteOperation.INSTALL, instance=instance).pk)
    assert suite.status == SuiteStatus.ROLLING_OUT, suite.last_error
    assert suite.preflight[-1]["message"].startswith(f"{host}/apparate/agent:1.0.0 found in local (sha256:")

    # The DaemonSet's pod on node-1, as kubelet starts it.
    ds = emulator.get_object("daemonsets", manifests.AGENT, NAMESPACE)
    pod = wait_for(lambda: pod_on(emulator, "node-1"), what="the agent pod")
    assert pod_on(emulator, "node-2") is None  # not labelled: no agent there
    node = make_node()
    original = Path(node.paths.containerd_config).read_bytes()
    projected_config(emulator, ds, node.config_dir)
    serviceaccount = tmp_path / "serviceaccount"
    serviceaccount.mkdir()
    (serviceaccount / "token").write_text(emulator.token)
    (serviceaccount / "ca.crt").write_text(emulator.ca_pem)
    link = ClusterLink.from_env(container_env(emulator, ds, pod, serviceaccount))
    stop = threading.Event()
    agent = threading.Thread(target=run, args=(node.agent(), node.config_dir, link, stop, 0.3))
    agent.start()
    setup = Setup(emulator, cluster, suite, node, host, image, original, stop, agent)
    try:
        reported = wait_for(lambda: (report.read_report(emulator.node("node-1")) or {}).get("ready"),
                            what="the agent's ready report")
        assert reported is True
        sent = report.read_report(emulator.node("node-1"))
        assert (sent["code"], sent["reason"], sent["pod"]) == ("ready", "containerd uses the stargz snapshotter",
                                                               pod["metadata"]["name"])
        assert sent["containerd_version"].startswith("1.6.")
        assert sent["revision"] == manifests.config_hash(suite_params(suite))
        yield setup
    finally:
        stop.set()
        agent.join(timeout=180)


def assert_restored(setup: Setup) -> None:
    node = setup.node
    assert Path(node.paths.containerd_config).read_bytes() == setup.original  # byte for byte
    assert node.cri().status(setup.image.ref(setup.host)) is None  # the lazily pulled twin went with the snapshotter
    assert node.fuse_mounts() == []
    assert not Path(node.paths.unit_file).exists() and not Path(node.paths.state_dir).exists()


def test_a_labelled_node_lazy_pulls_reports_ready_and_is_restored_when_the_label_goes(one_click):
    emulator, cluster, suite, node = one_click.emulator, one_click.cluster, one_click.suite, one_click.node
    # The console sees it: the suite is ready, the node is ready to lazy-pull.
    assert refresh_rollout(suite).status == SuiteStatus.READY
    sync_nodes(cluster)
    assert {n.name: (n.lazy_pull, n.lazy_pull_reason) for n in Node.objects.filter(cluster=cluster)} == {
        "node-1": (LazyPull.READY, ""), "node-2": (LazyPull.NOT_LABELLED, "")}

    # And it does: kubelet's pull of the twin mounts remote snapshots, with no layer blob stored.
    node.cri().pull(one_click.image.ref(one_click.host))
    assert len(node.fuse_mounts()) == len(one_click.image.layer_sizes)
    assert not node.content_digests() & set(one_click.image.layer_sizes)

    # The label goes (the console's unlabel job): the DaemonSet's pod on node-1 is deleted, the agent stopped.
    run_label_job(request_labelling(None, Node.objects.filter(name="node-1"), LabelOperation.UNLABEL).pk)
    wait_for(lambda: pod_on(emulator, "node-1") is None, what="the pod's deletion")
    one_click.finish()

    assert_restored(one_click)
    assert report.read_report(emulator.node("node-1"))["code"] == "removed"
    sync_nodes(cluster)
    assert Node.objects.values_list("lazy_pull", "lazy_pull_reason").get(name="node-1") == (LazyPull.NOT_LABELLED, "")


def test_the_console_uninstall_waits_for_the_node_then_deletes_the_suite(one_click):
    emulator, cluster, node = one_click.emulator, one_click.cluster, one_click.node
    node.cri().pull(one_click.image.ref(one_click.host))

    suite = run_suite_operation(request_suite_operation(cluster, SuiteOperation.UNINSTALL).pk)
    assert suite.status == SuiteStatus.CLEANING_NODES
    # The running agent sees `mode: uninstall`, cleans its node up and confirms; then the suite goes.
    suite = wait_for(lambda: (s := refresh_cleanup(suite)).status == SuiteStatus.NOT_INSTALLED and s,
                     what="the uninstall")
    assert_restored(one_click)
    assert emulator.names("daemonsets", NAMESPACE) == [] and emulator.names("configmaps", NAMESPACE) == []
    assert report.read_report(emulator.node("node-1")) is None  # the confirmation was taken off the node
    one_click.finish()  # the pod stops (its DaemonSet is gone): nothing more is done on the node
    assert Path(node.paths.containerd_config).read_bytes() == one_click.original
    assert node.services.verbs("containerd") == ["restart", "restart"]  # install, uninstall: once each
