"""Domain verbs of the shared layer: worker heartbeats and whether background work is being processed."""

from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from core.models import WorkerHeartbeat


def record_heartbeat(hostname: str) -> WorkerHeartbeat:
    """Store "worker `hostname` is alive now" (one row per worker host, updated in place)."""
    beat, _ = WorkerHeartbeat.objects.update_or_create(hostname=hostname[:255], defaults={"seen_at": timezone.now()})
    return beat


def worker_status(now=None) -> dict:
    """{"last_seen": datetime | None, "alive": bool}: alive if a heartbeat came within 3 intervals."""
    latest = WorkerHeartbeat.objects.order_by("-seen_at").first()
    now = now or timezone.now()
    limit = timedelta(seconds=3 * settings.APPARATE_HEARTBEAT_INTERVAL)
    return {
        "last_seen": latest.seen_at if latest else None,
        "hostname": latest.hostname if latest else None,
        "alive": latest is not None and now - latest.seen_at <= limit,
    }
