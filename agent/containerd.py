"""Talking to containerd and to the snapshotter over their gRPC sockets.

- `version()` asks containerd's version service; `supported_version_problem()` checks it against
  the range the agent supports.
- `plugins()` asks containerd's introspection service which plugins loaded, with the init error
  of those that did not (a refused config shows up there, e.g. on the CRI plugin).
- `snapshotter_answers()` asks the stargz snapshotter's own socket for a snapshot that does not
  exist: a NOT_FOUND answer proves a snapshotter is serving there.
- For cleanup: `images_unpacked_only_for()` finds the images containerd unpacked for the stargz
  snapshotter and no other (their layers are remote snapshots with no blob in the content store,
  so containerd could not unpack them again for overlayfs), `remove_image()` deletes one and
  collects its snapshots, and `containers_on()` lists the containers whose root filesystem is a
  snapshot of the stargz snapshotter. Each looks in every containerd namespace (CRI uses `k8s.io`).

The generated modules in agent/proto/ come from the .proto files beside them (see
agent/proto/__init__.py); they are committed so the agent image needs no code generator.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass

import grpc
from google.protobuf import empty_pb2

from .proto import (
    containers_pb2,
    containers_pb2_grpc,
    content_pb2,
    content_pb2_grpc,
    images_pb2,
    images_pb2_grpc,
    introspection_pb2,
    introspection_pb2_grpc,
    namespaces_pb2,
    namespaces_pb2_grpc,
    snapshots_pb2,
    snapshots_pb2_grpc,
    version_pb2_grpc,
)

# 1.5 brought registry.config_path (hosts.toml), which plain-HTTP registries need; 3.x does not exist yet.
MINIMUM_VERSION = (1, 5)
BELOW_VERSION = (3, 0)
SUPPORTED_RANGE = ">= 1.5 and < 3.0"
SNAPSHOTTER_PLUGIN = "io.containerd.snapshotter.v1.stargz"
CRI_PLUGIN = "io.containerd.grpc.v1.cri"
# containerd 2.x splits the CRI plugin; a config it refuses makes one of these fail to load.
CRI_PLUGINS = frozenset({CRI_PLUGIN, "io.containerd.cri.v1.images", "io.containerd.cri.v1.runtime"})
_VERSION = re.compile(r"v?(\d+)\.(\d+)(?:\.(\d+))?")
# containerd labels an image's config blob with one of these per snapshotter it unpacked the image for.
GC_SNAPSHOT_LABEL = "containerd.io/gc.ref.snapshot."
INDEX_TYPES = frozenset({"application/vnd.oci.image.index.v1+json",
                         "application/vnd.docker.distribution.manifest.list.v2+json"})
MANIFEST_TYPES = frozenset({"application/vnd.oci.image.manifest.v1+json",
                            "application/vnd.docker.distribution.manifest.v2+json"})
MAX_MANIFEST_BYTES = 4 << 20  # indexes and manifests are small; anything bigger is not read
# CRI labels the containers it creates with their pod.
POD_NAMESPACE_LABEL = "io.kubernetes.pod.namespace"
POD_NAME_LABEL = "io.kubernetes.pod.name"


class Unreachable(Exception):
    """The socket does not answer; the message says what gRPC reported."""


@dataclass(frozen=True)
class PluginState:
    name: str  # type.id, as the config's [plugins."..."] tables name it
    error: str  # "" when the plugin loaded


def parse_version(text: str) -> tuple[int, int, int] | None:
    """`1.6.20~ds1`, `v1.7.13-k3s1`, `2.0.0-rc.1` → (major, minor, patch); None when unreadable."""
    match = _VERSION.match(text.strip())
    if not match:
        return None
    return int(match.group(1)), int(match.group(2)), int(match.group(3) or 0)


def supported_version_problem(text: str) -> str | None:
    """Why this containerd version is not supported, or None when it is."""
    version = parse_version(text)
    if version is None:
        return f"containerd reports version {text!r}, which the agent cannot read; supported: {SUPPORTED_RANGE}"
    if not MINIMUM_VERSION <= version[:2] < BELOW_VERSION:
        return f"containerd {text} is not supported: the agent supports containerd {SUPPORTED_RANGE}"
    return None


def _channel(address: str) -> grpc.Channel:
    return grpc.insecure_channel(f"unix://{address}")


def _unreachable(address: str, error: grpc.RpcError) -> Unreachable:
    return Unreachable(f"{address} does not answer ({error.code().name}: {error.details()})")


def version(address: str, timeout: float = 5.0) -> str:
    with _channel(address) as channel:
        try:
            return version_pb2_grpc.VersionStub(channel).Version(empty_pb2.Empty(), timeout=timeout).version
        except grpc.RpcError as error:
            raise _unreachable(address, error) from error


def plugins(address: str, timeout: float = 5.0) -> list[PluginState]:
    with _channel(address) as channel:
        try:
            response = introspection_pb2_grpc.IntrospectionStub(channel).Plugins(
                introspection_pb2.PluginsRequest(), timeout=timeout)
        except grpc.RpcError as error:
            raise _unreachable(address, error) from error
    return [PluginState(f"{p.type}.{p.id}", p.init_err.message if p.HasField("init_err") else "")
            for p in response.plugins]


def snapshotter_answers(address: str, timeout: float = 5.0) -> str | None:
    """None when a snapshotter answers on `address`, else why not."""
    with _channel(address) as channel:
        try:
            snapshots_pb2_grpc.SnapshotsStub(channel).Stat(
                snapshots_pb2.StatSnapshotRequest(key="apparate-agent-probe"), timeout=timeout)
        except grpc.RpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                return None
            return f"{address} does not answer ({error.code().name}: {error.details()})"
    return None


@dataclass(frozen=True)
class ImageRef:
    namespace: str  # containerd's namespace (CRI's images are in `k8s.io`)
    name: str


@dataclass(frozen=True)
class ContainerRef:
    namespace: str
    id: str
    pod: str  # `namespace/name` of the Kubernetes pod, "" for containers CRI did not create

    def __str__(self) -> str:
        return self.pod or f"{self.namespace}/{self.id}"


def _in(namespace: str) -> tuple[tuple[str, str]]:
    return (("containerd-namespace", namespace),)


def namespaces(address: str, timeout: float = 10.0) -> list[str]:
    with _channel(address) as channel:
        try:
            answer = namespaces_pb2_grpc.NamespacesStub(channel).List(namespaces_pb2.ListNamespacesRequest(),
                                                                         timeout=timeout)
        except grpc.RpcError as error:
            raise _unreachable(address, error) from error
    return sorted(namespace.name for namespace in answer.namespaces)


def _read_json(content, namespace: str, digest: str, size: int, timeout: float) -> dict | None:
    """A small JSON blob from the content store; None when it is absent, too big or not JSON."""
    if size > MAX_MANIFEST_BYTES:
        return None
    data = bytearray()
    try:
        for chunk in content.Read(content_pb2.ReadContentRequest(digest=digest), metadata=_in(namespace),
                                  timeout=timeout):
            data += chunk.data
            if len(data) > MAX_MANIFEST_BYTES:
                return None
    except grpc.RpcError as error:
        if error.code() == grpc.StatusCode.NOT_FOUND:
            return None
        raise
    try:
        document = json.loads(bytes(data))
    except ValueError:
        return None
    return document if isinstance(document, dict) else None


def _config_snapshotters(content, namespace: str, target, timeout: float, depth: int = 0) -> list[set[str]]:
    """For each manifest of `target` present in the store: the snapshotters its config was unpacked for."""
    document = _read_json(content, namespace, target.digest, target.size, timeout)
    if document is None or depth > 2:
        return []
    media_type = target.media_type or document.get("mediaType", "")
    if media_type in INDEX_TYPES or "manifests" in document:
        found = []
        for child in document.get("manifests") or []:
            if isinstance(child, dict) and isinstance(child.get("digest"), str):
                descriptor = images_pb2.Descriptor(media_type=str(child.get("mediaType", "")),
                                                   digest=child["digest"], size=int(child.get("size") or 0))
                found += _config_snapshotters(content, namespace, descriptor, timeout, depth + 1)
        return found
    config = document.get("config")
    if not isinstance(config, dict) or not isinstance(config.get("digest"), str):
        return []
    try:
        info = content.Info(content_pb2.InfoRequest(digest=config["digest"]), metadata=_in(namespace),
                            timeout=timeout).info
    except grpc.RpcError as error:
        if error.code() == grpc.StatusCode.NOT_FOUND:
            return []
        raise
    return [{key.removeprefix(GC_SNAPSHOT_LABEL) for key in info.labels if key.startswith(GC_SNAPSHOT_LABEL)}]


def images_unpacked_only_for(address: str, snapshotter: str, timeout: float = 30.0) -> list[ImageRef]:
    """Images containerd unpacked for `snapshotter` and for no other snapshotter."""
    found = []
    with _channel(address) as channel:
        images = images_pb2_grpc.ImagesStub(channel)
        content = content_pb2_grpc.ContentStub(channel)
        try:
            for namespace in namespaces(address, timeout):
                listed = images.List(images_pb2.ListImagesRequest(), metadata=_in(namespace), timeout=timeout)
                for image in listed.images:
                    unpacked = _config_snapshotters(content, namespace, image.target, timeout)
                    if any(snapshotters == {snapshotter} for snapshotters in unpacked):
                        found.append(ImageRef(namespace, image.name))
        except grpc.RpcError as error:
            raise _unreachable(address, error) from error
    return found


def remove_image(address: str, image: ImageRef, timeout: float = 120.0) -> None:
    """Delete an image and, before answering, collect the snapshots and blobs nothing else uses."""
    with _channel(address) as channel:
        try:
            images_pb2_grpc.ImagesStub(channel).Delete(images_pb2.DeleteImageRequest(name=image.name, sync=True),
                                                       metadata=_in(image.namespace), timeout=timeout)
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.NOT_FOUND:
                raise _unreachable(address, error) from error


def containers_on(address: str, snapshotter: str, timeout: float = 30.0) -> list[ContainerRef]:
    """Containers (running or not) whose root filesystem is a snapshot of `snapshotter`."""
    found = []
    with _channel(address) as channel:
        stub = containers_pb2_grpc.ContainersStub(channel)
        try:
            for namespace in namespaces(address, timeout):
                # containerd cannot filter containers by snapshotter (its filters know id, image, runtime, labels).
                listed = stub.List(containers_pb2.ListContainersRequest(), metadata=_in(namespace), timeout=timeout)
                for container in (c for c in listed.containers if c.snapshotter == snapshotter):
                    labels = container.labels
                    pod = (f"{labels[POD_NAMESPACE_LABEL]}/{labels[POD_NAME_LABEL]}"
                           if POD_NAME_LABEL in labels and POD_NAMESPACE_LABEL in labels else "")
                    found.append(ContainerRef(namespace, container.id, pod))
        except grpc.RpcError as error:
            raise _unreachable(address, error) from error
    return found


def wait_for(probe, timeout: float, interval: float = 0.2):
    """Call `probe()` until it returns a value without raising `Unreachable`, for up to `timeout`
    seconds; the last `Unreachable` is raised when time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return probe()
        except Unreachable:
            if time.monotonic() >= deadline:
                raise
            time.sleep(interval)
