"""Fixtures of the clusters tests: clusters registered against running API emulators."""

import contextlib
import hashlib
import threading
from pathlib import Path

import pytest

from agent.cluster import ClusterLink
from agent.kubeapi import KubeApi
from agent.status import Code, Status
from clusters.choices import AuthMethod
from clusters.models import Cluster
from pipeline import twins
from pipeline.choices import JobStatus
from pipeline.models import ConversionJob
from registries.models import Instance


def _sha256(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def add_fleet(emulator) -> None:
    """Four nodes: two compatible, one CentOS (FUSE warning), one on Docker (incompatible)."""
    emulator.add_node("node-a")
    emulator.add_node("node-b", os_image="TencentOS Server 3.1 (Final)", runtime="containerd://1.4.3-tke.1")
    emulator.add_node("node-centos", os_image="CentOS Linux 7 (Core)")
    emulator.add_node("node-docker", runtime="docker://20.10.7")


def alias_bomb(levels: int = 6) -> str:
    """A few hundred bytes that expand to 9**levels strings: every context name is the biggest list."""
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, levels):
        lines.append(f"l{level}: &l{level} [" + ", ".join([f"*l{level - 1}"] * 9) + "]")
    lines += ["current-context: prod", f"contexts: [{{name: *l{levels - 1}, context: {{cluster: c, user: u}}}}]",
              "clusters: [{name: c, cluster: {server: 'https://10.0.0.1:6443'}}]",
              "users: [{name: u, user: {token: t}}]"]
    return "\n".join(lines) + "\n"


@pytest.fixture
def register():
    """register(emulator, name=...) → a Cluster row pointing at the emulator with its token."""

    def factory(emulator, name: str = "prod", **extra) -> Cluster:
        fields = {"server": emulator.url, "token": emulator.token, "auth_method": AuthMethod.TOKEN, **extra}
        return Cluster.objects.create(name=name, **fields)

    return factory


@pytest.fixture
def instance(db) -> Instance:
    return Instance.objects.create(name="tcr", url="https://registry.example.com", username="robot",
                                   password="s3cret&<pass>")


@pytest.fixture
def converted():
    """converted(instance, "team/shop", "1.0", status=...) → a conversion job of that tag (succeeded by default,
    with its twin recorded as in the registry)."""
    def factory(instance, path: str, tag: str, status: str = JobStatus.SUCCEEDED, digest: str = "") -> ConversionJob:
        namespace, _, repository = path.partition("/")
        digest = digest or _sha256(f"{path}:{tag}:{ConversionJob.objects.count()}")
        succeeded = status == JobStatus.SUCCEEDED
        job = ConversionJob.objects.create(
            instance=instance, namespace=namespace, repository=repository, source_tag=tag, source_digest=digest,
            status=status, result_tag=f"{tag}-apparate" if succeeded else "",
            result_digest=_sha256(f"twin of {digest}") if succeeded else "",
        )
        if succeeded:
            twins.record_present(job, tag, job.result_digest)
        return job

    return factory


class EmulatedAgents:
    """The cluster side of the node agents of an emulated cluster: for every Running agent pod, the
    agent's own ClusterLink (agent/cluster.py) talks to the emulator over HTTP with a service-account
    token, as the agent does in its pod: it reports the status chosen for its node (ready unless
    told otherwise) and, once the ConfigMap asks for an uninstall, reports `removed`. What the agent
    does on the node itself is tested against a real containerd in tests/agent/."""

    def __init__(self, emulator, serviceaccount_dir: Path):
        self.emulator, self.api = emulator, KubeApi(emulator.url, serviceaccount_dir)
        self.statuses: dict[str, Status] = {}  # node → status to report (default: ready)
        self.silent: set[str] = set()  # nodes whose agent runs but does not report
        self.links: dict[str, ClusterLink] = {}  # pod name → its agent's link

    @contextlib.contextmanager
    def running(self, interval: float = 0.2):
        """The agents at work in the background (for a live server and a real worker)."""
        stop = threading.Event()

        def loop():
            while not stop.wait(interval):
                self.tick()

        thread = threading.Thread(target=loop, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            stop.set()
            thread.join(timeout=10)

    def status_of(self, node: str) -> Status:
        return self.statuses.get(node) or Status(True, Code.READY, "containerd uses the stargz snapshotter", "1.7.2")

    def tick(self, namespace: str = "apparate-system") -> None:
        """One pass of every running agent: what each does every APPARATE_CHECK_INTERVAL."""
        ds = self.emulator.get_object("daemonsets", "apparate-agent", namespace)
        pods = [self.emulator.get_object("pods", name, namespace) for name in self.emulator.names("pods", namespace)]
        for pod in pods:
            if ds is None or pod["status"]["phase"] != "Running" or pod["spec"]["nodeName"] in self.silent:
                continue
            node = pod["spec"]["nodeName"]
            link = self.links.setdefault(pod["metadata"]["name"], ClusterLink(
                self.api, node, namespace, ("cloud.tencent.com/apparate", "true"), pod=pod["metadata"]["name"],
                revision=ds["spec"]["template"]["metadata"]["annotations"]["apparate.io/config-hash"]))
            if link.uninstall_requested():
                link.report(Status(False, Code.REMOVED, "the snapshotter was removed and containerd's configuration "
                                   "restored"))
            else:
                status = self.status_of(node)
                link.report(Status(status.ready, status.code, status.reason, status.containerd_version))


@pytest.fixture
def emulated_agents(kube_emulator, tmp_path) -> EmulatedAgents:
    serviceaccount = tmp_path / "serviceaccount"
    serviceaccount.mkdir()
    (serviceaccount / "token").write_text(kube_emulator.token)
    return EmulatedAgents(kube_emulator, serviceaccount)
