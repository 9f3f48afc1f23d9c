"""Domain verbs of the shared layer: worker heartbeats, which worker runs are alive, and whether
background work is being processed.

A worker process run is identified as `hostname#session`: the Celery hostname and a random session
chosen when the worker starts (before its pool forks, so pool processes share it). Each worker
reports in every APPARATE_HEARTBEAT_INTERVAL seconds from a thread of its main process; a run is
alive while its hostname's row holds its session and is younger than three intervals.
"""

import logging
import secrets
import threading
import time
from datetime import timedelta

from django.conf import settings
from django.db import connection
from django.utils import timezone

from core.models import WorkerHeartbeat

logger = logging.getLogger(__name__)
MISSED_HEARTBEATS = 3
_this_worker = {"hostname": "", "session": ""}


def record_heartbeat(hostname: str, session: str = "") -> WorkerHeartbeat:
    """Store "worker `hostname` is alive now" (one row per worker host, updated in place)."""
    beat, _ = WorkerHeartbeat.objects.update_or_create(
        hostname=hostname[:255], defaults={"seen_at": timezone.now(), "session": session or this_session()})
    return beat


def this_session() -> str:
    return _this_worker["session"]


def start_worker_session(hostname: str) -> str:
    """Called once in a worker's main process when it starts: its identity for this run."""
    _this_worker.update(hostname=hostname, session=secrets.token_hex(8))
    return current_worker()


def current_worker() -> str:
    """`hostname#session` of the worker this process belongs to, "" outside a worker."""
    return f"{_this_worker['hostname']}#{_this_worker['session']}" if _this_worker["hostname"] else ""


def _limit() -> timedelta:
    return timedelta(seconds=MISSED_HEARTBEATS * settings.APPARATE_HEARTBEAT_INTERVAL)


def live_workers(now=None) -> set[str]:
    """Identities (`hostname#session`) of the worker runs that reported within three intervals."""
    since = (now or timezone.now()) - _limit()
    rows = WorkerHeartbeat.objects.filter(seen_at__gte=since).exclude(session="").values_list("hostname", "session")
    return {f"{hostname}#{session}" for hostname, session in rows}


def start_heartbeat_thread() -> threading.Thread:
    """Report this worker run in every APPARATE_HEARTBEAT_INTERVAL seconds, from a daemon thread of the
    worker's main process: it stops only when the worker does, whatever its pool is busy with."""

    def beat() -> None:
        while True:
            time.sleep(settings.APPARATE_HEARTBEAT_INTERVAL)
            try:
                record_heartbeat(_this_worker["hostname"])
            except Exception:  # a database hiccup must not end the thread: the next beat retries
                logger.warning("Heartbeat of %s could not be recorded", _this_worker["hostname"], exc_info=True)
            finally:
                connection.close()  # this thread's own connection; never kept open between beats

    thread = threading.Thread(target=beat, name="apparate-heartbeat", daemon=True)
    thread.start()
    return thread


def worker_status(now=None) -> dict:
    """{"last_seen": datetime | None, "alive": bool}: alive if a heartbeat came within 3 intervals."""
    latest = WorkerHeartbeat.objects.order_by("-seen_at").first()
    now = now or timezone.now()
    return {
        "last_seen": latest.seen_at if latest else None,
        "hostname": latest.hostname if latest else None,
        "alive": latest is not None and now - latest.seen_at <= _limit(),
    }
