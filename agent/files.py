"""The files the agent writes on the node, rendered as text (no I/O).

- the snapshotter's `config.toml` (upstream's format): one `[[resolver.host."HOST".mirrors]]`
  per registry, `insecure = true` for plain HTTP;
- the systemd unit that runs the snapshotter, ordered before containerd and pointing
  `DOCKER_CONFIG` at the credentials the agent copied from the pull Secret, and, when a registry
  has a private CA, `SSL_CERT_DIR` at the CA files plus the usual system directories (Go's TLS
  reads every certificate in those directories);
- containerd's `hosts.toml` for a registry that needs one (plain HTTP or a private CA);
- the one-shot unit that removes the snapshotter's files at the next boot, when a cleanup had to
  leave the snapshotter running for containers that still use its snapshots.

Each starts with `MARKER`, so uninstall removes only files the agent wrote.
"""

from __future__ import annotations

import shlex

import tomlkit

from .inputs import AgentInputs, Registry
from .paths import BOOT_CLEANUP_UNIT, HostPaths

MARKER = "# Written by the apparate node agent; removed when the agent is uninstalled.\n"
CA_FILE = "apparate-ca.crt"
SYSTEM_CERT_DIRS = ("/etc/ssl/certs", "/etc/pki/tls/certs")


def snapshotter_config(inputs: AgentInputs) -> str:
    document = tomlkit.document()
    if inputs.no_background_fetch:
        document["no_background_fetch"] = True
    hosts = tomlkit.table(is_super_table=True)
    for registry in inputs.registries:
        mirror = tomlkit.table()
        mirror["host"] = registry.host
        mirror["insecure"] = registry.insecure
        mirrors = tomlkit.aot()
        mirrors.append(mirror)
        hosts[registry.host] = {"mirrors": mirrors}
    if inputs.registries:
        document["resolver"] = {"host": hosts}
    return MARKER + document.as_string()


def snapshotter_unit(paths: HostPaths, with_private_cas: bool) -> str:
    command = shlex.join([
        paths.snapshotter_binary, "--log-level=info", f"--address={paths.snapshotter_address}",
        f"--config={paths.snapshotter_config}", f"--root={paths.snapshotter_root}",
    ])
    environment = [f"DOCKER_CONFIG={paths.docker_config_dir}"]
    if with_private_cas:
        environment.append("SSL_CERT_DIR=" + ":".join((paths.snapshotter_ca_dir, *SYSTEM_CERT_DIRS)))
    return MARKER + f"""[Unit]
Description=stargz snapshotter: lazy pulling of eStargz images (apparate)
Documentation=https://github.com/containerd/stargz-snapshotter
After=network.target local-fs.target
Before={paths.containerd_service}.service

[Service]
Type=simple
Environment={shlex.join(environment)}
ExecStart={command}
Restart=always
RestartSec=1

[Install]
WantedBy=multi-user.target
"""


def hosts_toml(registry: Registry, ca_path: str | None) -> str:
    """containerd's registry host configuration (hosts.toml) for one registry."""
    document = tomlkit.document()
    document["server"] = registry.server
    host = tomlkit.table()
    host["capabilities"] = ["pull", "resolve"]
    if ca_path:
        host["ca"] = ca_path
    document["host"] = {registry.server: host}
    return MARKER + document.as_string()


def boot_cleanup_unit(paths: HostPaths) -> str:
    """Runs once at the next boot (no container can use the snapshotter's snapshots any more then):
    removes the snapshotter's binary, configuration and root, then its own unit."""
    removed = shlex.join(["/bin/rm", "-rf", paths.snapshotter_binary, paths.snapshotter_config_dir,
                          paths.snapshotter_root])
    own_unit = f"{paths.unit_dir}/{BOOT_CLEANUP_UNIT}.service"
    return MARKER + f"""[Unit]
Description=Remove the stargz snapshotter the apparate node agent left running for old containers
Before={paths.containerd_service}.service

[Service]
Type=oneshot
ExecStart={removed}
ExecStart=/bin/systemctl disable {BOOT_CLEANUP_UNIT}.service
ExecStart={shlex.join(["/bin/rm", "-f", own_unit])}

[Install]
WantedBy=multi-user.target
"""
