"""`manage.py runconsole` on the embedded defaults: SQLite and the filesystem broker, no servers.

Starts the real command in a subprocess, waits for the login page, sees the worker execute tasks
sent through the filesystem broker (heartbeat rows in the SQLite file), then stops it with SIGTERM
and checks that the web server, the worker (with its pool) and beat all ended. The local state is
private. A worker killed mid-job is restarted, and its job is re-queued and succeeds in seconds.
"""

import contextlib
import json
import os
import re
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from console.settings import BASE_DIR
from tests.support.images import Platform, push_image, sample_layers

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


def terminate_and_check_everything_ended(process: subprocess.Popen, family: set[int]) -> None:
    """SIGTERM to runconsole, then every process it had (web, worker with its pool, beat) must end."""
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=60)
    deadline = time.monotonic() + 30
    while any(alive(pid) for pid in family) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not [pid for pid in family if alive(pid)], "a worker or beat process outlived runconsole"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def parent_of(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except OSError:
        return None


def celery_children(pid: int) -> dict[str, int]:
    """{"worker": pid, "beat": pid}: the celery main processes runconsole `pid` started itself."""
    found = {}
    for child in descendants(pid):
        if parent_of(child) != pid or not alive(child):
            continue
        words = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
        for role in ("worker", "beat"):
            if b"celery" in b" ".join(words) and role.encode() in words:
                found[role] = child
    return found


def manage(*args, env, check=True):
    return subprocess.run([sys.executable, "manage.py", *args], cwd=BASE_DIR, env=env, check=check,
                          capture_output=True, text=True, timeout=120)


def test_runconsole_serves_and_runs_a_worker_on_embedded_defaults(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "CELERY_BROKER_URL"}}
    env |= {"APPARATE_VAR_DIR": str(tmp_path), "PYTHONUNBUFFERED": "1", "TMPDIR": str(tmp_path)}
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
        assert set(celery_children(process.pid)) == {"worker", "beat"}

        # Nothing of the local state is readable by other users.
        assert mode(tmp_path) == 0o700
        private = [database, tmp_path / "local-secrets.json", *tmp_path.glob("apparate.sqlite3-*"),
                   *tmp_path.glob("celerybeat-schedule*"), *(tmp_path / "broker").rglob("*")]
        assert len(private) > 4
        assert {path.name: mode(path) for path in private} == {
            path.name: (0o700 if path.is_dir() else 0o600) for path in private}
        terminate_and_check_everything_ended(process, family)
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


def api(base: str, path: str, token: str, payload: dict | None = None) -> dict:
    request = urllib.request.Request(
        f"{base}{path}", data=json.dumps(payload).encode() if payload is not None else None,
        headers={"Authorization": f"Token {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def test_a_worker_killed_mid_job_is_restarted_and_its_job_succeeds_with_no_spool_left(
        tmp_path, registry, faulty_proxy):
    """The review's scenario under `make run`: SIGKILL the worker's main process while it converts.
    The filesystem broker loses the message; runconsole restarts the worker, the new run's heartbeat
    shows the old one gone, the orphan check re-queues the job, and the dead attempt's spool is swept."""
    push_image(tmp_path, f"{registry.host}/team/app:1.0", [Platform(layers=sample_layers())])
    proxy = faulty_proxy(registry.url)
    proxy.stall_bodies_over(512 * 1024, times=1)  # the 5 MiB layer: its first attempt hangs halfway
    spool = tmp_path / "spool"
    var = tmp_path / "var"
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "CELERY_BROKER_URL"}}
    # the killed worker's pool leaves its pymp-* directory under the test's own TMPDIR
    env |= {"APPARATE_VAR_DIR": str(var), "APPARATE_JOB_WORKDIR": str(spool), "PYTHONUNBUFFERED": "1",
            "TMPDIR": str(tmp_path)}
    manage("migrate", "--noinput", env=env)
    setup = ("from django.contrib.auth.models import User; from rest_framework.authtoken.models import Token; "
             "from registries.models import Instance; import json; "
             "u = User.objects.create_superuser('root', password='correct-horse-battery-9'); "
             f"i = Instance.objects.create(name='local', url='{proxy.url}', acceleration_enabled=True); "
             "print(json.dumps([Token.objects.create(user=u).key, i.pk]))")
    token, instance_id = json.loads(manage("shell", "-c", setup, env=env).stdout.strip().splitlines()[-1])

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "runconsole.log"
    log = log_path.open("w")
    process = subprocess.Popen(
        [sys.executable, "manage.py", "runconsole", "--port", str(port), "--concurrency", "1"],
        cwd=BASE_DIR, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        wait_for(lambda: login_page(f"{base}/login/"), "the login page", process)
        operation = api(base, "/api/v1/jobs/convert-now/", token, {"instance": instance_id, "image": "team/app:1.0"})
        job_id = wait_for(lambda: api(base, f"/api/v1/operations/{operation['id']}/", token)["job"],
                          "the worker to read the digest", process)
        wait_for(lambda: api(base, f"/api/v1/jobs/{job_id}/", token)["status"] == "running"
                 and proxy.state.stalls_left == 0 and any(spool.rglob("*")), "the job to hang mid-layer", process)
        assert any(re.fullmatch(rf"apparate-job-[0-9a-f]{{12}}-{job_id}-1", path.name) for path in spool.iterdir())

        old_worker = celery_children(process.pid)["worker"]
        os.kill(old_worker, signal.SIGKILL)
        job = wait_for(lambda: (job := api(base, f"/api/v1/jobs/{job_id}/", token))["status"] in
                       {"succeeded", "failed"} and job, "the job to finish after the kill", process, seconds=120)
        assert job["status"] == "succeeded", job
        assert job["attempts"] == 2 and job["accelerated"].endswith("team/app:1.0-apparate")
        assert any("previous run stopped without finishing (worker lost)" in line["message"] for line in job["log"])
        assert list(spool.iterdir()) == []  # no spool of the killed attempt, none of the second

        children = celery_children(process.pid)
        assert children["worker"] != old_worker and alive(children["beat"])
        assert "The worker exited (-9); starting it again in 1s." in log_path.read_text()

        terminate_and_check_everything_ended(process, descendants(process.pid))
    finally:
        leftovers = celery_children(process.pid) if process.poll() is None else {}
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        for pid in leftovers.values():  # each in its own process group
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        log.close()
