"""Domain verbs of the registries app, shared by the web UI, the REST API and the webhook intake.

Views and API viewsets call these; they never change instances or push events on their own.
"""

import hmac
from dataclasses import dataclass

from django.conf import settings
from django.db import IntegrityError, transaction
from django.urls import reverse
from django.utils import timezone

from converter.reference import InvalidReference, parse_reference
from converter.registry import (
    RegistryAuthError,
    RegistryError,
    RegistryNotFound,
    RegistryProtocolError,
    RegistryTLSError,
    RegistryUnreachable,
)
from registries.choices import PushOutcome, PushReason
from registries.models import Instance, PushEvent, new_webhook_secret
from registries.webhooks import PushRecord, is_image_manifest, is_signature_tag
from rules.actions import add_twin_tag_for_event, request_conversion_for_event
from rules.matching import match_image

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
    path = reverse("webhooks:registry", args=[instance.pk])
    if settings.APPARATE_PUBLIC_URL:
        return settings.APPARATE_PUBLIC_URL + path
    return request.build_absolute_uri(path) if request is not None else path


def check_webhook_secret(instance: Instance, authorization: str) -> bool:
    """Constant-time check of an `Authorization` header: the raw secret or `Bearer <secret>`."""
    value = authorization.strip()
    if value[:7].lower() == "bearer ":
        value = value[7:].strip()
    expected = instance.webhook_secret or ""
    return bool(expected) and hmac.compare_digest(value.encode("utf-8", "surrogatepass"), expected.encode())


# --- Push events -------------------------------------------------------------------------------

def _decide(instance: Instance, push: PushRecord) -> tuple[str, str, str, object]:
    """(outcome, reason, human reason, matched rule) for a push; the instance row is locked."""
    skipped = PushOutcome.SKIPPED
    earlier = instance.push_events.filter(delivery_id=push.delivery_id).order_by("id").first()
    if earlier is not None:
        return skipped, PushReason.ALREADY_SEEN, (
            f"Delivery '{push.delivery_id}' was already received (event #{earlier.pk}). Registries resend "
            "notifications they believe were lost; the repeat changes nothing."
        ), None
    if not is_image_manifest(push.media_type):
        return skipped, PushReason.NOT_IMAGE_MANIFEST, (
            f"Media type '{push.media_type}' is not a container image manifest or index (e.g. an artifact, "
            "a config or a schema 1 manifest); only images are accelerated."
        ), None
    if push.tag and is_signature_tag(push.tag):
        return skipped, PushReason.NOT_IMAGE_MANIFEST, (
            f"Tag '{push.tag}' is a signature, attestation or SBOM (cosign naming), not a runnable image."
        ), None
    if not push.tag:
        return skipped, PushReason.NO_TAG, (
            "Pushed by digest without a tag. Accelerated images are named after tags (<tag>"
            f"{settings.APPARATE_ACCELERATED_SUFFIX}); the platform images of a multi-platform image arrive "
            "this way and are converted with the tagged push of their index."
        ), None
    suffix = settings.APPARATE_ACCELERATED_SUFFIX
    if push.tag.endswith(suffix):
        return skipped, PushReason.ACCELERATED_TAG, (
            f"Tag '{push.tag}' ends with '{suffix}': it is an accelerated image already, so it is not converted "
            "again."
        ), None
    address = f"{instance.host}/{push.path}:{push.tag}"
    try:
        reference = parse_reference(address)
    except InvalidReference as error:
        return skipped, PushReason.INVALID_REFERENCE, (
            f"'{address}' is not an image address rules can match: {error} Rules need host/namespace/repository."
        ), None
    if not instance.acceleration_enabled:
        return skipped, PushReason.ACCELERATION_OFF, (
            f"Acceleration is off for instance '{instance.name}'. Enable it on the instance page and push the "
            "image again to convert it."
        ), None
    outcome = match_image(instance, reference)
    if outcome.rule is None:
        if outcome.closest is None:
            detail = (
                f"No rule matched: instance '{instance.name}' has no acceleration rules. Add a rule for namespace "
                f"'{reference.namespace}' to convert pushes like this one."
            )
        else:
            failure = outcome.closest.first_failure
            detail = (
                f"No enabled rule matched. Closest rule: '{outcome.closest.rule.name}', which failed on "
                f"{failure.name}: {failure.detail}."
            )
        return skipped, PushReason.NO_RULE_MATCHED, detail, None
    converted = (
        instance.push_events.filter(
            outcome=PushOutcome.CONVERSION_REQUESTED, namespace=push.namespace, repository=push.repository,
            digest=push.digest,
        ).order_by("id").first()
    )
    if converted is not None:
        also = "" if converted.tag == push.tag else (
            f" Its accelerated image is also tagged '{push.tag}{suffix}'.")
        return skipped, PushReason.ALREADY_SEEN, (
            f"{push.path}@{push.digest} was already requested for conversion (event #{converted.pk}, tag "
            f"'{converted.tag}'); the same content is converted once.{also}"
        ), outcome.rule
    return PushOutcome.CONVERSION_REQUESTED, PushReason.RULE_MATCHED, (
        f"Rule '{outcome.rule.name}' matched; conversion requested. The accelerated image will be "
        f"{push.path}:{push.tag}{suffix}."
    ), outcome.rule


def record_push(instance: Instance, push: PushRecord) -> PushEvent:
    """Store one manifest push with its outcome and the reason, exactly once per delivery and digest.

    The instance row is locked while deciding, so concurrent duplicate deliveries are serialized:
    the first stores "conversion requested", the rest "already seen". A unique constraint backs this
    up; should it fire anyway, the push is stored as already seen.
    """
    fields = {
        "source": push.source, "delivery_id": push.delivery_id, "actor": push.actor, "namespace": push.namespace,
        "repository": push.repository, "tag": push.tag, "digest": push.digest, "media_type": push.media_type,
    }
    with transaction.atomic():
        locked = Instance.objects.select_for_update().get(pk=instance.pk)
        outcome, reason, detail, rule = _decide(locked, push)
        try:
            with transaction.atomic():
                event = PushEvent.objects.create(
                    instance=locked, outcome=outcome, reason=reason, reason_detail=detail, matched_rule=rule, **fields
                )
        except IntegrityError:
            return PushEvent.objects.create(
                instance=locked, outcome=PushOutcome.SKIPPED, reason=PushReason.ALREADY_SEEN, matched_rule=rule,
                reason_detail=f"{push.path}@{push.digest} was already requested for conversion by a concurrent "
                "delivery; the same content is converted once.", **fields,
            )
        if event.outcome == PushOutcome.CONVERSION_REQUESTED:
            request_conversion_for_event(event)  # the job (event.jobs) is enqueued after commit
        elif rule is not None:  # known content under another tag: that tag gets its own twin
            add_twin_tag_for_event(event)
        return event


def delete_instance(instance: Instance) -> dict[str, int]:
    """Delete the instance with its rules and push events; nothing in the registry is touched.

    Returns what was deleted, per kind, for the confirmation message.
    """
    counts = {"rules": instance.rules.count(), "events": instance.push_events.count()}
    instance.delete()
    return counts
