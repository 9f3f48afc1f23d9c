"""Image addresses: `host[:port]/namespace/repository[:tag|@sha256:…]`, parsed strictly.

The console's rules think in the registry's terms: the first path component is the namespace and
the rest (which may hold further slashes) is the repository. Parsing never backtracks badly and
every refusal says what is wrong, because addresses come from users and webhooks.
"""

import re
from dataclasses import dataclass

MAX_ADDRESS_LENGTH = 4096
COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")  # a tag, as in addresses
DIGEST = re.compile(r"(sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128})")  # a content digest, as in addresses
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_IPV6 = re.compile(r"\[[0-9A-Fa-f:.]+\]")


class InvalidReference(ValueError):
    """The text is not an image address; the message says which part is wrong."""


@dataclass(frozen=True)
class ImageReference:
    host: str  # lower-cased host[:port]
    namespace: str
    repository: str  # below the namespace; may contain slashes
    tag: str | None = None
    digest: str | None = None

    @property
    def path(self) -> str:
        """The repository path in the registry API (`namespace/repository`)."""
        return f"{self.namespace}/{self.repository}"

    @property
    def reference(self) -> str:
        """What to ask the registry for: the digest if given, else the tag (default `latest`)."""
        return self.digest or self.tag or "latest"

    def with_tag(self, tag: str) -> "ImageReference":
        return ImageReference(self.host, self.namespace, self.repository, tag=tag)

    def __str__(self) -> str:
        text = f"{self.host}/{self.path}"
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def _check_host(host: str) -> str:
    name, _, port = host.rpartition(":") if not host.endswith("]") else (host, "", "")
    if not name:
        name, port = host, ""
    if port and (not port.isdigit() or not 0 < int(port) < 65536):
        raise InvalidReference(f"'{port}' is not a valid port in the registry host '{host}'.")
    if not (_HOSTNAME.fullmatch(name) or _IPV6.fullmatch(name)):
        raise InvalidReference(f"'{host}' is not a valid registry host name.")
    return host.lower()


def parse_reference(text: str) -> ImageReference:
    """Parse a full image address; the registry host and a namespace are required."""
    address = (text or "").strip()
    if not address:
        raise InvalidReference("Enter an image address such as registry.example.com/team/app:1.0.")
    if len(address) > MAX_ADDRESS_LENGTH:
        raise InvalidReference(f"The address is longer than {MAX_ADDRESS_LENGTH} characters.")
    if any(character.isspace() for character in address):
        raise InvalidReference("An image address cannot contain spaces.")
    if "://" in address:
        raise InvalidReference("Leave out the scheme: write registry.example.com/team/app:1.0, not a URL.")

    digest = None
    if "@" in address:
        address, digest = address.split("@", 1)
        if not DIGEST.fullmatch(digest):
            raise InvalidReference(f"'{digest}' is not a valid digest (expected sha256: and 64 hex digits).")

    host, slash, path = address.partition("/")
    if not slash:
        raise InvalidReference("The address needs the registry host, a namespace and a repository: host/ns/repo.")
    host = _check_host(host)

    tag = None
    last = path.rsplit("/", 1)[-1]
    if ":" in last:
        path, tag = path.rsplit(":", 1)
        if not TAG.fullmatch(tag):
            raise InvalidReference(
                f"'{tag}' is not a valid tag (letters, digits, '_', '.', '-'; at most 128 characters; "
                "not starting with '.' or '-')."
            )

    components = path.split("/")
    if len(components) < 2:
        found = f"'{path}' is only one of them" if path else "nothing follows it"
        raise InvalidReference(f"The address needs a namespace and a repository after the host "
                               f"({host}/namespace/repository); {found}.")
    for component in components:
        if not component:
            raise InvalidReference(
                "The repository path has an empty component (two slashes in a row or a trailing slash)."
            )
        if len(component) > 255 or not COMPONENT.fullmatch(component):
            raise InvalidReference(
                f"'{component}' is not a valid repository path component "
                "(lower-case letters and digits, separated by '.', '_', '__' or dashes)."
            )
    return ImageReference(host, components[0], "/".join(components[1:]), tag=tag, digest=digest)


def looks_like_host(component: str) -> bool:
    """Docker's rule for the first component of an address: a registry host has a '.' or a ':'
    (or is `localhost`, or an IPv6 literal); `team` or `library` is a namespace."""
    return "." in component or ":" in component or component == "localhost" or component.startswith("[")


def parse_on_host(text: str, host: str) -> ImageReference:
    """Parse an address of one registry, whose host may be left out: `team/app:1.0` means
    `<host>/team/app:1.0`. A first component that is a host (`host` itself, or see looks_like_host)
    makes it a full address, which may name another registry (callers compare the host).

    Refusals say plainly what is missing: an empty box, or a repository without a namespace.
    """
    address = (text or "").strip()
    if not address:
        raise InvalidReference(f"Enter an image address: namespace/repository:tag on {host} (e.g. team/app:1.0), "
                               f"or the full address {host}/team/app:1.0.")
    first, slash, _ = address.partition("/")
    if slash and (first.lower() == host.lower() or looks_like_host(first)):
        return parse_reference(address)
    if not slash and not any(character.isspace() for character in address) and "://" not in address:
        raise InvalidReference(f"'{address}' has no namespace: write namespace/repository:tag, e.g. team/{address} "
                               f"(the host {host} may be left out).")
    return parse_reference(f"{host}/{address}")
