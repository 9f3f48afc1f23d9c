"""The agent's long-running mode: set the node up, keep its status fresh, and on termination
either leave everything running or clean the node up.

    run(node, config_dir, cleanup, stop)

- At start, and whenever the mounted configuration changes, `install` runs (idempotent). It runs
  again while the last status says something that may clear by itself (containerd not answering
  yet, the snapshotter not up, a restart waiting for mounts to go), never in a loop after
  containerd refused a config (that waits for new inputs or a new agent).
- In between, `check` refreshes the status file every `interval` seconds.
- When `stop` is set (SIGTERM), `cleanup.should_clean_up()` decides: False for a pod restart or an
  upgrade (the snapshotter is a host service and keeps serving running containers); True when the
  node is leaving the suite (uninstall, label removed), and then `uninstall` runs.
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


class KeepRunning:
    """Never clean up on termination: a stopping agent leaves the node lazy-pulling."""

    def should_clean_up(self) -> bool:
        return False


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


def run(node: Node, config_dir: Path, cleanup: CleanupDecision, stop: threading.Event,
        interval: float = 30.0) -> Status | None:
    fingerprint = None
    status: Status | None = None
    while not stop.is_set():
        current = inputs_fingerprint(config_dir)
        if (current != fingerprint or status is None or status.code in RETRY_INSTALL
                or node.load_state().get("snapshotter_restart_pending")):
            fingerprint = current
            status = install_from(node, config_dir)
            log.info("install: %s", status.as_dict())
        else:
            status = check(node)
            write_status(node.state_dir, status)
        stop.wait(interval)
    if cleanup.should_clean_up():
        status = uninstall(node)
        log.info("uninstall: %s", status.as_dict())
    else:
        log.info("stopping; the snapshotter and containerd's configuration stay in place")
    return status
