"""Talking to containerd and to the snapshotter over their gRPC sockets.

- `version()` asks containerd's version service; `supported_version_problem()` checks it against
  the range the agent supports.
- `plugins()` asks containerd's introspection service which plugins loaded, with the init error
  of those that did not (a refused config shows up there, e.g. on the CRI plugin).
- `snapshotter_answers()` asks the stargz snapshotter's own socket for a snapshot that does not
  exist: a NOT_FOUND answer proves a snapshotter is serving there.

The generated modules in agent/proto/ come from the .proto files beside them (see
agent/proto/__init__.py); they are committed so the agent image needs no code generator.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

import grpc
from google.protobuf import empty_pb2

from .proto import introspection_pb2, introspection_pb2_grpc, snapshots_pb2, snapshots_pb2_grpc, version_pb2_grpc

# 1.5 brought registry.config_path (hosts.toml), which plain-HTTP registries need; 3.x does not exist yet.
MINIMUM_VERSION = (1, 5)
BELOW_VERSION = (3, 0)
SUPPORTED_RANGE = ">= 1.5 and < 3.0"
SNAPSHOTTER_PLUGIN = "io.containerd.snapshotter.v1.stargz"
CRI_PLUGIN = "io.containerd.grpc.v1.cri"
# containerd 2.x splits the CRI plugin; a config it refuses makes one of these fail to load.
CRI_PLUGINS = frozenset({CRI_PLUGIN, "io.containerd.cri.v1.images", "io.containerd.cri.v1.runtime"})
_VERSION = re.compile(r"v?(\d+)\.(\d+)(?:\.(\d+))?")


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
