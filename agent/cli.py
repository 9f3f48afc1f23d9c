"""Command line: `python -m agent install|status|uninstall|run|uninstall-suite`.

Settings come from the environment (the DaemonSet sets them):

- `APPARATE_HOST_ROOT` (default `/host`): where the host's `/` is mounted in the pod;
- `APPARATE_AGENT_CONFIG_DIR` (default `/etc/apparate/agent`): `agent.json` and
  `dockerconfig.json`, see agent.inputs;
- `APPARATE_CONTAINERD_CONFIG`, `APPARATE_CONTAINERD_ADDRESS`, `APPARATE_CONTAINERD_SERVICE`: a
  containerd that is not at `/etc/containerd/config.toml`, `/run/containerd/containerd.sock`,
  `containerd.service`;
- `APPARATE_SNAPSHOTTER_SOURCE` (default `/usr/local/bin/containerd-stargz-grpc`): the daemon in
  the agent image that is copied to the host;
- `APPARATE_CONTAINERD_RESTART_TIMEOUT` (seconds, default 60), `APPARATE_CHECK_INTERVAL` (seconds,
  default 30);
- in a pod, the cluster link of agent.cluster (node name, label, revision, ConfigMap); without it
  `run` works alone: it reports nothing and never cleans up on termination.

Every node command prints the node's status as JSON. Exit codes: `install` and `status` 0 when
the node is ready to lazy-pull, 1 when not (2 for `status` when no status was written yet);
`uninstall` 0 when the node was put back; `run` 0 after a clean stop (SIGTERM or SIGINT).

`uninstall-suite [--timeout S]` is the Helm chart's pre-delete hook: it asks every agent to clean
its node up and waits for them (exit 0), or names the nodes that did not confirm in time (exit 1).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from .cluster import ClusterLink, uninstall_suite
from .kubeapi import ApiError, KubeApi
from .node import IMAGE_SNAPSHOTTER, Node, uninstall
from .paths import HostPaths
from .run import KeepRunning, install_from, run
from .services import SystemdManager
from .status import Code, Status, read_status


def node_from_env(environ: dict[str, str] | None = None) -> Node:
    environ = os.environ if environ is None else environ
    return Node(
        services=SystemdManager(),
        paths=HostPaths.from_env(environ),
        host_root=Path(environ.get("APPARATE_HOST_ROOT", "/host")),
        snapshotter_source=Path(environ.get("APPARATE_SNAPSHOTTER_SOURCE", IMAGE_SNAPSHOTTER)),
        restart_timeout=float(environ.get("APPARATE_CONTAINERD_RESTART_TIMEOUT", "60")),
    )


def _print(status: Status) -> None:
    print(json.dumps(status.as_dict(), indent=2))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agent", description="apparate node agent")
    parser.add_argument("command", choices=["install", "status", "uninstall", "run", "uninstall-suite"])
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="uninstall-suite: seconds to wait for the nodes to confirm (default 600)")
    arguments = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if arguments.command == "uninstall-suite":
        return _uninstall_suite(arguments.timeout)
    node = node_from_env()
    config_dir = Path(os.environ.get("APPARATE_AGENT_CONFIG_DIR", "/etc/apparate/agent"))
    if arguments.command == "status":
        status = read_status(node.state_dir)
        if status is None:
            print(json.dumps({"ready": False, "reason": "the agent has not written a status yet"}))
            return 2
        _print(status)
        return 0 if status.ready else 1
    if arguments.command == "install":
        status = install_from(node, config_dir)
        _print(status)
        return 0 if status.ready else 1
    if arguments.command == "uninstall":
        status = uninstall(node)
        _print(status)
        return 0 if status.code == Code.REMOVED else 1
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    interval = float(os.environ.get("APPARATE_CHECK_INTERVAL", "30"))
    run(node, config_dir, ClusterLink.from_env() or KeepRunning(), stop, interval)
    return 0


def _uninstall_suite(timeout: float) -> int:
    api = KubeApi.in_cluster()
    if api is None:
        print("uninstall-suite runs in a pod of the cluster (KUBERNETES_SERVICE_HOST is not set)", file=sys.stderr)
        return 2
    namespace = os.environ.get("APPARATE_NAMESPACE", "apparate-system")
    try:
        waiting = uninstall_suite(api, namespace, timeout, say=print)
    except ApiError as error:
        print(f"the uninstall could not be requested: {error}", file=sys.stderr)
        return 1
    if waiting:
        print(f"{len(waiting)} nodes did not confirm their cleanup within {timeout:g} s:", file=sys.stderr)
        for name, why in sorted(waiting.items()):
            print(f"  {name}: {why}", file=sys.stderr)
        return 1
    print("every node confirmed its cleanup")
    return 0


if __name__ == "__main__":
    sys.exit(main())
