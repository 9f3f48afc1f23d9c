"""What every webhook format parses into, and the checked reading of payload fields they share.

Every value is type- and length-checked so that a record can always be stored; anything else
raises `MalformedPayload` with a message for the sender. URLs inside payloads are never used:
the console talks to the instance's configured URL only.
"""

import re
from dataclasses import dataclass

from converter.reference import DIGEST
from pipeline.models import MAX_DIGEST_LENGTH, MAX_NAMESPACE_LENGTH

IMAGE_MANIFEST_TYPES = frozenset({
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
})
# Media types of blobs (layers, configs, raw data): pushes of these are not stored at all.
BLOB_TYPES = frozenset({
    "application/octet-stream",
    "application/vnd.docker.container.image.v1+json",
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.oci.empty.v1+json",
})
BLOB_TYPE_MARKERS = (".layer.", ".rootfs.")
# cosign stores signatures, attestations and SBOMs as images tagged `sha256-<hex>.sig` etc.
_COSIGN_TAG = re.compile(r"sha(256|512)-[0-9a-f]{64,128}\.(sig|att|sbom)")
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")
MAX_EVENTS = 1000  # per delivery


class MalformedPayload(ValueError):
    """The body is not a webhook payload we understand; the message says what is wrong."""


@dataclass(frozen=True)
class PushRecord:
    """One manifest push, whatever registry reported it."""

    source: str  # PushSource
    delivery_id: str
    namespace: str  # first path component; "" when the repository has a single component
    repository: str  # path below the namespace
    tag: str  # "" when pushed by digest
    digest: str
    media_type: str  # "" when the registry does not say (Harbor)
    actor: str = ""

    @property
    def path(self) -> str:
        return f"{self.namespace}/{self.repository}" if self.namespace else self.repository


@dataclass(frozen=True)
class ParsedPayload:
    source: str
    pushes: tuple[PushRecord, ...]
    ignored: int  # events that are not manifest pushes (blobs, pulls, deletes, other Harbor types)


def is_image_manifest(media_type: str) -> bool:
    """True for image manifests and indexes, and when the registry did not say (Harbor)."""
    return not media_type or media_type in IMAGE_MANIFEST_TYPES


def is_signature_tag(tag: str) -> bool:
    return bool(_COSIGN_TAG.fullmatch(tag))


def is_blob_type(media_type: str) -> bool:
    return media_type in BLOB_TYPES or any(marker in media_type for marker in BLOB_TYPE_MARKERS)


def text_field(container: dict, key: str, where: str, max_length: int, required: bool = False) -> str:
    value = container.get(key)
    if value is None or value == "":
        if required:
            raise MalformedPayload(f"{where}.{key} is missing.")
        return ""
    if not isinstance(value, str):
        raise MalformedPayload(f"{where}.{key} must be a string, not {type(value).__name__}.")
    if len(value) > max_length:
        raise MalformedPayload(f"{where}.{key} is longer than {max_length} characters.")
    if CONTROL_CHARACTERS.search(value):
        raise MalformedPayload(f"{where}.{key} contains control characters.")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise MalformedPayload(f"{where}.{key} is not valid Unicode text.") from None
    return value


def object_field(container: dict, key: str, where: str) -> dict:
    value = container.get(key)
    if not isinstance(value, dict):
        raise MalformedPayload(f"{where}.{key} must be an object.")
    return value


def digest_field(container: dict, where: str) -> str:
    digest = text_field(container, "digest", where, MAX_DIGEST_LENGTH, required=True)
    if not DIGEST.fullmatch(digest):
        raise MalformedPayload(f"{where}.digest is not a sha256:/sha512: digest.")
    return digest


def split_path(path: str) -> tuple[str, str]:
    namespace, slash, repository = path.partition("/")
    if not slash:
        return "", path
    if len(namespace) > MAX_NAMESPACE_LENGTH:
        raise MalformedPayload(f"The namespace is longer than {MAX_NAMESPACE_LENGTH} characters.")
    return namespace, repository

