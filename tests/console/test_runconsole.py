"""`manage.py runconsole` on the embedded defaults: SQLite and the filesystem broker, no servers.

Starts the real command in a subprocess, waits for the login page, sees the worker execute tasks
sent through the filesystem broker (heartbeat rows in the SQLite file), then stops it with SIGTERM
and checks that the web server and the worker (with its pool) all ended.
"""

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from console.settings import BASE_DIR

STARTUP_SECONDS = 90


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def descendants(pid: int) -> set[int]:
    """Every live process below `pid` (from /proc; no psutil needed)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_for(condition, what: str, process: subprocess.Popen, seconds: float = STARTUP_SECONDS):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"runconsole exited ({process.returncode}) while waiting for {what}")
        result = condition()
        if result:
            return result
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what}")


def heartbeats(database: Path) -> list[tuple[str, str]]:
    if not database.exists():
        return []
    with sqlite3.connect(database, timeout=5) as connection:
        try:
            return connection.execute("SELECT hostname, seen_at FROM console_workerheartbeat").fetchall()
        except sqlite3.OperationalError:
            return []


def login_page(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200 and b"Log in" in response.read()
    except OSError:
        return False


def manage(*args, env, check=True):
    return subprocess.run([sys.executable, "manage.py", *args], cwd=BASE_DIR, env=env, check=check,
                          capture_output=True, text=True, timeout=120)


def test_runconsole_serves_and_runs_a_worker_on_embedded_defaults(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "CELERY_BROKER_URL"}}
    env |= {"APPARATE_VAR_DIR": str(tmp_path), "PYTHONUNBUFFERED": "1"}
    manage("migrate", "--noinput", env=env)
    database = tmp_path / "apparate.sqlite3"
    assert database.exists() and (tmp_path / "local-secrets.json").exists()

    port = free_port()
    log = (tmp_path / "runconsole.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "manage.py", "runconsole", "--port", str(port), "--concurrency", "1"],
        cwd=BASE_DIR, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        wait_for(lambda: login_page(f"http://127.0.0.1:{port}/login/"), "the login page", process)
        css = urllib.request.urlopen(f"http://127.0.0.1:{port}/static/console/app.css", timeout=5)
        assert css.status == 200

        # The worker reports in when it starts (a task it sends itself through the broker) ...
        ((_, first_seen),) = wait_for(lambda: heartbeats(database), "the first heartbeat", process)
        # ... and runs a task sent from another process through the filesystem broker.
        manage("shell", "-c", "from core.tasks import heartbeat; heartbeat.delay()", env=env)
        wait_for(lambda: heartbeats(database)[0][1] > first_seen, "the second heartbeat", process)
        assert "Heartbeat from" in (tmp_path / "runconsole.log").read_text()

        family = descendants(process.pid)
        assert any(b"celery" in Path(f"/proc/{pid}/cmdline").read_bytes() for pid in family if alive(pid))
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
        deadline = time.monotonic() + 30
        while any(alive(pid) for pid in family) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not [pid for pid in family if alive(pid)], "worker processes outlived runconsole"
        assert not login_page(f"http://127.0.0.1:{port}/login/")
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        log.close()


def test_runconsole_refuses_a_busy_port_without_starting_a_worker(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "CELERY_BROKER_URL"}}
    env["APPARATE_VAR_DIR"] = str(tmp_path)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        result = manage("runconsole", "--port", str(busy.getsockname()[1]), env=env, check=False)
    assert result.returncode != 0
    assert "Cannot listen on 127.0.0.1" in result.stderr
    assert "celery" not in result.stdout.lower()
