"""How the agent starts, stops and restarts services on the host: an injected `ServiceManager`.

On a node it is `SystemdManager`: `systemctl` run in the host's namespaces through its PID 1
(`nsenter --target 1 --mount --uts --ipc --net --pid -- systemctl ...`; the pod shares the
host's PID namespace). The snapshotter therefore runs as a host service, not in the agent's pod,
so restarting or upgrading the agent never touches the FUSE mounts of running containers.
Tests inject a manager that runs the units as child processes of their own.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence
from typing import Protocol

NSENTER = ("nsenter", "--target", "1", "--mount", "--uts", "--ipc", "--net", "--pid", "--")


class ServiceError(Exception):
    """A service command failed; the message has the command's own error output."""


class ServiceManager(Protocol):
    def daemon_reload(self) -> None:
        """Re-read unit files after one was written or removed."""

    def enable(self, name: str) -> None:
        """Start `name` at boot."""

    def disable(self, name: str) -> None:
        """No longer start `name` at boot."""

    def start(self, name: str) -> None: ...

    def stop(self, name: str) -> None: ...

    def restart(self, name: str) -> None: ...

    def is_active(self, name: str) -> bool: ...


Runner = Callable[[Sequence[str]], subprocess.CompletedProcess]


def _run(command: Sequence[str]) -> subprocess.CompletedProcess:
    return subprocess.run(list(command), capture_output=True, text=True, timeout=120)


class SystemdManager:
    """systemd on the host, reached through PID 1's namespaces."""

    def __init__(self, run: Runner = _run):
        self._run = run

    def _systemctl(self, *arguments: str) -> subprocess.CompletedProcess:
        return self._run([*NSENTER, "systemctl", *arguments])

    def _check(self, *arguments: str) -> None:
        result = self._systemctl(*arguments)
        if result.returncode != 0:
            detail = (result.stderr or result.stdout or "").strip()
            raise ServiceError(f"systemctl {' '.join(arguments)} failed (exit {result.returncode}): {detail}")

    def daemon_reload(self) -> None:
        self._check("daemon-reload")

    def enable(self, name: str) -> None:
        self._check("enable", f"{name}.service")

    def disable(self, name: str) -> None:
        self._check("disable", f"{name}.service")

    def start(self, name: str) -> None:
        self._check("start", f"{name}.service")

    def stop(self, name: str) -> None:
        self._check("stop", f"{name}.service")

    def restart(self, name: str) -> None:
        self._check("restart", f"{name}.service")

    def is_active(self, name: str) -> bool:
        # `is-active` prints the state and exits 0 only for "active".
        return self._systemctl("is-active", "--quiet", f"{name}.service").returncode == 0
