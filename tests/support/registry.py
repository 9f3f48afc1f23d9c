"""pytest plugin: Debian's `docker-registry` (CNCF Distribution 2.8) on a free loopback port.

`registry_factory(htpasswd=..., notify_url=..., notify_secret=..., delete=True)` starts one per call and stops it
at the end of the test; `registry` is an anonymous one. Storage lives in the test's temp dir.
"""

import json
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import bcrypt
import pytest
import requests


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class RunningRegistry:
    host: str  # host:port, as in image addresses
    process: subprocess.Popen
    root: Path
    credentials: tuple[str, str] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def log(self) -> str:
        return (self.root / "registry.log").read_text(errors="replace")


def start_registry(
    root: Path,
    htpasswd: tuple[str, str] | None = None,
    notify_url: str | None = None,
    notify_secret: str | None = None,
    delete: bool = True,
) -> RunningRegistry:
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = {
        "version": 0.1,
        "log": {"level": "info", "formatter": "text"},
        "storage": {"filesystem": {"rootdirectory": str(root / "data")}, "delete": {"enabled": delete}},
        "http": {"addr": f"127.0.0.1:{port}", "secret": "test-registry-secret"},
    }
    if htpasswd:
        user, password = htpasswd
        hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
        (root / "htpasswd").write_text(f"{user}:{hashed}\n")
        config["auth"] = {"htpasswd": {"realm": "apparate-test", "path": str(root / "htpasswd")}}
    if notify_url:
        endpoint = {"name": "apparate", "url": notify_url, "timeout": "2s", "threshold": 3, "backoff": "1s"}
        if notify_secret:
            endpoint["headers"] = {"Authorization": [notify_secret]}
        config["notifications"] = {"endpoints": [endpoint]}
    config_path = root / "config.yml"
    config_path.write_text(json.dumps(config))  # JSON is valid YAML
    log = open(root / "registry.log", "wb")  # noqa: SIM115 - closed with the process
    process = subprocess.Popen(["docker-registry", "serve", str(config_path)], stdout=log, stderr=log)
    running = RunningRegistry(host=f"127.0.0.1:{port}", process=process, root=root, credentials=htpasswd)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"docker-registry exited: {running.log()}")
        try:
            requests.get(f"{running.url}/v2/", timeout=1)
            return running
        except requests.ConnectionError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"docker-registry did not start: {running.log()}")


@pytest.fixture
def registry_factory(tmp_path):
    started: list[RunningRegistry] = []

    def factory(**options) -> RunningRegistry:
        running = start_registry(tmp_path / f"registry-{len(started)}", **options)
        started.append(running)
        return running

    yield factory
    for running in started:
        running.process.terminate()
        try:
            running.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            running.process.kill()


@pytest.fixture
def registry(registry_factory) -> RunningRegistry:
    return registry_factory()
