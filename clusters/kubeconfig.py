"""Reading an uploaded kubeconfig into the connection settings of one context (pure, no I/O).

The file is parsed with yaml.safe_load and only inline data is accepted: a console cannot read
files on the operator's machine or run credential plugins, so `exec`, `auth-provider` and
file references are refused with a message that says what to do instead. YAML aliases are
refused before anything is built (a few hundred bytes of nested aliases expand to gigabytes, and
kubectl never writes them), and values repeated in messages are shortened.
"""

import base64
import binascii
from dataclasses import dataclass

import yaml
from django.core.exceptions import ValidationError

from clusters.kube import Connection
from clusters.validators import validate_api_server_url

MAX_KUBECONFIG_BYTES = 512 * 1024
MAX_SHOWN_CHARS = 100  # of a value from the file repeated in a message
MAX_SHOWN_NAMES = 20  # context names listed in a message
FLATTEN_HINT = "Export it with `kubectl config view --raw --flatten --minify --context <name>`."


def _load(text: str):
    """yaml.safe_load, refusing aliases (ValidationError) and syntax errors (yaml.YAMLError)."""
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.AliasEvent):
            line = event.start_mark.line + 1
            raise ValidationError(f"The kubeconfig uses a YAML alias (line {line}); kubeconfigs do not need them "
                                  f"and the console refuses them. {FLATTEN_HINT}")
    return yaml.safe_load(text)


def _shown(value) -> str:
    """A value from the file, as repeated in a message: shortened."""
    text = str(value)
    return text if len(text) <= MAX_SHOWN_CHARS else text[:MAX_SHOWN_CHARS] + "…"


def _listed(names: list[str]) -> str:
    if not names:
        return "none"
    shown = ", ".join(_shown(name) for name in names[:MAX_SHOWN_NAMES])
    return shown + (f" and {len(names) - MAX_SHOWN_NAMES} more" if len(names) > MAX_SHOWN_NAMES else "")


@dataclass(frozen=True)
class KubeconfigCredentials(Connection):
    """The connection settings of one kubeconfig context, and that context's name."""

    context: str = ""


def _named(document: dict, section: str, name: str) -> dict:
    entries = document.get(section) or []
    if not isinstance(entries, list):
        raise ValidationError(f"The kubeconfig's `{section}` is not a list.")
    for entry in entries:
        if isinstance(entry, dict) and entry.get("name") == name:
            body = entry.get(section[:-1])
            if not isinstance(body, dict):
                raise ValidationError(f"The {section[:-1]} '{_shown(name)}' in the kubeconfig has no settings.")
            return body
    raise ValidationError(f"The kubeconfig has no {section[:-1]} named '{_shown(name)}'.")


def _decode_pem(value, what: str) -> str:
    try:
        text = base64.b64decode(str(value), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise ValidationError(f"The kubeconfig's {what} is not valid base64-encoded PEM.") from None
    if "-----BEGIN" not in text:
        raise ValidationError(f"The kubeconfig's {what} is not PEM data.")
    return text


def context_names(text: str) -> list[str]:
    """Names of the contexts in a kubeconfig (empty when it cannot be read)."""
    try:
        document = _load(text)
    except (yaml.YAMLError, ValidationError):
        return []
    if not isinstance(document, dict) or not isinstance(document.get("contexts"), list):
        return []
    return [str(c.get("name")) for c in document["contexts"] if isinstance(c, dict) and c.get("name")]


def parse_kubeconfig(text: str, context: str = "") -> KubeconfigCredentials:
    """The server, CA and credentials of `context` (default: the file's current-context)."""
    if len(text.encode()) > MAX_KUBECONFIG_BYTES:
        raise ValidationError("The kubeconfig is larger than 512 KiB; is this the right file?")
    try:
        document = _load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise ValidationError(f"The kubeconfig is not valid YAML{where}.") from None
    if not isinstance(document, dict) or "contexts" not in document:
        raise ValidationError("This is not a kubeconfig: it has no `contexts` section.")
    names = context_names(text)
    name = context or document.get("current-context") or ""
    if not name:
        raise ValidationError(f"Choose a context; the kubeconfig has: {_listed(names)}.")
    if name not in names:
        raise ValidationError(f"The kubeconfig has no context '{_shown(name)}'; it has: {_listed(names)}.")
    ctx = _named(document, "contexts", name)
    cluster = _named(document, "clusters", str(ctx.get("cluster", "")))
    user = _named(document, "users", str(ctx.get("user", ""))) if ctx.get("user") else {}

    server = str(cluster.get("server") or "")
    if not server:
        raise ValidationError(f"The cluster of context '{_shown(name)}' has no server URL.")
    try:
        validate_api_server_url(server)
    except ValidationError as error:
        raise ValidationError(f"The server URL '{_shown(server)}' is not usable: {error.messages[0]}") from None
    if cluster.get("certificate-authority"):
        raise ValidationError(f"The cluster's CA is a file reference on your machine. {FLATTEN_HINT}")
    if user.get("exec"):
        command = (user["exec"] or {}).get("command", "a program") if isinstance(user["exec"], dict) else "a program"
        raise ValidationError(
            f"The user of context '{_shown(name)}' gets its credentials by running {_shown(command)} (an exec plugin), "
            "which the console cannot do. Use a ServiceAccount token instead "
            "(`kubectl create token <serviceaccount>`), or register with the API server URL and a token."
        )
    if user.get("auth-provider"):
        raise ValidationError(
            f"The user of context '{_shown(name)}' uses an auth-provider plugin, which the console cannot run. "
            "Use a ServiceAccount token instead."
        )
    for key in ("tokenFile", "client-certificate", "client-key"):
        if user.get(key):
            raise ValidationError(f"The user's `{key}` is a file reference on your machine. {FLATTEN_HINT}")
    if user.get("username") or user.get("password"):
        raise ValidationError("Basic authentication is not supported; use a bearer token or a client certificate.")

    values = {
        "server": server, "insecure_skip_tls_verify": bool(cluster.get("insecure-skip-tls-verify", False)),
        "tls_server_name": str(cluster.get("tls-server-name") or ""), "token": str(user.get("token") or ""),
    }
    if cluster.get("certificate-authority-data"):
        values["ca_data"] = _decode_pem(cluster["certificate-authority-data"], "certificate-authority-data")
    if user.get("client-certificate-data") or user.get("client-key-data"):
        if not (user.get("client-certificate-data") and user.get("client-key-data")):
            raise ValidationError("The user has a client certificate without its key (or a key without a certificate).")
        values["client_certificate"] = _decode_pem(user["client-certificate-data"], "client-certificate-data")
        values["client_key"] = _decode_pem(user["client-key-data"], "client-key-data")
    if not values["token"] and not values.get("client_certificate"):
        raise ValidationError(f"The user of context '{_shown(name)}' has no token and no client certificate.")
    return KubeconfigCredentials(context=name, **values)
