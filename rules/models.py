"""Acceleration rules: which pushed images of an instance get an accelerated twin, and how."""

import contextlib
import hashlib
import json

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Max
from django.urls import reverse

from rules.choices import (
    DEFAULT_CHUNK_SIZE,
    JOB_COLOURS,
    MAX_CHUNK_SIZE,
    MIN_CHUNK_SIZE,
    TERMINAL,
    Compression,
    Format,
    JobStatus,
    JobTrigger,
)
from rules.validators import (
    MAX_NAMESPACE_LENGTH,
    MAX_PATTERN_LENGTH,
    normalize_prioritized_files,
    validate_namespace,
    validate_pattern,
    validate_prioritized_files,
)

ACCELERATION_OFF_MESSAGE = (
    "Acceleration is off for instance '{instance}'. Turn it on (on the instance page) before adding rules."
)


class Rule(models.Model):
    """One acceleration rule of a registry instance.

    An image `host/namespace/repository:tag` matches when the host is the instance's, the namespace
    is equal, and the repository and tag patterns (RE2, whole-name match; blank = all) match. Rules
    are evaluated in `position` order; the first enabled matching rule decides the conversion
    options. Rules can be added only while the instance's acceleration is on; turning it off keeps
    them (shown as inactive).
    """

    instance = models.ForeignKey("registries.Instance", on_delete=models.CASCADE, related_name="rules")
    name = models.CharField(max_length=100)
    description = models.TextField(blank=True)
    namespace = models.CharField(
        max_length=MAX_NAMESPACE_LENGTH, validators=[validate_namespace],
        help_text="Exactly one namespace (project), e.g. 'team-a'. No patterns.",
    )
    repository_pattern = models.CharField(
        max_length=MAX_PATTERN_LENGTH, blank=True, validators=[validate_pattern],
        help_text="RE2 pattern for the repository below the namespace, matched in full "
        "('app' matches app, not app2). Blank matches every repository.",
    )
    tag_pattern = models.CharField(
        max_length=MAX_PATTERN_LENGTH, blank=True, validators=[validate_pattern],
        help_text=r"RE2 pattern for the tag, matched in full, e.g. '\d+\.\d+\.\d+' or 'release-.*'. "
        "Blank matches every tag.",
    )
    enabled = models.BooleanField(default=True)
    position = models.PositiveIntegerField(default=0, help_text="Evaluation order; the first matching rule wins.")
    format = models.CharField(max_length=20, choices=Format.choices, default=Format.ESTARGZ)
    prioritized_files = models.JSONField(
        default=list, blank=True, validators=[validate_prioritized_files],
        help_text="Files the workload reads first at start-up, one per line (e.g. /usr/bin/python3). "
        "They are placed at the front of each layer and prefetched by nodes.",
    )
    chunk_size = models.PositiveIntegerField(
        default=DEFAULT_CHUNK_SIZE,
        validators=[MinValueValidator(MIN_CHUNK_SIZE), MaxValueValidator(MAX_CHUNK_SIZE)],
        help_text="Bytes of uncompressed file data per chunk (64 KiB to 64 MiB; default 4 MiB = 4194304). "
        "Smaller chunks fetch less per read, bigger ones mean fewer requests.",
    )
    compression = models.CharField(
        max_length=10, choices=Compression.choices, default=Compression.BEST,
        help_text="Best: gzip level 9 (zlib-ng), the smallest blobs and the slowest conversion. "
        "Fast: zlib-ng's fast level, converts about twice as fast for blobs a few % bigger.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["instance__name", "position", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["instance", "name"], name="rules_rule_unique_name_per_instance",
                violation_error_message="A rule with this name already exists for this instance.",
            ),
        ]

    def __str__(self):
        return self.name

    def save(self, *args, **kwargs):
        if self._state.adding and not self.position:
            last = Rule.objects.filter(instance_id=self.instance_id).aggregate(last=Max("position"))["last"]
            self.position = (last or 0) + 1
        super().save(*args, **kwargs)

    def get_absolute_url(self):
        return reverse("rules:detail", args=[self.pk])

    @property
    def is_active(self) -> bool:
        """Enabled, and its instance has acceleration on."""
        return self.enabled and self.instance.acceleration_enabled

    def clean(self):
        """Rules that span fields: acceleration on for new rules, unique names, normalized paths."""
        errors = {}
        if self.instance_id is not None:
            if self._state.adding and not self.instance.acceleration_enabled:
                errors["instance"] = ACCELERATION_OFF_MESSAGE.format(instance=self.instance)
            if self.name and (
                Rule.objects.filter(instance_id=self.instance_id, name=self.name).exclude(pk=self.pk).exists()
            ):
                errors["name"] = f"A rule named '{self.name}' already exists for instance '{self.instance}'."
        with contextlib.suppress(ValidationError):  # reported at the field by its validator
            self.prioritized_files = normalize_prioritized_files(self.prioritized_files)
        if errors:
            raise ValidationError(errors)


MAX_LOG_LINES = 300


def default_options() -> dict:
    """Conversion options when no rule applies ("Convert now" on any tag): the rule defaults."""
    return {"format": Format.ESTARGZ.value, "chunk_size": DEFAULT_CHUNK_SIZE, "prioritized_files": [],
            "compression": Compression.BEST.value}


def options_of(rule: "Rule | None") -> dict:
    """The options snapshot a job stores: what the rule said when the job was requested."""
    if rule is None:
        return default_options()
    return {"format": rule.format, "chunk_size": rule.chunk_size,
            "prioritized_files": list(rule.prioritized_files or []), "compression": rule.compression}


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

    instance = models.ForeignKey("registries.Instance", on_delete=models.CASCADE, related_name="jobs")
    namespace = models.CharField(max_length=255)
    repository = models.CharField(max_length=1024, help_text="Repository path below the namespace.")
    source_tag = models.CharField(max_length=128)
    source_digest = models.CharField(max_length=135)
    rule = models.ForeignKey(Rule, null=True, blank=True, on_delete=models.SET_NULL, related_name="jobs")
    event = models.ForeignKey(
        "registries.PushEvent", null=True, blank=True, on_delete=models.SET_NULL, related_name="jobs",
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
    result_tag = models.CharField(max_length=128, blank=True)
    result_digest = models.CharField(max_length=135, blank=True)
    result_size = models.BigIntegerField(null=True, blank=True, help_text="Total size of the accelerated image.")

    class Meta:
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
        return reverse("rules:job-detail", args=[self.pk])

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

    instance = models.ForeignKey("registries.Instance", on_delete=models.CASCADE, related_name="layer_cache")
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
        verbose_name_plural = "layer cache entries"
        ordering = ["-used_at"]
        constraints = [
            models.UniqueConstraint(fields=["instance", "source_digest", "cache_key"],
                                    name="rules_layercacheentry_unique_key"),
        ]

    def __str__(self):
        return f"{self.source_digest[:19]} → {self.digest[:19]}"
