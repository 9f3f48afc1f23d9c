"""The pipeline's records: push events, conversion jobs and the layer cache.

The tables keep the names they had when these models lived in the registries and rules apps.
"""

import hashlib
import json

from django.conf import settings
from django.db import models
from django.urls import reverse

from pipeline.choices import COLOURS, JOB_COLOURS, TERMINAL, JobStatus, JobTrigger, PushOutcome, PushReason, PushSource
from registries.models import Instance
from rules.choices import Format
from rules.models import Rule, default_options

# Longest values a webhook may carry; longer ones are refused as malformed before anything is stored.
MAX_NAMESPACE_LENGTH = 255

MAX_REPOSITORY_LENGTH = 1024

MAX_TAG_LENGTH = 128

MAX_DIGEST_LENGTH = 135  # sha512: + 128 hex digits

MAX_DELIVERY_ID_LENGTH = 200

MAX_MEDIA_TYPE_LENGTH = 255

MAX_ACTOR_LENGTH = 255


class PushEvent(models.Model):
    """One manifest push reported by a registry webhook, with what the console decided and why.

    Blob pushes, pulls and deletes are not stored. The reason is kept both as a code (for
    filtering) and as the sentence shown to people, written when the decision was made so it
    still names the rule and criterion that applied then. Machine activity: not audited.
    """

    audit_log = False

    instance = models.ForeignKey(Instance, on_delete=models.CASCADE, related_name="push_events")
    received_at = models.DateTimeField(auto_now_add=True, db_index=True)
    source = models.CharField(max_length=20, choices=PushSource.choices)
    delivery_id = models.CharField(
        max_length=MAX_DELIVERY_ID_LENGTH, help_text="The registry's event id (derived from the payload for Harbor)."
    )
    actor = models.CharField(max_length=MAX_ACTOR_LENGTH, blank=True, help_text="Who pushed, as the registry says.")
    namespace = models.CharField(max_length=MAX_NAMESPACE_LENGTH, blank=True)
    repository = models.CharField(
        max_length=MAX_REPOSITORY_LENGTH, help_text="Repository path below the namespace (may contain slashes)."
    )
    tag = models.CharField(max_length=MAX_TAG_LENGTH, blank=True)
    digest = models.CharField(max_length=MAX_DIGEST_LENGTH, blank=True)
    media_type = models.CharField(max_length=MAX_MEDIA_TYPE_LENGTH, blank=True)
    outcome = models.CharField(max_length=30, choices=PushOutcome.choices)
    reason = models.CharField(max_length=30, choices=PushReason.choices)
    reason_detail = models.TextField("why", help_text="The decision explained, as shown on the Events page.")
    matched_rule = models.ForeignKey(
        Rule, null=True, blank=True, on_delete=models.SET_NULL, related_name="push_events"
    )

    class Meta:
        db_table = "registries_pushevent"  # kept from the app it moved from
        ordering = ["-received_at", "-id"]
        indexes = [models.Index(fields=["instance", "delivery_id"])]
        constraints = [
            # At most one conversion request per image content, whatever the delivery races.
            models.UniqueConstraint(
                fields=["instance", "namespace", "repository", "digest"],
                condition=models.Q(outcome=PushOutcome.CONVERSION_REQUESTED),
                name="registries_pushevent_one_conversion_per_digest",
            ),
        ]

    def __str__(self):
        return f"{self.image} ({self.get_outcome_display()})"

    @property
    def path(self) -> str:
        return f"{self.namespace}/{self.repository}" if self.namespace else self.repository

    @property
    def image(self) -> str:
        """The pushed image as `namespace/repository:tag` (or `@digest` when pushed without a tag)."""
        return f"{self.path}:{self.tag}" if self.tag else f"{self.path}@{self.digest}"

    @property
    def outcome_colour(self) -> str:
        return COLOURS.get(self.outcome, "grey")

    @property
    def reason_colour(self) -> str:
        return COLOURS.get(self.reason, "grey")


MAX_LOG_LINES = 300


