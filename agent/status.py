"""The node's readiness to lazy-pull, as a machine-readable status with a reason a person can act on.

The agent writes it to `<state_dir>/status.json` on the host after every install and check:

    {"ready": false, "code": "fuse_missing",
     "reason": "/dev/fuse is missing: install fuse (e.g. `yum install -y fuse`) ...",
     "containerd_version": "1.6.20", "notes": [], "checked_at": "2025-01-01T00:00:00Z"}

`code` is one of the `Code` values (stable, for programs); `reason` is the sentence to show;
`notes` are things worth knowing that do not stop lazy pulling (e.g. a snapshotter restart
waiting for lazily pulled layers to be released). `python -m agent status` prints the file and
exits 0 only when `ready` is true, so it serves as an exec readinessProbe.
"""

from __future__ import annotations

import datetime
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path

STATUS_FILE = "status.json"


class Code(StrEnum):
    READY = "ready"
    REMOVED = "removed"
    FUSE_MISSING = "fuse_missing"
    CONTAINERD_UNREACHABLE = "containerd_unreachable"
    CONTAINERD_UNSUPPORTED = "containerd_unsupported"
    INPUT_INVALID = "input_invalid"
    CONFIG_NOT_WRITTEN = "config_not_written"
    CONTAINERD_RESTART_FAILED = "containerd_restart_failed"
    SERVICE_FAILED = "service_failed"
    SNAPSHOTTER_NOT_ANSWERING = "snapshotter_not_answering"
    SNAPSHOTTER_NOT_LOADED = "snapshotter_not_loaded"
    CRI_NOT_LOADED = "cri_not_loaded"


def fuse_missing(device: str) -> str:
    return (f"{device} is missing: install fuse (e.g. `yum install -y fuse` or `apt-get install -y fuse3`) and load "
            "its kernel module (`modprobe fuse`), then restart the agent")


def restart_failed(detail: str, still_down: str | None) -> str:
    text = (f"containerd did not come back after its configuration was changed ({detail}); the previous "
            "configuration was restored and containerd restarted with it")
    return text + (f", but it still does not answer: {still_down}" if still_down else "")


@dataclass
class Status:
    ready: bool
    code: Code
    reason: str = ""
    containerd_version: str = ""
    notes: list[str] = field(default_factory=list)
    checked_at: str = ""

    @classmethod
    def failed(cls, code: Code, reason: str, **details) -> Status:
        return cls(False, code, reason, **details)

    def as_dict(self) -> dict:
        return {**asdict(self), "code": str(self.code)}


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def write_status(directory: Path, status: Status) -> None:
    """Replace the status file atomically, so a probe never reads half a file."""
    status.checked_at = status.checked_at or now()
    directory.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=".status-")
    with os.fdopen(handle, "w") as out:
        json.dump(status.as_dict(), out, indent=2)
        out.write("\n")
    os.replace(temporary, directory / STATUS_FILE)


def read_status(directory: Path) -> Status | None:
    try:
        data = json.loads((directory / STATUS_FILE).read_text())
    except (OSError, ValueError):
        return None
    return Status(data["ready"], Code(data["code"]), data.get("reason", ""), data.get("containerd_version", ""),
                  data.get("notes", []), data.get("checked_at", ""))
