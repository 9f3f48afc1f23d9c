"""Choices of the rules app: accelerated formats and compression profiles."""

from django.db import models


class Format(models.TextChoices):
    ESTARGZ = "estargz", "eStargz"


class Compression(models.TextChoices):
    BEST = "best", "Best (smallest blobs)"
    FAST = "fast", "Fast (quicker conversion, bigger blobs)"


KIB = 1 << 10
MIB = 1 << 20
DEFAULT_CHUNK_SIZE = 4 * MIB
MIN_CHUNK_SIZE = 64 * KIB
MAX_CHUNK_SIZE = 64 * MIB


class JobStatus(models.TextChoices):
    """Life of a conversion job. Queued and running jobs are live; the rest are TERMINAL."""

    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    SKIPPED = "skipped", "Skipped"
    CANCELLED = "cancelled", "Cancelled"


JOB_COLOURS = {
    JobStatus.QUEUED: "grey",
    JobStatus.RUNNING: "blue",
    JobStatus.SUCCEEDED: "green",
    JobStatus.FAILED: "red",
    JobStatus.SKIPPED: "amber",
    JobStatus.CANCELLED: "grey",
}
TERMINAL = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.SKIPPED, JobStatus.CANCELLED})
ACTIVE = frozenset({JobStatus.QUEUED, JobStatus.RUNNING})


class JobTrigger(models.TextChoices):
    """What asked for the conversion."""

    WEBHOOK = "webhook", "Push webhook"
    RECONCILER = "reconciler", "Reconciler"
    BACKFILL = "backfill", "Convert existing images"
    MANUAL = "manual", "Convert now"
