"""Field validators for registry instances, shared by the model, forms and serializers."""

import re
from urllib.parse import urlsplit

from django.core.exceptions import ValidationError

from converter.reference import COMPONENT
from core.validators import check_http_url, check_pem_certificates

MANIFEST_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
REPOSITORY_PATH = re.compile(rf"{COMPONENT.pattern}(?:/{COMPONENT.pattern})+")  # namespace/repository[/...]


def validate_registry_url(value: str) -> None:
    """A registry base URL: http(s)://host[:port], no credentials, path, query or fragment."""
    check_http_url(
        value, what="registry URL",
        scheme_hint="Use an http:// or https:// URL, e.g. https://registry.example.com.",
        credentials_hint="Put credentials in the username and password fields, not in the URL.",
        path_hint="Give the registry's base URL without a path (the API lives at /v2/).",
    )


def validate_ca_bundle(value: str) -> None:
    """One or more PEM certificates."""
    check_pem_certificates(value, what="CA bundle")


def validate_credentials(username: str, password: str) -> None:
    """A username needs a password (or token) and the other way round; both blank is anonymous."""
    if username and not password:
        raise ValidationError(
            {"password": "Enter the password or token for this username, or clear the username for anonymous access."}
        )
    if password and not username:
        raise ValidationError({"username": "Enter the username that goes with the password or token."})


NEW_HOST_MESSAGE = (
    "The registry URL now points at another host, port or scheme: type the password or token again (or clear "
    "it). The stored one is only ever sent to the URL it was entered for."
)


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    default = {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), parts.port or default


def validate_password_follows_url(stored_url: str, new_url: str, has_stored_password: bool,
                                  password_given: bool) -> None:
    """A stored password stays with its host: moving the URL to another origin needs it typed again."""
    if has_stored_password and not password_given and _origin(stored_url) != _origin(new_url):
        raise ValidationError({"password": NEW_HOST_MESSAGE})


def validate_repository_path(value: str) -> None:
    """A repository path in the registry API: namespace/repository (lower-case components)."""
    if len(value) > 1024 or not REPOSITORY_PATH.fullmatch(value):
        raise ValidationError("Give the repository path as namespace/repository (lower-case letters, digits and "
                              "separators).")


def validate_manifest_digest(value: str) -> None:
    """A manifest digest: images are deleted by digest, never by tag."""
    if not MANIFEST_DIGEST.fullmatch(value):
        raise ValidationError("Give the manifest digest (sha256: and 64 hex digits), not a tag.")
