"""Celery tasks of the shared layer: the worker heartbeat."""

import logging

from celery import shared_task

from core.actions import record_heartbeat

logger = logging.getLogger(__name__)


@shared_task(name="console.tasks.heartbeat", ignore_result=True)  # the name queued messages and beat use
def heartbeat() -> None:
    """Record that a worker is alive (runs every APPARATE_HEARTBEAT_INTERVAL seconds via beat)."""
    hostname = heartbeat.request.hostname or "unknown worker"
    record_heartbeat(hostname)
    logger.info("Heartbeat from %s", hostname)
