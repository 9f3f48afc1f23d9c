"""Registry instances: where images live, how to reach them, and whether to accelerate."""

import secrets
from urllib.parse import urlsplit

from django.conf import settings
from django.db import models
from django.urls import reverse

from converter.registry import RegistryClient
from core.fields import EncryptedTextField
from registries.validators import validate_ca_bundle, validate_registry_url


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


