"""Fixtures of the clusters tests: clusters registered against running API emulators."""

import hashlib

import pytest

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
