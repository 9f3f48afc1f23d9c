"""The agent's long-running mode: set the node up, keep its status fresh and reported, and on
termination either leave everything running or clean the node up.

    run(node, config_dir, cluster, stop)

- At start, and whenever the mounted configuration changes, `install` runs (idempotent). It runs
  again while the last status says something that may clear by itself (containerd not answering
  yet, the snapshotter not up, a restart waiting for mounts to go), never in a loop after
  containerd refused a config (that waits for new inputs or a new agent).
- In between, `check` refreshes the status file every `interval` seconds.
- After each step the status goes to `cluster.report()` (agent.cluster: an annotation on the Node).
- When `cluster.uninstall_requested()` (the suite's ConfigMap says `mode: uninstall`), the agent
  cleans the node up instead, reports `removed`, and then only waits to be stopped.
- When `stop` is set (SIGTERM), `cluster.should_clean_up()` decides: False for a pod restart or an
  upgrade (the snapshotter is a host service and keeps serving running containers); True when the
  node is leaving the suite (uninstall, label removed), and then `uninstall` runs.

`KeepRunning` is the cluster of an agent run by hand: no reports, never an uninstall.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from pathlib import Path
from typing import Protocol

from .inputs import AGENT_JSON, DOCKER_CONFIG_JSON, InputError, load_inputs
from .node import Node, check, install, uninstall
from .status import Code, Status, write_status

log = logging.getLogger("agent")

# Failures an install may get past on its own later; the others need new inputs or a person.
RETRY_INSTALL = frozenset({Code.FUSE_MISSING, Code.CONTAINERD_UNREACHABLE, Code.SERVICE_FAILED,
                           Code.SNAPSHOTTER_NOT_ANSWERING, Code.SNAPSHOTTER_NOT_LOADED})


class CleanupDecision(Protocol):
    def should_clean_up(self) -> bool:
        """Asked once, when the agent is told to stop: True when the node leaves the suite."""


class Cluster(CleanupDecision, Protocol):
    def uninstall_requested(self) -> bool:
        """Asked every interval: True while the suite asks its agents to clean their nodes up."""

    def report(self, status: Status) -> None:
        """Tell the cluster the node's status (after every install, check and uninstall)."""


class KeepRunning:
    """No cluster to ask or tell: never clean up, so a stopping agent leaves the node lazy-pulling."""

    def should_clean_up(self) -> bool:
        return False

    def uninstall_requested(self) -> bool:
        return False

    def report(self, status: Status) -> None:
        pass


def inputs_fingerprint(config_dir: Path) -> str:
    digest = hashlib.sha256()
    for name in (AGENT_JSON, DOCKER_CONFIG_JSON):
        try:
            digest.update((config_dir / name).read_bytes())
        except OSError:
            digest.update(b"\0missing")
        digest.update(b"\0")
    return digest.hexdigest()


def install_from(node: Node, config_dir: Path) -> Status:
    """`install` with the inputs read from `config_dir`; invalid inputs change nothing on the node."""
    try:
        inputs = load_inputs(config_dir)
    except InputError as error:
        status = Status.failed(Code.INPUT_INVALID, f"the agent's configuration is invalid: {error}")
        write_status(node.state_dir, status)
        return status
    return install(node, inputs)


def _uninstall(node: Node) -> Status:
    status = uninstall(node)
    log.info("uninstall: %s", status.as_dict())
    if status.code != Code.REMOVED:  # the readiness probe must not keep reading "ready"
        write_status(node.state_dir, status)
    return status


def run(node: Node, config_dir: Path, cluster: Cluster, stop: threading.Event,
        interval: float = 30.0) -> Status | None:
    fingerprint = None
    status: Status | None = None
    while not stop.is_set():
        if cluster.uninstall_requested():
            if status is None or status.code != Code.REMOVED:
                status = _uninstall(node)
        else:
            current = inputs_fingerprint(config_dir)
            if (current != fingerprint or status is None or status.code in RETRY_INSTALL
                    or status.code == Code.REMOVED or node.load_state().get("snapshotter_restart_pending")):
                fingerprint = current
                status = install_from(node, config_dir)
                log.info("install: %s", status.as_dict())
            else:
                status = check(node)
                write_status(node.state_dir, status)
        cluster.report(status)
        stop.wait(interval)
    if status is not None and status.code == Code.REMOVED:
        log.info("stopping; the node was already cleaned up")
    elif cluster.should_clean_up():
        status = _uninstall(node)
        cluster.report(status)
    else:
        log.info("stopping; the snapshotter and containerd's configuration stay in place")
    return status
