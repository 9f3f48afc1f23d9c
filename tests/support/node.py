"""A node for the real-node tests: a private containerd, a systemd stand-in, and the agent's view of it.

`TestNode.create(directory, snapshotter_binary)` lays out a node whose files all live under
`directory/node` (`HostPaths().under(...)`), and gives the agent the host's `/` through
`directory/host-root`, a symlink to `/`, the way the DaemonSet mounts the host's `/` at `/host`.
The agent then runs through its production code path; only the host root and the service manager
are injected.

- The node's containerd config is the real `containerd config default` of Debian's containerd,
  with root, state, socket and the `opt` plugin's directory moved into the temp dir: never the
  system containerd or its socket. It runs as the unit `containerd.service` in the node's unit
  directory.
- `ProcessServices` is the systemd stand-in: it starts a unit's `ExecStart` (with its
  `Environment`) as a child process and records every verb it was asked, so tests can assert
  "no restart".
- `close()` kills what the node started (containers, their shims, the services) by pid and
  unmounts whatever is left mounted under the temp dir.

containerd 1.6 always puts shim sockets under /run/containerd/s/ (hashed with the socket path, so
several containerds do not clash); `ctr` gets its FIFO and runc directories in the temp dir.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shlex
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from agent import containerd
from agent.node import Node
from agent.paths import SNAPSHOTTER_UNIT, HostPaths
from converter.estargz import LayerOptions
from converter.image import convert_image
from converter.reference import parse_reference
from converter.registry import RegistryClient
from tests.support.cri import ImageService
from tests.support.images import Executable, Platform, Symlink, push_image

NAMESPACE = "k8s.io"  # the namespace CRI pulls into
BUSYBOX = Path("/bin/busybox")  # Debian's busybox-static: one static binary for sh, cat, sleep


@dataclass(frozen=True)
class LazyImage:
    """A runnable image and its accelerated twin in a registry, with the files a container reads."""

    repository: str
    tag: str
    twin_tag: str
    files: dict[str, bytes]  # path in the image → content
    layer_sizes: dict[str, int]  # digest → size, of the twin's layers
    source_layer_sizes: dict[str, int]
    startup_bytes: dict[str, int]  # digest → what the converter says a node fetches to start, per twin layer
    prioritized: dict[str, list[str]]  # digest → the files the converter placed first in that twin layer

    def ref(self, host: str, twin: bool = True) -> str:
        return f"{host}/{self.repository}:{self.twin_tag if twin else self.tag}"


def _noise(seed: str, size: int) -> bytes:
    return hashlib.shake_256(seed.encode()).digest(size)


def push_lazy_image(work: Path, registry_url: str, repository: str, credentials: tuple[str, str] | None = None,
                    noise_size: int = 12 << 20, prioritized: tuple[str, ...] = ()) -> LazyImage:
    """Push a busybox image with a large data layer, convert it to its eStargz twin with the
    project's converter (with `prioritized` files, as a rule would give them), and describe both.
    Incompressible data stands for the bulk of a real image that a container start does not read."""
    files = {"data/first.txt": b"first file, read when the container starts\n",
             "data/second.txt": b"second file, read later\n" * 3,
             "data/third.txt": b"third file, only read after the agent restarted\n"}
    layers = [
        {"bin/": None, "bin/busybox": Executable(BUSYBOX.read_bytes()), "bin/sh": Symlink("busybox"),
         "bin/cat": Symlink("busybox"), "bin/sleep": Symlink("busybox")},
        {"data/": None, "data/bulk.bin": _noise(repository, noise_size), "data/first.txt": files["data/first.txt"]},
        {"data/second.txt": files["data/second.txt"], "data/third.txt": files["data/third.txt"],
         "data/more.bin": _noise(repository + "-more", noise_size // 4)},
    ]
    host = registry_url.split("://", 1)[1]
    push_image(work, f"{host}/{repository}:1.0", [Platform(layers=layers)], credentials=credentials)
    username, password = credentials or (None, None)
    with RegistryClient(registry_url, username=username, password=password) as client:
        result = convert_image(client, parse_reference(f"{host}/{repository}:1.0"),
                               options=LayerOptions(prioritized_files=prioritized))
        source = client.get_manifest(repository, "1.0").json()
        twin = client.get_manifest(repository, "1.0-apparate").json()
    assert result.platforms, result
    return LazyImage(repository, "1.0", "1.0-apparate", files,
                     {layer["digest"]: layer["size"] for layer in twin["layers"]},
                     {layer["digest"]: layer["size"] for layer in source["layers"]},
                     {layer.digest: layer.startup_bytes for layer in result.platforms[0].layers},
                     {layer.digest: layer.prioritized for layer in result.platforms[0].layers})


class ProcessServices:
    """Runs systemd units found in `unit_dir` as child processes (no systemd here)."""

    def __init__(self, host_root: Path, unit_dir: str, log_dir: Path):
        self.host_root, self.unit_dir, self.log_dir = host_root, unit_dir, log_dir
        self.processes: dict[str, subprocess.Popen] = {}
        self.enabled: set[str] = set()
        self.calls: list[tuple[str, str]] = []

    def _unit(self, name: str) -> tuple[list[str], dict[str, str]]:
        command, environment = None, {}
        text = (self.host_root / self.unit_dir.lstrip("/") / f"{name}.service").read_text()
        for line in text.splitlines():
            key, _, value = line.partition("=")
            if key == "ExecStart":
                command = shlex.split(value)
            elif key == "Environment":
                environment.update(item.split("=", 1) for item in shlex.split(value))
        assert command, f"{name}.service has no ExecStart"
        return command, environment

    def daemon_reload(self) -> None:
        self.calls.append(("daemon-reload", ""))

    def enable(self, name: str) -> None:
        self.calls.append(("enable", name))
        self.enabled.add(name)

    def disable(self, name: str) -> None:
        self.calls.append(("disable", name))
        self.enabled.discard(name)

    def start(self, name: str) -> None:
        self.calls.append(("start", name))
        self._start(name)

    def _start(self, name: str) -> None:
        if self.is_active(name):
            return
        command, environment = self._unit(name)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_dir / f"{name}.log", "ab") as log:
            self.processes[name] = subprocess.Popen(command, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                                    env={**os.environ, **environment})

    def stop(self, name: str) -> None:
        self.calls.append(("stop", name))
        self._stop(name)

    def _stop(self, name: str) -> None:
        process = self.processes.pop(name, None)
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def restart(self, name: str) -> None:
        self.calls.append(("restart", name))
        self._stop(name)
        self._start(name)

    def is_active(self, name: str) -> bool:
        process = self.processes.get(name)
        return process is not None and process.poll() is None

    def verbs(self, name: str) -> list[str]:
        return [verb for verb, unit in self.calls if unit == name]

    def log(self, name: str) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""


def loopback_name() -> str:
    """A name for this machine that resolves to a loopback address but is not `localhost` or an IP.

    containerd and the snapshotter use plain HTTP for `localhost` and loopback IPs by themselves;
    through this name they speak HTTP only because of the configuration the agent writes."""
    name = socket.gethostname()
    try:
        address = socket.gethostbyname(name)
    except OSError as error:
        raise RuntimeError(f"this machine's name {name!r} does not resolve ({error}); the node tests need it to "
                           "resolve to a loopback address (as Debian's /etc/hosts has it)") from error
    if not address.startswith("127.") or name == "localhost":
        raise RuntimeError(f"this machine's name {name!r} resolves to {address}, not to a loopback address")
    return name


def original_containerd_config(prefix: Path) -> str:
    """`containerd config default`, with its directories and socket moved below `prefix`."""
    text = subprocess.run(["containerd", "config", "default"], capture_output=True, text=True, check=True).stdout
    for key, path in (("root", "/var/lib/containerd"), ("state", "/run/containerd"),
                      ("address", "/run/containerd/containerd.sock"), ("path", "/opt/containerd")):
        old = f'{key} = "{path}"'
        assert text.count(old) == 1, f"containerd config default no longer has {old!r}"
        text = text.replace(old, f'{key} = "{prefix}{path}"')
    return text


@dataclass
class TestNode:
    directory: Path
    paths: HostPaths
    host_root: Path
    services: ProcessServices
    snapshotter_binary: Path
    config_dir: Path
    containers: list[str] = field(default_factory=list)

    __test__ = False  # not a test class, despite the name

    @classmethod
    def create(cls, directory: Path, snapshotter_binary: Path, config_text: str | None = None) -> TestNode:
        """A node with containerd running; `config_text` replaces its default config (None keeps it).

        Keep `directory` short: unix socket paths below it must stay under 108 bytes."""
        prefix = directory / "node"
        paths = HostPaths().under(str(prefix))
        host_root = directory / "host-root"
        host_root.symlink_to("/")
        services = ProcessServices(host_root, paths.unit_dir, directory / "logs")
        node = cls(directory, paths, host_root, services, snapshotter_binary, directory / "agent-config")
        config = Path(paths.containerd_config)
        config.parent.mkdir(parents=True)
        config.write_text(original_containerd_config(prefix) if config_text is None else config_text)
        unit = Path(paths.unit_dir) / f"{paths.containerd_service}.service"
        unit.parent.mkdir(parents=True)
        unit.write_text(f"[Service]\nExecStart=containerd --config {config} --log-level info\n")
        services.start(paths.containerd_service)
        services.calls.clear()
        try:
            node.wait_for_containerd()
        except BaseException:
            node.close()
            raise
        return node

    @property
    def prefix(self) -> Path:
        """Where the node's own files are (what would be `/` on a real node)."""
        return self.directory / "node"

    @property
    def address(self) -> str:
        return self.paths.containerd_address

    def agent(self, restart_timeout: float = 20.0) -> Node:
        """The agent's Node, as the DaemonSet's `python -m agent` builds it, with our injections."""
        return Node(services=self.services, paths=self.paths, host_root=self.host_root,
                    snapshotter_source=self.snapshotter_binary, restart_timeout=restart_timeout)

    def wait_for_containerd(self, timeout: float = 30.0) -> str:
        try:
            return containerd.wait_for(lambda: containerd.version(self.address), timeout)
        except containerd.Unreachable as error:
            raise AssertionError(f"{error}\n{self.services.log(self.paths.containerd_service)}") from error

    def ctr(self, *arguments: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        proc = subprocess.run(["ctr", "--address", self.address, "--namespace", NAMESPACE, *arguments],
                              capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"ctr {' '.join(arguments)} failed: {proc.stderr}")
        return proc

    def cri(self) -> ImageService:
        return ImageService(self.address)

    # --- what a pull left behind

    def content_digests(self) -> set[str]:
        lines = self.ctr("content", "ls", "--quiet").stdout.split()
        return set(lines)

    def snapshot_labels(self, snapshotter: str) -> dict[str, dict[str, str]]:
        """Snapshot name → labels, for every snapshot of `snapshotter`."""
        keys = [line.split()[0] for line in self.ctr("snapshots", "--snapshotter", snapshotter, "ls").stdout
                .splitlines()[1:] if line.strip()]
        return {key: json.loads(self.ctr("snapshots", "--snapshotter", snapshotter, "info", key).stdout)
                .get("Labels", {}) for key in keys}

    def fuse_mounts(self) -> list[tuple[str, str, str]]:
        """(mount point, fs type, source) of FUSE mounts under the snapshotter's root."""
        mounts = []
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            before, _, after = line.partition(" - ")
            fstype, source = after.split(" ")[:2]
            point = before.split(" ")[4]
            if fstype.startswith("fuse") and point.startswith(self.paths.snapshotter_root + "/"):
                mounts.append((point, fstype, source))
        return mounts

    # --- containers

    def _run_flags(self, snapshotter: str) -> list[str]:
        return ["--snapshotter", snapshotter, "--fifo-dir", str(self.directory / "fifo"),
                "--runc-root", str(self.directory / "runc")]

    def run(self, image: str, name: str, *command: str, snapshotter: str = "stargz") -> str:
        """Run a container to completion; its output."""
        self.containers.append(name)
        proc = self.ctr("run", "--rm", *self._run_flags(snapshotter), image, name, *command)
        self.containers.remove(name)
        return proc.stdout

    def start(self, image: str, name: str, *command: str, snapshotter: str = "stargz") -> None:
        """Start a long-running container in the background."""
        self.containers.append(name)
        self.ctr("run", "--detach", "--null-io", *self._run_flags(snapshotter), image, name, *command)

    def exec(self, name: str, *command: str) -> str:
        exec_id = f"exec-{time.monotonic_ns()}"
        return self.ctr("task", "exec", "--exec-id", exec_id, "--fifo-dir", str(self.directory / "fifo"),
                        name, *command).stdout

    # --- teardown

    def close(self) -> None:
        for name in list(self.containers):
            with contextlib.suppress(Exception):
                self.ctr("task", "kill", "--signal", "SIGKILL", name, check=False, timeout=30)
                self.ctr("task", "delete", "--force", name, check=False, timeout=30)
                self.ctr("container", "delete", name, check=False, timeout=30)
        for name in [SNAPSHOTTER_UNIT, self.paths.containerd_service]:
            self.services._stop(name)
        for process in list(self.services.processes):
            self.services._stop(process)
        _kill_shims(self.address)
        _unmount_under(self.directory)


def _kill_shims(address: str) -> None:
    """Shims outlive containerd; ours are the ones started with our socket's address."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if command and command[0].endswith(b"containerd-shim-runc-v2") and address.encode() in command:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(entry.name), signal.SIGKILL)


def _unmount_under(directory: Path) -> None:
    prefix = str(directory) + "/"
    points = [line.split(" ")[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    for point in reversed([p for p in points if p.startswith(prefix)]):
        subprocess.run(["umount", "--lazy", point], capture_output=True, timeout=30)
