"""Choices of the pipeline: where a push came from, its outcome and reason, and the life of a job.

Every push event is final when stored (the conversion job, not the event, carries progress); a
job's TERMINAL statuses are listed explicitly. Colour names map to the CSS classes `badge-<colour>`.
"""

from django.db import models


class PushSource(models.TextChoices):
    DISTRIBUTION = "distribution", "CNCF Distribution"
    HARBOR = "harbor", "Harbor"
    TEST = "test", "Test event (Send test event)"


class PushOutcome(models.TextChoices):
    CONVERSION_REQUESTED = "conversion_requested", "Conversion requested"
    SKIPPED = "skipped", "Skipped"


class PushReason(models.TextChoices):
    RULE_MATCHED = "rule_matched", "A rule matched"
    ACCELERATION_OFF = "acceleration_off", "Acceleration is off"
    NO_RULE_MATCHED = "no_rule_matched", "No enabled rule matched"
    ACCELERATED_TAG = "accelerated_tag", "Tag is itself accelerated"
    NOT_IMAGE_MANIFEST = "not_image_manifest", "Not an image manifest"
    ALREADY_SEEN = "already_seen", "Already seen"
    NO_TAG = "no_tag", "Pushed by digest, without a tag"
    INVALID_REFERENCE = "invalid_reference", "Not a valid image address"
    TEST_EVENT = "test_event", "Test event, never converted"

COLOURS = {
    PushOutcome.CONVERSION_REQUESTED: "green",
    PushOutcome.SKIPPED: "grey",
    PushReason.RULE_MATCHED: "green",
    PushReason.ACCELERATION_OFF: "amber",
    PushReason.NO_RULE_MATCHED: "amber",
    PushReason.ACCELERATED_TAG: "grey",
    PushReason.NOT_IMAGE_MANIFEST: "grey",
    PushReason.ALREADY_SEEN: "grey",
    PushReason.NO_TAG: "grey",
    PushReason.INVALID_REFERENCE: "red",
    PushReason.TEST_EVENT: "blue",
}


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


class TwinState(models.TextChoices):
    """Whether an accelerated twin is in the registry, as far as the console knows."""

    PRESENT = "present", "Present"
    DELETED = "deleted", "Deleted through the console"
    MISSING = "missing", "Missing from the registry"

TWIN_COLOURS = {
    TwinState.PRESENT: "green",
    TwinState.DELETED: "grey",
    TwinState.MISSING: "amber",
}


class StartupState(models.TextChoices):
    """Whether the console knows what a node fetches to start a twin (pipeline.startup)."""

    KNOWN = "known", "Known"
    PENDING = "pending", "Not measured yet"
    UNKNOWN = "unknown", "Unknown"


class OperationKind(models.TextChoices):
    """Slow work a request asks for and a worker does (the request answers at once)."""

    REFRESH_IMAGES = "refresh_images", "Images refresh"
    BACKFILL_PREVIEW = "backfill_preview", "Convert existing images: preview"
    BACKFILL = "backfill", "Convert existing images"
    CONVERT_NOW = "convert_now", "Convert now"


class OperationStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Done"
    FAILED = "failed", "Failed"

OPERATION_COLOURS = {
    OperationStatus.QUEUED: "grey",
    OperationStatus.RUNNING: "blue",
    OperationStatus.SUCCEEDED: "green",
    OperationStatus.FAILED: "red",
}

OPERATION_ACTIVE = frozenset({OperationStatus.QUEUED, OperationStatus.RUNNING})


# What kind of artifact a manifest is, by its media type, as registries and clients name it.
ARTIFACT_TYPES = {
    "application/vnd.docker.distribution.manifest.v2+json": "Docker v2 schema 2",
    "application/vnd.docker.distribution.manifest.list.v2+json": "Docker manifest list",
    "application/vnd.oci.image.manifest.v1+json": "OCI manifest",
    "application/vnd.oci.image.index.v1+json": "OCI index",
}


def artifact_type(media_type: str) -> str:
    """The artifact type of a manifest media type ("Docker v2 schema 2", "OCI index"...): the media
    type itself when it is none of those, "" when it is not known."""
    return ARTIFACT_TYPES.get(media_type, media_type)