def options_key(options: dict) -> str:
    """A stable fingerprint of an options snapshot (sha256 of its canonical JSON)."""
    return hashlib.sha256(json.dumps(options, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class ConversionJob(models.Model):
    """One conversion of one source image (by manifest digest) into its accelerated twin.

    Unique per (instance, repository, source digest, format, options): duplicate deliveries,
    re-pushes of the same content and further matching rules all land on the same row. The row is
    the truth for progress (per layer), the log, attempts, the last error and the result; Celery
    messages only carry its id. Machine activity: not audited.
    """

    audit_log = False

    instance = models.ForeignKey(Instance, on_delete=models.CASCADE, related_name="jobs")
    namespace = models.CharField(max_length=255)
    repository = models.CharField(max_length=1024, help_text="Repository path below the namespace.")
    source_tag = models.CharField(max_length=128)
    source_digest = models.CharField(max_length=135)
    rule = models.ForeignKey(Rule, null=True, blank=True, on_delete=models.SET_NULL, related_name="jobs")
    event = models.ForeignKey(
        PushEvent, null=True, blank=True, on_delete=models.SET_NULL, related_name="jobs",
    )
    trigger = models.CharField(max_length=20, choices=JobTrigger.choices, default=JobTrigger.WEBHOOK)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
    )
    format = models.CharField(max_length=20, choices=Format.choices, default=Format.ESTARGZ)
    options = models.JSONField(default=default_options, help_text="Options snapshot taken when requested.")
    options_key = models.CharField(max_length=64, editable=False)
    status = models.CharField(max_length=20, choices=JobStatus.choices, default=JobStatus.QUEUED, db_index=True)
    attempts = models.PositiveIntegerField(default=0)
    retries = models.PositiveIntegerField(default=0, help_text="Automatic retries after transient failures.")
    last_error = models.TextField(blank=True)
    reason = models.TextField(blank=True, help_text="Why the job failed or was skipped, in words a person can act on.")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    bytes_in = models.BigIntegerField(default=0, help_text="Compressed source bytes read.")
    bytes_out = models.BigIntegerField(default=0, help_text="eStargz bytes written (or reused).")
    bytes_total = models.BigIntegerField(default=0, help_text="Compressed size of the source layers seen so far.")
    layers = models.JSONField(default=list, blank=True, help_text="Per-layer progress, in image order.")
    log = models.JSONField(default=list, blank=True, help_text=f"The last {MAX_LOG_LINES} log lines.")
    twin_tags = models.JSONField(
        default=list, blank=True,
        help_text="Further source tags of the same content; each gets its own <tag><suffix> pointing at the result.",
    )
    worker = models.CharField(
        max_length=300, blank=True,
        help_text="The worker run (hostname#session) that runs the job; a gone run's job is queued again.",
    )
    result_tag = models.CharField(max_length=128, blank=True)
    result_digest = models.CharField(max_length=135, blank=True)
    result_size = models.BigIntegerField(null=True, blank=True, help_text="Total size of the accelerated image.")

    class Meta:
        db_table = "rules_conversionjob"  # kept from the app it moved from
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["instance", "namespace", "repository", "source_digest", "format", "options_key"],
                name="rules_conversionjob_unique_conversion",
                violation_error_message="This image is already converted (or queued) with these options.",
            ),
        ]
        indexes = [models.Index(fields=["instance", "namespace", "repository", "source_tag"])]

    def __str__(self):
        return f"job #{self.pk} {self.source}"

    def save(self, *args, **kwargs):
        self.options_key = options_key(self.options)
        if kwargs.get("update_fields") is not None and "options" in kwargs["update_fields"]:
            kwargs["update_fields"] = {*kwargs["update_fields"], "options_key"}
        super().save(*args, **kwargs)

    def get_absolute_url(self):
        return reverse("pipeline:job-detail", args=[self.pk])

    @property
    def path(self) -> str:
        return f"{self.namespace}/{self.repository}" if self.namespace else self.repository

    @property
    def source(self) -> str:
        """`host/namespace/repository:tag` of the source image."""
        return f"{self.instance.host}/{self.path}:{self.source_tag}"

    @property
    def accelerated(self) -> str:
        return f"{self.instance.host}/{self.path}:{self.result_tag}" if self.result_tag else ""

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def status_colour(self) -> str:
        return JOB_COLOURS.get(self.status, "grey")

    @property
    def percent(self) -> int:
        """Overall progress, 0-100, from bytes read over the layers' compressed sizes."""
        if self.status == JobStatus.SUCCEEDED:
            return 100
        if not self.layers:
            return 0
        done = sum(1 for layer in self.layers if layer.get("phase") in ("done", "reused"))
        total = sum(layer.get("total") or 0 for layer in self.layers)
        if total <= 0:
            return int(99 * done / len(self.layers))
        read = sum(min(layer.get("bytes_in") or 0, layer.get("total") or 0) for layer in self.layers)
        return min(99, int(100 * read / total))

    @property
    def duration(self):
        if self.started_at and self.finished_at:
            return self.finished_at - self.started_at
        return None


class LayerCacheEntry(models.Model):
    """A converted layer, remembered so that it is never converted twice within an instance.

    Keyed by (instance, source layer digest, cache key); the cache key names the options and the
    converter and compressor versions, so any change that alters the output bytes misses the cache.
    `repository` is where the blob was uploaded: other repositories of the instance mount it from there.
    """

    audit_log = False

    instance = models.ForeignKey(Instance, on_delete=models.CASCADE, related_name="layer_cache")
    source_digest = models.CharField(max_length=135)
    cache_key = models.CharField(max_length=512)
    converter_version = models.CharField(max_length=40)
    registry = models.CharField(max_length=255, help_text="host[:port] the blob was uploaded to.")
    repository = models.CharField(max_length=1024, help_text="namespace/repository holding the blob.")
    digest = models.CharField(max_length=135)
    size = models.BigIntegerField()
    diff_id = models.CharField(max_length=135)
    toc_digest = models.CharField(max_length=135)
    uncompressed_size = models.BigIntegerField()
    hits = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    used_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "rules_layercacheentry"  # kept from the app it moved from
        verbose_name_plural = "layer cache entries"
        ordering = ["-used_at"]
        constraints = [
            models.UniqueConstraint(fields=["instance", "source_digest", "cache_key"],
                                    name="rules_layercacheentry_unique_key"),
        ]

    def __str__(self):
        return f"{self.source_digest[:19]} → {self.digest[:19]}"
