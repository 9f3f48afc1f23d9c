"""Domain verbs of the registries app, shared by the web UI, the REST API and the webhook intake.

Views and API viewsets call these; they never change instances or push events on their own.
"""

import hashlib
import hmac
from dataclasses import dataclass
from functools import lru_cache

from django.conf import settings
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from converter.registry import (
    RegistryAuthError,
    RegistryError,
    RegistryNotFound,
    RegistryProtocolError,
    RegistryTLSError,
    RegistryUnreachable,
)
from core.fields import decrypt
from registries.models import Instance, new_webhook_secret

CONFIRM_REQUIRED = (
    "Enabling acceleration stores an accelerated copy next to every converted image, which uses extra "
    "registry storage. Confirm to enable it (send confirm=true)."
)


# --- Connection test ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ConnectionResult:
    """What "Test connection" found: ok, a one-line summary, the registry's answer, what to try next."""

    ok: bool
    summary: str
    detail: str = ""
    hint: str = ""


_HINTS = [
    (RegistryTLSError, "TLS verification failed",
     "Paste the registry's CA certificate into 'custom CA bundle', or (test setups only) turn off TLS "
     "verification. For a plain-HTTP registry use an http:// URL."),
    (RegistryUnreachable, "The registry could not be reached",
     "Check the host name (DNS), the port and that the registry is running and reachable from the console "
     "and its workers (firewalls, proxies)."),
    (RegistryAuthError, "The registry refused the credentials",
     "Check the username and password or token; for anonymous access leave both blank."),
    (RegistryNotFound, "Not a registry at this URL",
     "The server answered 404 for /v2/. Use the registry's base URL (e.g. https://registry.example.com), "
     "not a web page or a repository path."),
    (RegistryProtocolError, "The server does not behave like an OCI registry",
     "Check the URL and port: something answered, but not the Distribution API at /v2/."),
]


def _scrub(text: str, instance: Instance) -> str:
    """Belt and braces: no message from a registry library may carry the password back to a page."""
    for secret in (instance.password, instance.webhook_secret):
        if secret:
            text = text.replace(secret, "••••••")
    return text


def test_connection(instance: Instance) -> ConnectionResult:
    """GET /v2/ on the instance with its credentials and TLS settings; explain any failure."""
    client = instance.registry_client()
    try:
        client.ping()
    except RegistryError as error:
        summary, hint = next(
            ((summary, hint) for kind, summary, hint in _HINTS if isinstance(error, kind)),
            ("The registry answered with an error", "Check the registry's logs; try again if it was busy."),
        )
        return ConnectionResult(False, summary, _scrub(error.message, instance), hint)
    finally:
        client.close()
    who = f"as '{instance.username}'" if instance.username else "anonymously"
    return ConnectionResult(True, f"Connected to {instance.host} {who}: the registry answered /v2/.")


# --- Acceleration switch and secrets -----------------------------------------------------------


class ConfirmationRequired(Exception):
    """Enabling acceleration was asked for without the explicit confirmation."""

    def __init__(self, message: str = CONFIRM_REQUIRED):
        super().__init__(message)
        self.message = message


def enable_acceleration(instance: Instance, user, confirm: bool) -> Instance:
    """Turn acceleration on; needs `confirm=True` because accelerated twins add storage.

    Only new pushes (from now on) that match a rule are converted. `user` is recorded by the audit
    log through the request; it is taken here so that callers state who asked.
    """
    if not confirm:
        raise ConfirmationRequired()
    return _set_acceleration(instance, True)


def disable_acceleration(instance: Instance, user) -> Instance:
    """Turn acceleration off: no new conversions. Rules, events and accelerated images all stay."""
    return _set_acceleration(instance, False)


def _set_acceleration(instance: Instance, enabled: bool) -> Instance:
    with transaction.atomic():
        locked = Instance.objects.select_for_update().get(pk=instance.pk)
        if locked.acceleration_enabled != enabled:
            locked.acceleration_enabled = enabled
            locked.acceleration_changed_at = timezone.now()
            locked.save(update_fields=["acceleration_enabled", "acceleration_changed_at", "updated_at"])
    instance.refresh_from_db()
    return instance


def rotate_webhook_secret(instance: Instance) -> str:
    """Replace the webhook secret; returns the new one (shown once). The old one stops working at once."""
    instance.webhook_secret = new_webhook_secret()
    instance.save(update_fields=["webhook_secret", "updated_at"])
    return instance.webhook_secret


def webhook_url(instance: Instance, request=None) -> str:
    """The absolute URL registries post to: APPARATE_PUBLIC_URL if set, else the request's host."""
    path = reverse("pipeline:webhook", args=[instance.pk])
    if settings.APPARATE_PUBLIC_URL:
        return settings.APPARATE_PUBLIC_URL + path
    return request.build_absolute_uri(path) if request is not None else path


def webhook_instance(instance_id: str) -> Instance | None:
    """The instance a webhook URL names, loaded for the intake (None for anything that names none).

    Only what the intake reads: name, URL and the acceleration switch, and the webhook secret as it
    is stored (`stored_webhook_secret`, the encrypted token, for check_webhook_secret); the
    credentials are not read. One plain statement: this runs for every delivery, refused ones too.
    """
    if not (instance_id.isascii() and instance_id.isdigit() and len(instance_id) < 19):
        return None
    found = Instance.objects.raw(
        f"SELECT id, name, url, acceleration_enabled, webhook_secret AS stored_webhook_secret "  # noqa: S608
        f"FROM {Instance._meta.db_table} WHERE id = %s", [int(instance_id)])
    return next(iter(found), None)


@lru_cache(maxsize=1024)
def _secret_digest(stored_token: str, keys: tuple[str, ...]) -> bytes:
    """sha256 of the webhook secret stored as `stored_token`, decrypted once per process.

    Keyed by the encrypted token itself (and the encryption keys): a rotated secret is stored as a
    new token, so a rotation is never answered from this cache, in any process; the plain secret is
    not kept.
    """
    return hashlib.sha256(decrypt(stored_token).encode()).digest()


def check_webhook_secret(instance: Instance, authorization: str) -> bool:
    """Constant-time check of an `Authorization` header (the raw secret or `Bearer <secret>`) against
    the secret of an instance loaded by webhook_instance."""
    value = authorization.strip()
    if value[:7].lower() == "bearer ":
        value = value[7:].strip()
    stored = instance.stored_webhook_secret
    if not stored:
        return False
    expected = _secret_digest(stored, tuple(settings.FIELD_ENCRYPTION_KEYS))
    return hmac.compare_digest(hashlib.sha256(value.encode("utf-8", "surrogatepass")).digest(), expected)


def delete_instance(instance: Instance) -> dict[str, int]:
    """Delete the instance with its rules and push events; nothing in the registry is touched.

    Returns what was deleted, per kind, for the confirmation message.
    """
    counts = {"rules": instance.rules.count(), "events": instance.push_events.count()}
    instance.delete()
    return counts
