"""Push webhook payloads → normalized push records (pure: no database, no network).

Two formats are understood:

* CNCF Distribution notification envelopes (`application/vnd.docker.distribution.events.v1+json`):
  `{"events": [{"id", "action", "target": {"mediaType", "digest", "repository", "tag", "url"}, ...}]}`.
  Registries report blob pushes, pulls and deletes too; only manifest pushes become records.
* Harbor webhooks, default format (`{"type": "PUSH_ARTIFACT", "occur_at", "operator", "event_data":
  {"resources": [{"digest", "tag", "resource_url"}], "repository": {"namespace", "name",
  "repo_full_name"}}}`) and CloudEvents format (`{"specversion", "id", "type":
  "harbor.artifact.pushed", "data": {...same event_data...}}`).

Every value is type- and length-checked so that a record can always be stored; anything else
raises `MalformedPayload` with a message for the sender. URLs inside payloads are never used:
the console talks to the instance's configured URL only.
"""

import hashlib
import json
import re
from dataclasses import dataclass

from converter.reference import DIGEST
from registries.choices import PushSource
from registries.models import (
    MAX_ACTOR_LENGTH,
    MAX_DELIVERY_ID_LENGTH,
    MAX_DIGEST_LENGTH,
    MAX_MEDIA_TYPE_LENGTH,
    MAX_NAMESPACE_LENGTH,
    MAX_REPOSITORY_LENGTH,
    MAX_TAG_LENGTH,
)

DISTRIBUTION_ENVELOPE = "application/vnd.docker.distribution.events.v1+json"

IMAGE_MANIFEST_TYPES = frozenset({
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
})
# Media types of blobs (layers, configs, raw data): pushes of these are not stored at all.
_BLOB_TYPES = frozenset({
    "application/octet-stream",
    "application/vnd.docker.container.image.v1+json",
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.oci.empty.v1+json",
})
_BLOB_TYPE_MARKERS = (".layer.", ".rootfs.")
# cosign stores signatures, attestations and SBOMs as images tagged `sha256-<hex>.sig` etc.
_COSIGN_TAG = re.compile(r"sha(256|512)-[0-9a-f]{64,128}\.(sig|att|sbom)")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_HARBOR_PUSH_TYPES = {"PUSH_ARTIFACT", "harbor.artifact.pushed"}
_MAX_EVENTS = 1000


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


def _is_blob_type(media_type: str) -> bool:
    return media_type in _BLOB_TYPES or any(marker in media_type for marker in _BLOB_TYPE_MARKERS)


def _text(container: dict, key: str, where: str, max_length: int, required: bool = False) -> str:
    value = container.get(key)
    if value is None or value == "":
        if required:
            raise MalformedPayload(f"{where}.{key} is missing.")
        return ""
    if not isinstance(value, str):
        raise MalformedPayload(f"{where}.{key} must be a string, not {type(value).__name__}.")
    if len(value) > max_length:
        raise MalformedPayload(f"{where}.{key} is longer than {max_length} characters.")
    if _CONTROL.search(value):
        raise MalformedPayload(f"{where}.{key} contains control characters.")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise MalformedPayload(f"{where}.{key} is not valid Unicode text.") from None
    return value


def _object(container: dict, key: str, where: str) -> dict:
    value = container.get(key)
    if not isinstance(value, dict):
        raise MalformedPayload(f"{where}.{key} must be an object.")
    return value


def _digest(container: dict, where: str) -> str:
    digest = _text(container, "digest", where, MAX_DIGEST_LENGTH, required=True)
    if not DIGEST.fullmatch(digest):
        raise MalformedPayload(f"{where}.digest is not a sha256:/sha512: digest.")
    return digest


def _split_path(path: str) -> tuple[str, str]:
    namespace, slash, repository = path.partition("/")
    if not slash:
        return "", path
    if len(namespace) > MAX_NAMESPACE_LENGTH:
        raise MalformedPayload(f"The namespace is longer than {MAX_NAMESPACE_LENGTH} characters.")
    return namespace, repository


def _events(payload: dict) -> list:
    events = payload["events"]
    if not isinstance(events, list):
        raise MalformedPayload("'events' must be a list.")
    if len(events) > _MAX_EVENTS:
        raise MalformedPayload(f"More than {_MAX_EVENTS} events in one delivery.")
    return events


