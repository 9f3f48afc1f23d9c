"""Field validators of the clusters app, shared by the models, forms and serializers."""

import re
from urllib.parse import urlsplit

from django.core.exceptions import ValidationError

from converter.reference import TAG, ImageReference
from core.validators import check_http_url, check_pem_certificates, parse_image

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9]$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$")


def validate_api_server_url(value: str) -> None:
    """A Kubernetes API server URL: http(s)://host[:port][/path], no credentials or query."""
    check_http_url(
        value, what="API server URL",
        scheme_hint="Use an https:// URL, e.g. https://10.0.0.1:6443.",
        credentials_hint="Put the token in the token field, not in the URL.",
    )


def server_origin(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) of an API server URL: where its credentials are sent."""
    parts = urlsplit(url)
    try:
        port = parts.port or {"https": 443, "http": 80}.get(parts.scheme)
    except ValueError:
        port = None
    return parts.scheme.lower(), (parts.hostname or "").lower(), port


def moved_to_another_host(stored_server: str, server: str) -> bool:
    """True when an edit points a registered cluster's stored credentials at another origin."""
    return bool(stored_server and server) and server_origin(server) != server_origin(stored_server)


def credentials_again(what: str) -> str:
    return (f"The API server is on another host now: {what} again (the stored credentials are never sent to a "
            "new host).")


def validate_pem_certificates(value: str) -> None:
    """One or more PEM certificates (blank allowed)."""
    check_pem_certificates(value, what="CA certificate field")


def validate_dns_label(value: str) -> None:
    """A Kubernetes namespace or object name made of one DNS label (RFC 1123, at most 63 chars)."""
    if len(value) > 63 or not DNS_LABEL.match(value):
        raise ValidationError(
            "Use at most 63 lower-case letters, digits and '-', starting and ending with a letter or digit."
        )


MAX_DEPLOY_NAMESPACES = 100


def validate_namespace_list(value) -> None:
    """A list of distinct namespace names (the namespaces a cluster allows deploys into)."""
    if not isinstance(value, list) or not all(isinstance(name, str) for name in value):
        raise ValidationError("Give a list of namespace names.")
    if len(value) > MAX_DEPLOY_NAMESPACES:
        raise ValidationError(f"At most {MAX_DEPLOY_NAMESPACES} namespaces.")
    for name in value:
        try:
            validate_dns_label(name)
        except ValidationError:
            raise ValidationError(f"'{name[:100]}' is not a namespace name: use at most 63 lower-case letters, digits "
                                  "and '-', starting and ending with a letter or digit.") from None
    if len(set(value)) != len(value):
        raise ValidationError("Each namespace once.")


def validate_dns_subdomain(value: str) -> None:
    """A Kubernetes object name (RFC 1123 subdomain, at most 253 chars)."""
    if len(value) > 253 or not DNS_SUBDOMAIN.match(value):
        raise ValidationError(
            "Use lower-case letters, digits, '-' and '.', starting and ending with a letter or digit."
        )


def validate_image_reference(value: str) -> None:
    """A full image address such as registry.example.com/team/app:1.0 (converter.reference rules)."""
    parse_image(value)


def validate_image_tag(value: str) -> None:
    """An image tag, such as the suite agent's version (which is also the chart's appVersion)."""
    if not TAG.fullmatch(value):
        raise ValidationError(f"'{value[:200]}' is not a valid image tag (letters, digits, '_', '.', '-'; "
                              "at most 128 characters; not starting with '.' or '-').")


def image_of_instance(instance, value: str) -> ImageReference:
    """Parse an image address and check that it lives in the instance's registry."""
    reference = parse_image(value)
    if reference.host != instance.host:
        raise ValidationError(f"The image must be in the instance's registry ({instance.host}/...).")
    return reference


def parse_label_selector(value: str) -> list[tuple[str, str, list[str]]]:
    """Parse a Kubernetes equality/set label selector into (key, operator, values) terms.

    Supported: `k=v`, `k==v`, `k!=v`, `k`, `!k`, `k in (a,b)`, `k notin (a,b)`, comma-separated.
    """
    terms = []
    for raw in re.split(r",(?![^()]*\))", value.strip()):
        term = raw.strip()
        if not term:
            raise ValidationError("Empty term in the label selector.")
        match = re.fullmatch(r"(\S+)\s+(in|notin)\s+\(([^()]*)\)", term)
        if match:
            key, operator, values = match[1], match[2], [v.strip() for v in match[3].split(",")]
        elif term.startswith("!"):
            key, operator, values = term[1:].strip(), "!", []
        elif "!=" in term:
            key, _, val = term.partition("!=")
            operator, values = "!=", [val.strip()]
        elif "=" in term:
            key, _, val = term.partition("==") if "==" in term else term.partition("=")
            operator, values = "=", [val.strip()]
        else:
            key, operator, values = term, "exists", []
        key = key.strip()
        _validate_label_key(key)
        for val in values:
            if len(val) > 63 or not LABEL_VALUE.match(val):
                raise ValidationError(f"'{val}' is not a valid label value.")
        terms.append((key, operator, values))
    return terms


def _validate_label_key(key: str) -> None:
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not DNS_SUBDOMAIN.match(prefix)):
        raise ValidationError(f"'{key}' is not a valid label key (bad prefix).")
    if not name or len(name) > 63 or not LABEL_NAME.match(name):
        raise ValidationError(f"'{key}' is not a valid label key.")


def validate_label_selector(value: str) -> None:
    parse_label_selector(value)


def selector_matches(terms: list[tuple[str, str, list[str]]], labels: dict) -> bool:
    """True when the labels satisfy every term, with Kubernetes semantics."""
    for key, operator, values in terms:
        present = key in labels
        if operator == "=" and labels.get(key) != values[0]:
            return False
        if operator == "!=" and present and labels[key] == values[0]:
            return False
        if operator == "in" and labels.get(key) not in values:
            return False
        if operator == "notin" and present and labels[key] in values:
            return False
        if operator == "exists" and not present:
            return False
        if operator == "!" and present:
            return False
    return True
