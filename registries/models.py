"""Registry instances: where images live, how to reach them, and whether to accelerate."""

import secrets
from urllib.parse import urlsplit

from django.conf import settings
from django.db import models
from django.urls import reverse

from console.fields import EncryptedTextField
from converter.registry import RegistryClient
from registries.choices import COLOURS, PushOutcome, PushReason, PushSource
from registries.validators import validate_ca_bundle, validate_registry_url

# Longest values a webhook may carry; longer ones are refused as malformed before anything is stored.
MAX_NAMESPACE_LENGTH = 255
MAX_REPOSITORY_LENGTH = 1024
MAX_TAG_LENGTH = 128
MAX_DIGEST_LENGTH = 135  # sha512: + 128 hex digits
MAX_DELIVERY_ID_LENGTH = 200
MAX_MEDIA_TYPE_LENGTH = 255
MAX_ACTOR_LENGTH = 255


def new_webhook_secret() -> str:
    return secrets.token_urlsafe(32)


class Instance(models.Model):
    """An OCI registry the console converts images in.

    Credentials and the webhook secret are encrypted at rest and write-only in forms and the API.
    Acceleration is off until an operator confirms that accelerated twins add storage.
    """

    name = models.CharField(max_length=100, unique=True)
    url = models.CharField(
        "registry URL", max_length=255, validators=[validate_registry_url],
        help_text="Base URL of the registry, e.g. https://registry.example.com or http://10.0.0.5:5000.",
    )
    description = models.TextField(blank=True)
    username = models.CharField(max_length=255, blank=True, help_text="Leave blank for anonymous access.")
    password = EncryptedTextField("password or token", blank=True)
    verify_tls = models.BooleanField("verify TLS certificates", default=True)
    ca_bundle = models.TextField(
        "custom CA bundle", blank=True, validators=[validate_ca_bundle],
        help_text="PEM certificates to trust for this registry, in addition to the system store.",
    )
    acceleration_enabled = models.BooleanField(default=False)
    acceleration_changed_at = models.DateTimeField(null=True, blank=True)
    webhook_secret = EncryptedTextField(default=new_webhook_secret)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("registries:detail", args=[self.pk])

    @property
    def host(self) -> str:
        """host[:port] as it appears in image addresses (`host/namespace/repo:tag`)."""
        return urlsplit(self.url).netloc.lower()

    @property
    def base_url(self) -> str:
        return self.url.rstrip("/")

    @property
    def is_anonymous(self) -> bool:
        return not self.username

    def registry_client(self, **options) -> RegistryClient:
        """A converter registry client with this instance's URL, credentials and TLS settings
        (no request is made until it is used; close it, or use it as a context manager)."""
        return RegistryClient(
            self.base_url, username=self.username or None, password=self.password or None,
            verify=self.verify_tls, ca_bundle_pem=self.ca_bundle or None,
            timeout=settings.APPARATE_REGISTRY_TIMEOUT, **{"retries": settings.APPARATE_REGISTRY_RETRIES, **options},
        )


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
        "rules.Rule", null=True, blank=True, on_delete=models.SET_NULL, related_name="push_events"
    )

    class Meta:
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
