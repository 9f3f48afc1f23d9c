"""Where things live on the node, and how the agent reaches them from inside its pod.

`HostPaths` are paths as the host sees them: they are what goes into the files the agent writes
(the unit's ExecStart, containerd's proxy plugin address, hosts.toml's `ca`). The agent itself
reads and writes them through `host_root` (the host's `/` mounted into the pod, `/host` by
default): `Node.host_file(path)` is `host_root / path`.

Defaults follow the upstream stargz-snapshotter install guide for the snapshotter's socket and
state, put our own files under apparate-named paths, and can be moved for nodes whose containerd
lives elsewhere (environment variables in `HostPaths.from_env`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from pathlib import PurePosixPath

SNAPSHOTTER_UNIT = "apparate-stargz-snapshotter"
# Written by a cleanup that had to leave the snapshotter running for containers still using it.
BOOT_CLEANUP_UNIT = "apparate-stargz-cleanup"


@dataclass(frozen=True)
class HostPaths:
    containerd_config: str = "/etc/containerd/config.toml"
    containerd_address: str = "/run/containerd/containerd.sock"
    # containerd's systemd service (k3s and rke2 name theirs differently).
    containerd_service: str = "containerd"
    # registry.config_path the agent sets when containerd's config has none (hosts.toml files go there).
    registry_hosts_dir: str = "/etc/containerd/certs.d"
    unit_dir: str = "/etc/systemd/system"
    snapshotter_binary: str = "/opt/apparate/bin/containerd-stargz-grpc"
    snapshotter_config_dir: str = "/etc/apparate/stargz"
    snapshotter_root: str = "/var/lib/containerd-stargz-grpc"
    snapshotter_address: str = "/run/containerd-stargz-grpc/containerd-stargz-grpc.sock"
    state_dir: str = "/var/lib/apparate/agent"
    fuse_device: str = "/dev/fuse"

    # Environment variables that move a path, for nodes laid out differently.
    ENV = {
        "containerd_config": "APPARATE_CONTAINERD_CONFIG",
        "containerd_address": "APPARATE_CONTAINERD_ADDRESS",
        "containerd_service": "APPARATE_CONTAINERD_SERVICE",
    }

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> HostPaths:
        environ = os.environ if environ is None else environ
        return cls(**{name: environ[var] for name, var in cls.ENV.items() if environ.get(var)})

    def under(self, prefix: str, keep: tuple[str, ...] = ("containerd_service", "fuse_device")) -> HostPaths:
        """Every path moved below `prefix` (a node whose files all live in one directory)."""
        return replace(self, **{f.name: str(PurePosixPath(prefix) / getattr(self, f.name).lstrip("/"))
                                for f in fields(self) if f.name not in keep})

    @property
    def unit_file(self) -> str:
        return f"{self.unit_dir}/{SNAPSHOTTER_UNIT}.service"

    @property
    def boot_cleanup_unit_file(self) -> str:
        return f"{self.unit_dir}/{BOOT_CLEANUP_UNIT}.service"

    @property
    def snapshotter_config(self) -> str:
        return f"{self.snapshotter_config_dir}/config.toml"

    @property
    def docker_config_dir(self) -> str:
        return f"{self.snapshotter_config_dir}/docker"

    @property
    def snapshotter_ca_dir(self) -> str:
        return f"{self.snapshotter_config_dir}/certs"
