"""Handing the jobs that webhook deliveries record to workers, through the database (PostgreSQL).

A delivery that requests conversions does not talk to the broker. On PostgreSQL the one statement
that INSERTs its jobs marks them `awaiting_dispatch` and signals NOTIFY on CHANNEL, which the
database delivers when, and only if, the delivery commits. The main process of each worker runs a
dispatcher thread that LISTENs on CHANNEL. Woken, or every APPARATE_DISPATCH_POLL seconds anyway,
it claims the awaiting jobs (FOR UPDATE SKIP LOCKED: two workers never claim the same job) and
sends their conversion messages before its claim commits. So:
- the intake costs a webhook no broker round trip, and keeps answering 202 while the broker is down;
- a committed job is never lost between its commit and its message: a claim whose messages could
  not all be sent rolls back, and the next round sends them again;
- a job may be sent twice (a crash after sending, before the claim commits), which is harmless: the
  conversion task is guarded.

Other databases (SQLite under `make run`) have no NOTIFY: there the intake sends its jobs after
commit, as every other maker of jobs does (pipeline.actions.enqueue_jobs).
"""

import logging
import select
import threading

from django.conf import settings
from django.db import connection, transaction

from pipeline.models import ConversionJob

logger = logging.getLogger(__name__)

CHANNEL = "apparate_jobs"
# Jobs claimed per transaction: a claim holds its rows until their messages are sent.
CLAIM_BATCH = 500


def by_database() -> bool:
    """Whether the jobs a webhook delivery makes are dispatched through the database (PostgreSQL)."""
    return connection.vendor == "postgresql"


def leave_to_dispatchers(job_ids: list[int]) -> None:
    """Mark jobs whose message could not be sent as awaiting dispatch: the dispatchers' next round
    (at the latest APPARATE_DISPATCH_POLL seconds on) sends them once the broker answers again."""
    ConversionJob.objects.filter(pk__in=job_ids).update(awaiting_dispatch=True)


def dispatch_awaiting_jobs(limit: int = CLAIM_BATCH) -> list[int]:
    """Claim up to `limit` awaiting jobs, oldest first, and send each its conversion message; the
    claim commits only when every message went out. Returns the ids sent."""
    from pipeline.tasks import convert_image_task

    table = ConversionJob._meta.db_table
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET awaiting_dispatch = false WHERE id IN (SELECT id FROM {table} "  # noqa: S608
            "WHERE awaiting_dispatch ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED) RETURNING id", [limit])
        job_ids = sorted(job_id for (job_id,) in cursor.fetchall())
        for job_id in job_ids:
            convert_image_task.delay(job_id)
    if job_ids:
        logger.info("action=dispatch jobs=%s", len(job_ids))
    return job_ids


def dispatch_all_awaiting() -> int:
    """Dispatch awaiting jobs until none is left (batch after batch); returns how many were sent."""
    sent = 0
    while True:
        batch = dispatch_awaiting_jobs()
        sent += len(batch)
        if len(batch) < CLAIM_BATCH:
            return sent


def listen_and_dispatch(stop: threading.Event, poll: float) -> None:
    """Dispatch at once and whenever CHANNEL is notified, and every `poll` seconds in any case,
    until `stop` is set; on this thread's own database connection, closed on the way out."""
    try:
        with connection.cursor() as cursor:
            cursor.execute(f"LISTEN {CHANNEL}")
        listening = connection.connection
        while not stop.is_set():
            listening.notifies.clear()  # what arrives from here on wakes the next round
            dispatch_all_awaiting()
            if listening.notifies:  # read while the claim ran: go again without waiting
                continue
            ready, _, _ = select.select([listening], [], [], poll)
            if ready:
                listening.poll()
    finally:
        connection.close()


def run_dispatcher(stop: threading.Event, poll: float) -> None:
    """listen_and_dispatch, started again after database or broker trouble (after `poll` seconds)."""
    while not stop.is_set():
        try:
            listen_and_dispatch(stop, poll)
        except Exception:  # the database or the broker went away: the next round reconnects
            logger.warning("Job dispatcher interrupted; retrying in %ss", poll, exc_info=True)
            stop.wait(poll)


def start_dispatcher_thread() -> threading.Event | None:
    """Start the dispatcher in a daemon thread of this (worker main) process, on PostgreSQL; returns
    the event that stops it, or None on other databases."""
    if not by_database():
        return None
    stop = threading.Event()
    threading.Thread(target=run_dispatcher, args=(stop, settings.APPARATE_DISPATCH_POLL), name="apparate-dispatcher",
                     daemon=True).start()
    return stop
