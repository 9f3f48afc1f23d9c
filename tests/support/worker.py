"""pytest plugin: real Celery worker processes (`celery -A console worker`) on the test database.

`celery_worker_factory(**env)` starts a worker whose DATABASE_URL points at pytest-django's test
database (as it is named when the fixture runs) and whose broker is the test process's own
CELERY_BROKER_URL (a Redis database of the test run, flushed when the first worker of a test
starts), so tasks enqueued by the test or the live server reach it. Use with `transactional_db` or
`live_server`: the worker only sees committed rows. `worker.kill()` sends SIGKILL to the worker's
process group (main process and pool children), like a crashed node; `worker.stop()` ends it.
`celery_worker` is one started worker.
"""

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
import redis
from django.conf import settings

BASE_DIR = Path(__file__).resolve().parents[2]


def database_url() -> str:
    db = settings.DATABASES["default"]
    auth = quote(db.get("USER") or "")
    if db.get("PASSWORD"):
        auth += ":" + quote(db["PASSWORD"])
    host = db.get("HOST") or "127.0.0.1"
    port = f":{db['PORT']}" if db.get("PORT") else ""
    return f"postgres://{auth}{'@' if auth else ''}{host}{port}/{db['NAME']}"


@dataclass
class Worker:
    process: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL the whole worker (main process and pool children) at once."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.kill()


def start_worker(log_path: Path, **env: str) -> Worker:
    environment = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "CELERY_TASK_ALWAYS_EAGER": "",
        "DJANGO_SETTINGS_MODULE": "console.settings",
        "PYTHONUNBUFFERED": "1",
        # Spool and temp files under the test's own directory: a killed worker's leftovers (its spool,
        # the pool's pymp-* directories) never reach the system temp dir.
        "APPARATE_JOB_WORKDIR": str(log_path.parent / "spool"),
        "TMPDIR": str(log_path.parent),
        **env,
    }
    command = [sys.executable, "-m", "celery", "-A", "console", "worker", "--loglevel", "INFO", "--pool", "prefork",
               "--concurrency", env.get("WORKER_CONCURRENCY", "2"), "--without-gossip", "--without-mingle",
               "--hostname", f"test-{os.getpid()}-{time.monotonic_ns()}@%h"]
    log = open(log_path, "ab")  # noqa: SIM115 - closed with the process
    process = subprocess.Popen(command, cwd=BASE_DIR, env=environment, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    worker = Worker(process, log_path)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"celery worker exited:\n{worker.log()}")
        if " ready." in worker.log():
            return worker
        time.sleep(0.2)
    worker.kill()
    raise RuntimeError(f"celery worker did not start:\n{worker.log()}")


@pytest.fixture
def celery_worker_factory(transactional_db, tmp_path):
    if not settings.CELERY_BROKER_URL.startswith("redis://"):
        pytest.fail("Real-worker tests need CELERY_BROKER_URL=redis://… (a Redis database of this test run).")
    redis.Redis.from_url(settings.CELERY_BROKER_URL).flushdb()  # no stale messages from earlier tests
    started: list[Worker] = []

    def factory(**env: str) -> Worker:
        worker = start_worker(tmp_path / f"worker-{len(started)}.log", **env)
        started.append(worker)
        return worker

    yield factory
    for worker in started:
        worker.stop()


@pytest.fixture
def celery_worker(celery_worker_factory) -> Worker:
    return celery_worker_factory()
