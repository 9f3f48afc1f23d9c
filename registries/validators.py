"""Field validators for registry instances, shared by the model, forms and serializers."""

from urllib.parse import urlsplit

from cryptography import x509
from django.core.exceptions import ValidationError


def validate_registry_url(value: str) -> None:
    """A registry base URL: http(s)://host[:port], no credentials, query or fragment."""
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as error:
        raise ValidationError(f"Not a valid URL: {error}.") from None
    if parts.scheme not in {"http", "https"}:
        raise ValidationError("Use an http:// or https:// URL, e.g. https://registry.example.com.")
    if not parts.hostname:
        raise ValidationError("The URL has no host name.")
    if parts.username or parts.password:
        raise ValidationError("Put credentials in the username and password fields, not in the URL.")
    if parts.query or parts.fragment:
        raise ValidationError("The registry URL cannot have a query string or fragment.")
    if parts.path not in {"", "/"}:
        raise ValidationError("Give the registry's base URL without a path (the API lives at /v2/).")
    if port == 0:
        raise ValidationError("Port 0 is not a valid port.")


def validate_ca_bundle(value: str) -> None:
    """One or more PEM certificates."""
    if not value.strip():
        return
    try:
        certificates = x509.load_pem_x509_certificates(value.encode())
    except ValueError:
        raise ValidationError("The CA bundle is not valid PEM (expected -----BEGIN CERTIFICATE----- blocks).") from None
    if not certificates:
        raise ValidationError("The CA bundle holds no certificate.")


def validate_credentials(username: str, password: str) -> None:
    """A username needs a password (or token) and the other way round; both blank is anonymous."""
    if username and not password:
        raise ValidationError(
            {"password": "Enter the password or token for this username, or clear the username for anonymous access."}
        )
    if password and not username:
        raise ValidationError({"username": "Enter the username that goes with the password or token."})
