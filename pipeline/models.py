"""The pipeline's records: push events, conversion jobs, accelerated images (twins), the Images
page's view of each registry, operations run for a request, and the layer cache.

The tables of push events, jobs and the layer cache keep the names they had when these models
lived in the registries and rules apps.
"""

import hashlib
import json

from django.conf import settings
from django.db import models
from django.urls import reverse
from django.utils import timezone

from pipeline.choices import (
    COLOURS,
    JOB_COLOURS,
    OPERATION_ACTIVE,
    OPERATION_COLOURS,
    TERMINAL,
    TWIN_COLOURS,
    JobStatus,
    JobTrigger,
    OperationKind,
    OperationStatus,
    PushOutcome,
    PushReason,
    PushSource,
    TwinState,
    artifact_type,
)
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


class InRepository:
    """For rows that name a namespace and a repository: `path` is `namespace/repository` (the
    repository alone when it has no namespace), as in image addresses."""

    @property
    def path(self) -> str:
        return f"{self.namespace}/{self.repository}" if self.namespace else self.repository


class PushEvent(InRepository, models.Model):
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
    job = models.ForeignKey(
        "ConversionJob", null=True, blank=True, on_delete=models.SET_NULL, related_name="push_events",
        help_text="The conversion job this push asked for or joined (another tag of the same content).",
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
    def image(self) -> str:
        """The pushed image as `namespace/repository:tag` (or `@digest` when pushed without a tag)."""
        return f"{self.path}:{self.tag}" if self.tag else f"{self.path}@{self.digest}"

    @property
    def outcome_colour(self) -> str:
        return COLOURS.get(self.outcome, "grey")

    @property
    def reason_colour(self) -> str:
        return COLOURS.get(self.reason, "grey")

    @property
    def is_test(self) -> bool:
        """A test delivery sent with *Send test event*: never converted, not a push."""
        return self.source == PushSource.TEST


MAX_LOG_LINES = 300


def options_key(options: dict) -> str:
    """A stable fingerprint of an options snapshot (sha256 of its canonical JSON)."""
    return hashlib.sha256(json.dumps(options, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


OPTION_LABELS = {"format": "format", "chunk_size": "chunk size", "prioritized_files": "prioritized files",
                 "compression": "compression"}


def _option_text(name: str, value) -> str:
    if name == "prioritized_files":
        return ", ".join(f"/{path.lstrip('/')}" for path in value) if value else "(none)"
    if name == "chunk_size" and isinstance(value, int) and value % 1024 == 0:
        return f"{value >> 20} MiB" if value % (1 << 20) == 0 else f"{value >> 10} KiB"
    return str(value)


class ConversionJob(InRepository, models.Model):
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
    options = models.JSONField(default=default_options,
                               help_text="Options snapshot: taken when requested, re-read at each Retry.")
    previous_options = models.JSONField(
        null=True, blank=True,
        help_text="The options of the run before the last Retry, when the rule's options had changed since.",
    )
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
        help_text="Further source tags of the same content; each gets its own <tag><suffix> pointing at the "
                  "result once the job succeeds (the AcceleratedImage rows say which twins exist).",
    )
    warnings = models.JSONField(
        default=list, blank=True, help_text="What the converter warned about, e.g. a prioritized file in no layer.",
    )
    worker = models.CharField(
        max_length=300, blank=True,
        help_text="The worker run (hostname#session) that runs the job; a gone run's job is queued again.",
    )
    awaiting_dispatch = models.BooleanField(
        default=False, editable=False,
        help_text="Made by a webhook delivery on PostgreSQL and not yet handed to a worker (pipeline.dispatch).",
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
        indexes = [
            models.Index(fields=["instance", "namespace", "repository", "source_tag"]),
            models.Index(fields=["id"], condition=models.Q(awaiting_dispatch=True), name="rules_job_awaiting_dispatch"),
        ]

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
    def option_changes(self) -> list[str]:
        """What the last Retry changed in the options ("chunk size 4 MiB → 1 MiB"); [] if nothing."""
        if self.previous_options is None:
            return []
        return [f"{label} {_option_text(name, self.previous_options.get(name))} → "
                f"{_option_text(name, self.options.get(name))}"
                for name, label in OPTION_LABELS.items()
                if self.previous_options.get(name) != self.options.get(name)]

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
    prioritized = models.JSONField(null=True, blank=True,
                                   help_text="Prioritized files the blob places first (null: not recorded).")
    hidden = models.JSONField(null=True, blank=True,
                              help_text="Prioritized files the layer deletes for the layers below (null: not "
                                        "recorded).")
    startup_bytes = models.BigIntegerField(null=True, blank=True,
                                           help_text="Bytes a lazy-pulling node fetches from the blob to start.")
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


class AcceleratedImage(InRepository, models.Model):
    """One accelerated twin: `<source tag><suffix>` in the repository of its source, as a record.

    A row is written when the twin tag really exists in the registry (after the manifest PUT
    succeeded, or when the Images refresh finds it), never when it is only promised. Its state
    says whether it is still there: `deleted` through the console (who and when), or `missing`,
    noticed gone by the reconciler or the Images refresh. Every consumer (Images, deploy, the
    dashboard, metrics, backfill, the reconciler) reads these rows instead of deciding on its own.
    State changes made by people are audited explicitly (with their door); refreshes are machine
    activity and are not.
    """

    audit_log = False

    instance = models.ForeignKey(Instance, on_delete=models.CASCADE, related_name="accelerated_images")
    namespace = models.CharField(max_length=MAX_NAMESPACE_LENGTH, blank=True)
    repository = models.CharField(max_length=MAX_REPOSITORY_LENGTH, help_text="Repository path below the namespace.")
    source_tag = models.CharField(max_length=MAX_TAG_LENGTH)
    source_digest = models.CharField(max_length=MAX_DIGEST_LENGTH, blank=True,
                                     help_text="Blank when a refresh found a twin whose source is unknown.")
    twin_tag = models.CharField(max_length=MAX_TAG_LENGTH)
    twin_digest = models.CharField(max_length=MAX_DIGEST_LENGTH)
    job = models.ForeignKey(ConversionJob, null=True, blank=True, on_delete=models.SET_NULL, related_name="twins",
                            help_text="The conversion job that made it (none for a twin the console did not make).")
    source_size = models.BigIntegerField(null=True, blank=True, help_text="Manifests, config and layers, in bytes.")
    twin_size = models.BigIntegerField(null=True, blank=True, help_text="Manifests, config and layers, in bytes.")
    state = models.CharField(max_length=20, choices=TwinState.choices, default=TwinState.PRESENT, db_index=True)
    state_changed_at = models.DateTimeField(default=timezone.now)
    state_reason = models.TextField(blank=True, help_text="Who deleted it and how, or when it was noticed missing.")
    deleted_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    # What a lazy-pulling node fetches before a container can start, against a full pull (pipeline.startup).
    startup_bytes = models.BigIntegerField(
        null=True, blank=True,
        help_text="Bytes a lazy-pulling node fetches before a container can start: the footer, TOC and prioritized "
                  "region of each distinct layer blob (of the first platform, for an index). Null while not known.")
    full_pull_bytes = models.BigIntegerField(
        null=True, blank=True,
        help_text="Bytes a full pull of the same platform fetches: its distinct layer blobs in full.")
    startup_layers = models.JSONField(
        null=True, blank=True,
        help_text="Per platform, per distinct layer blob: {platform, digest, startup_bytes, size} (platform is "
                  "blank for a single-platform image).")
    startup_error = models.TextField(
        blank=True, help_text="Why the startup figure cannot be known, e.g. a layer that is not eStargz.")
    startup_checked_at = models.DateTimeField(
        null=True, blank=True,
        help_text="When the figure was last read from the registry (twins made before it was recorded).")
    media_type = models.CharField(max_length=MAX_MEDIA_TYPE_LENGTH, blank=True,
                                  help_text="The twin's manifest media type, as last read ('' if not known yet).")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["namespace", "repository", "twin_tag"]
        constraints = [
            models.UniqueConstraint(fields=["instance", "namespace", "repository", "twin_tag"],
                                    name="pipeline_acceleratedimage_one_row_per_twin_tag"),
        ]
        indexes = [models.Index(fields=["instance", "state"]),
                   models.Index(fields=["instance", "namespace", "repository", "source_tag"])]

    def __str__(self):
        return f"{self.path}:{self.twin_tag} ({self.get_state_display().lower()})"

    @property
    def accelerated(self) -> str:
        """`host/namespace/repository:<twin tag>`."""
        return f"{self.instance.host}/{self.path}:{self.twin_tag}"

    @property
    def source(self) -> str:
        """`host/namespace/repository:<source tag>`."""
        return f"{self.instance.host}/{self.path}:{self.source_tag}"

    @property
    def is_present(self) -> bool:
        return self.state == TwinState.PRESENT

    @property
    def state_colour(self) -> str:
        return TWIN_COLOURS.get(self.state, "grey")

    @property
    def artifact_type(self) -> str:
        return artifact_type(self.media_type)


class RegistryTag(InRepository, models.Model):
    """A source tag of an instance's registry as last seen: by the Images refresh, or by a
    conversion that read it. The Images page lists these rows beside the twins, so a view never
    walks the registry. (Twin tags live in AcceleratedImage.)
    """

    audit_log = False

    instance = models.ForeignKey(Instance, on_delete=models.CASCADE, related_name="registry_tags")
    namespace = models.CharField(max_length=MAX_NAMESPACE_LENGTH, blank=True)
    repository = models.CharField(max_length=MAX_REPOSITORY_LENGTH)
    tag = models.CharField(max_length=MAX_TAG_LENGTH)
    digest = models.CharField(max_length=MAX_DIGEST_LENGTH)
    size = models.BigIntegerField(null=True, blank=True, help_text="Manifests, config and layers, in bytes.")
    media_type = models.CharField(max_length=MAX_MEDIA_TYPE_LENGTH, blank=True,
                                  help_text="The manifest media type, as last read ('' if not known yet).")
    error = models.TextField(blank=True, help_text="Why the image could not be read at the last refresh.")
    seen_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["namespace", "repository", "tag"]
        constraints = [
            models.UniqueConstraint(fields=["instance", "namespace", "repository", "tag"],
                                    name="pipeline_registrytag_one_row_per_tag"),
        ]

    def __str__(self):
        return f"{self.path}:{self.tag}@{self.digest[:19]}"

    @property
    def artifact_type(self) -> str:
        return artifact_type(self.media_type)


class Operation(models.Model):
    """Slow work a request asked for, done by a worker: an Images refresh, a backfill (preview or
    request), the digest resolution of *Convert now*. The request answers at once with this row;
    pages poll it (htmx, 286 when done) and the API serves it at /api/v1/operations/{id}/.
    `result` holds what the work found or did, `error` why it failed. Requests are audited when
    made (with their actor and door); the row itself is machine activity.
    """

    audit_log = False

    kind = models.CharField(max_length=30, choices=OperationKind.choices)
    instance = models.ForeignKey(Instance, on_delete=models.CASCADE, related_name="operations")
    rule = models.ForeignKey(Rule, null=True, blank=True, on_delete=models.CASCADE, related_name="operations")
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                     related_name="+")
    params = models.JSONField(default=dict, blank=True, help_text="What was asked, e.g. the image of Convert now.")
    status = models.CharField(max_length=20, choices=OperationStatus.choices, default=OperationStatus.QUEUED)
    result = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    job = models.ForeignKey(ConversionJob, null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
                            help_text="The job Convert now requested or found.")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            # One Images refresh of an instance at a time: requests meanwhile get the running one.
            models.UniqueConstraint(
                fields=["instance"],
                condition=models.Q(kind=OperationKind.REFRESH_IMAGES, status__in=sorted(OPERATION_ACTIVE)),
                name="pipeline_operation_one_active_refresh_per_instance",
            ),
        ]
        indexes = [models.Index(fields=["instance", "kind", "status"])]

    def __str__(self):
        subject = self.params.get("image") or (self.rule.name if self.rule_id else self.instance.name)
        return f"{self.get_kind_display()} #{self.pk}: {subject}"

    def get_absolute_url(self):
        return reverse("pipeline:operation", args=[self.pk])

    @property
    def is_done(self) -> bool:
        return self.status not in OPERATION_ACTIVE

    @property
    def status_colour(self) -> str:
        return OPERATION_COLOURS.get(self.status, "grey")


# Refused deliveries kept per instance (the newest); older ones leave only their counters.
REFUSED_KEPT = 20
MAX_RESULT_LENGTH = 300


class WebhookHealth(models.Model):
    """What an instance's webhook endpoint received: counters, and the last delivery and its result.

    One row per instance, changed by one UPDATE per delivery (accepted or refused), so a flood of
    refused deliveries adds to counters, never rows. Holds no secret and no body: a refusal is kept
    as its status and the console's own short reason. Machine activity: not audited.
    """

    audit_log = False

    instance = models.OneToOneField(Instance, primary_key=True, on_delete=models.CASCADE,
                                    related_name="webhook_health")
    accepted = models.PositiveBigIntegerField(default=0, help_text="Deliveries answered 202.")
    refused = models.PositiveBigIntegerField(default=0, help_text="Deliveries refused, all reasons.")
    refused_unauthorized = models.PositiveBigIntegerField(default=0, help_text="401: missing or wrong secret.")
    refused_malformed = models.PositiveBigIntegerField(default=0, help_text="400: not a payload the intake reads.")
    refused_too_large = models.PositiveBigIntegerField(default=0, help_text="413: body over the size limit.")
    last_received_at = models.DateTimeField(null=True, blank=True)
    last_status = models.PositiveSmallIntegerField(null=True, blank=True, help_text="HTTP status of the answer.")
    last_result = models.CharField(max_length=MAX_RESULT_LENGTH, blank=True)
    last_accepted_at = models.DateTimeField(null=True, blank=True)
    last_refused_at = models.DateTimeField(null=True, blank=True)

    def __str__(self):
        return f"webhook health of {self.instance_id}"


class RefusedDelivery(models.Model):
    """One of the last REFUSED_KEPT deliveries an instance's webhook refused, with the reason given.

    A ring: the n-th refusal of an instance overwrites slot n mod REFUSED_KEPT, so the table never
    holds more than REFUSED_KEPT rows per instance, whatever a flood sends. Machine activity: not audited.
    """

    audit_log = False

    instance = models.ForeignKey(Instance, on_delete=models.CASCADE, related_name="refused_deliveries")
    slot = models.PositiveSmallIntegerField()
    received_at = models.DateTimeField()
    status = models.PositiveSmallIntegerField()
    reason = models.CharField(max_length=MAX_RESULT_LENGTH)
    client = models.CharField(max_length=45, blank=True, help_text="The sender's address, as the console saw it.")

    class Meta:
        ordering = ["-received_at", "-id"]
        constraints = [models.UniqueConstraint(fields=["instance", "slot"], name="pipeline_refuseddelivery_slot")]

    def __str__(self):
        return f"{self.status} at {self.received_at}"
