"""Acceleration rules: which pushed images of an instance get an accelerated twin, and how."""

import contextlib

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Max
from django.urls import reverse

from rules.choices import DEFAULT_CHUNK_SIZE, MAX_CHUNK_SIZE, MIN_CHUNK_SIZE, Compression, Format
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


