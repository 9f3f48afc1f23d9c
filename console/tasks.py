"""Celery tasks of the console shell: the worker heartbeat."""

import logging

from celery import shared_task

from console.actions import record_heartbeat

logger = logging.getLogger(__name__)


@shared_task(ignore_result=True)
def heartbeat() -> None:
    """Record that a worker is alive (runs every APPARATE_HEARTBEAT_INTERVAL seconds via beat)."""
    hostname = heartbeat.request.hostname or "unknown worker"
    record_heartbeat(hostname)
    logger.info("Heartbeat from %s", hostname)
