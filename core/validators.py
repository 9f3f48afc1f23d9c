"""Validation helpers shared by the apps' field validators (each app keeps its own field wording)."""

from urllib.parse import urlsplit

from cryptography import x509
from django.core.exceptions import ValidationError

from converter.reference import ImageReference, InvalidReference, parse_reference


def check_http_url(value: str, *, what: str, scheme_hint: str, credentials_hint: str,
                   path_hint: str | None = None) -> None:
    """An http(s)://host[:port] URL without credentials, query or fragment.

    `what` names the URL in messages ("registry URL"); `scheme_hint` is the message for a wrong
    scheme, `credentials_hint` says where credentials go instead of the URL, and `path_hint`, when
    given, refuses a path after the host with that message (an API server behind a proxy may have a
    path; a registry's API always lives at /v2/).
    """
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as error:
        raise ValidationError(f"Not a valid URL: {error}.") from None
    if parts.scheme not in {"http", "https"}:
        raise ValidationError(scheme_hint)
    if not parts.hostname:
        raise ValidationError("The URL has no host name.")
    if parts.username or parts.password:
        raise ValidationError(credentials_hint)
    if parts.query or parts.fragment:
        raise ValidationError(f"The {what} cannot have a query string or fragment.")
    if path_hint is not None and parts.path not in {"", "/"}:
        raise ValidationError(path_hint)
    if port == 0:
        raise ValidationError("Port 0 is not a valid port.")


def check_pem_certificates(value: str, *, what: str) -> None:
    """One or more PEM certificates; blank is allowed. `what` names the field in messages."""
    if not value.strip():
        return
    try:
        certificates = x509.load_pem_x509_certificates(value.encode())
    except ValueError:
        raise ValidationError(f"The {what} is not valid PEM (expected -----BEGIN CERTIFICATE----- blocks).") from None
    if not certificates:
        raise ValidationError(f"No certificate was found in the {what}.")


def parse_image(value: str) -> ImageReference:
    """converter.reference.parse_reference with its refusal as a field error."""
    try:
        return parse_reference(value)
    except InvalidReference as error:
        raise ValidationError(str(error)) from None