def _parse_distribution(payload: dict) -> ParsedPayload:
    pushes, ignored = [], 0
    for index, event in enumerate(_events(payload)):
        where = f"events[{index}]"
        if not isinstance(event, dict):
            raise MalformedPayload(f"{where} must be an object.")
        action = event.get("action")
        if not isinstance(action, str):
            raise MalformedPayload(f"{where}.action must be a string.")
        if action != "push":
            ignored += 1
            continue
        target = _object(event, "target", where)
        media_type = _text(target, "mediaType", f"{where}.target", MAX_MEDIA_TYPE_LENGTH)
        # Only the path is looked at, to tell blobs from manifests; the URL itself is never fetched.
        url = _text(target, "url", f"{where}.target", 8192)
        if "/blobs/" in url or ("/manifests/" not in url and _is_blob_type(media_type)):
            ignored += 1
            continue
        actor = event.get("actor")
        namespace, repository = _split_path(
            _text(target, "repository", f"{where}.target", MAX_REPOSITORY_LENGTH, required=True)
        )
        pushes.append(PushRecord(
            source=PushSource.DISTRIBUTION,
            delivery_id=_text(event, "id", where, MAX_DELIVERY_ID_LENGTH, required=True),
            namespace=namespace,
            repository=repository,
            tag=_text(target, "tag", f"{where}.target", MAX_TAG_LENGTH),
            digest=_digest(target, f"{where}.target"),
            media_type=media_type,
            actor=_text(actor, "name", f"{where}.actor", MAX_ACTOR_LENGTH) if isinstance(actor, dict) else "",
        ))
    return ParsedPayload(PushSource.DISTRIBUTION, tuple(pushes), ignored)


def _harbor_repository(data: dict) -> tuple[str, str]:
    repository = _object(data, "repository", "event_data")
    namespace = _text(repository, "namespace", "event_data.repository", MAX_NAMESPACE_LENGTH, required=True)
    full_name = _text(repository, "repo_full_name", "event_data.repository", MAX_REPOSITORY_LENGTH)
    name = _text(repository, "name", "event_data.repository", MAX_REPOSITORY_LENGTH)
    if full_name.startswith(f"{namespace}/"):
        name = full_name[len(namespace) + 1:]
    if not name:
        raise MalformedPayload("event_data.repository has neither a name nor a repo_full_name.")
    return namespace, name


def _parse_harbor(payload: dict) -> ParsedPayload:
    kind = payload["type"]
    if not isinstance(kind, str):
        raise MalformedPayload("'type' must be a string.")
    if kind not in _HARBOR_PUSH_TYPES:
        return ParsedPayload(PushSource.HARBOR, (), 1)
    cloud_event = "specversion" in payload
    data = _object(payload, "data" if cloud_event else "event_data", "payload")
    namespace, repository = _harbor_repository(data)
    resources = data.get("resources")
    if not isinstance(resources, list) or not resources:
        raise MalformedPayload("event_data.resources must be a non-empty list.")
    if len(resources) > _MAX_EVENTS:
        raise MalformedPayload(f"More than {_MAX_EVENTS} resources in one delivery.")
    operator = _text(data if cloud_event else payload, "operator", "payload", MAX_ACTOR_LENGTH)
    event_id = _text(payload, "id", "payload", MAX_DELIVERY_ID_LENGTH - 10) if cloud_event else ""
    occurred = payload.get("occur_at", data.get("occur_at"))
    if isinstance(occurred, (dict, list)):
        raise MalformedPayload("occur_at must be a timestamp.")
    pushes = []
    for index, resource in enumerate(resources):
        where = f"event_data.resources[{index}]"
        if not isinstance(resource, dict):
            raise MalformedPayload(f"{where} must be an object.")
        digest = _digest(resource, where)
        tag = _text(resource, "tag", where, MAX_TAG_LENGTH)
        if event_id:
            delivery_id = f"{event_id}#{index}"
        else:
            # Harbor's default payload has no event id; its retries resend the same body.
            fingerprint = json.dumps([str(occurred), namespace, repository, digest, tag])
            delivery_id = "harbor-" + hashlib.sha256(fingerprint.encode()).hexdigest()[:40]
        pushes.append(PushRecord(
            source=PushSource.HARBOR, delivery_id=delivery_id, namespace=namespace, repository=repository,
            tag=tag, digest=digest, media_type="", actor=operator,
        ))
    return ParsedPayload(PushSource.HARBOR, tuple(pushes), 0)


def parse_payload(body: bytes) -> ParsedPayload:
    """Parse a webhook body; raises MalformedPayload for anything that is not a payload we know."""
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError) as error:  # bad JSON, bad UTF-8, absurd numbers, deep nesting
        raise MalformedPayload(f"The body is not valid JSON ({type(error).__name__}).") from None
    if not isinstance(payload, dict):
        raise MalformedPayload("The body must be a JSON object.")
    if "events" in payload:
        return _parse_distribution(payload)
    if "type" in payload:
        return _parse_harbor(payload)
    raise MalformedPayload(
        "Not a CNCF Distribution notification (no 'events' list) nor a Harbor webhook (no 'type')."
    )
