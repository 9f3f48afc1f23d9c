"""Harbor webhooks, default format and CloudEvents format.

Default: `{"type": "PUSH_ARTIFACT", "occur_at", "operator", "event_data": {"resources": [{"digest",
"tag", "resource_url"}], "repository": {"namespace", "name", "repo_full_name"}}}`. CloudEvents:
`{"specversion", "id", "type": "harbor.artifact.pushed", "data": {...same event_data...}}`.
"""

import hashlib
import json

from pipeline.choices import PushSource
from pipeline.intake.records import (
    MAX_EVENTS,
    MalformedPayload,
    ParsedPayload,
    PushRecord,
    digest_field,
    object_field,
    text_field,
)
from pipeline.models import (
    MAX_ACTOR_LENGTH,
    MAX_DELIVERY_ID_LENGTH,
    MAX_NAMESPACE_LENGTH,
    MAX_REPOSITORY_LENGTH,
    MAX_TAG_LENGTH,
)

PUSH_TYPES = {"PUSH_ARTIFACT", "harbor.artifact.pushed"}


def recognizes(payload: dict) -> bool:
    return "type" in payload


def _repository(data: dict) -> tuple[str, str]:
    repository = object_field(data, "repository", "event_data")
    namespace = text_field(repository, "namespace", "event_data.repository", MAX_NAMESPACE_LENGTH, required=True)
    full_name = text_field(repository, "repo_full_name", "event_data.repository", MAX_REPOSITORY_LENGTH)
    name = text_field(repository, "name", "event_data.repository", MAX_REPOSITORY_LENGTH)
    if full_name.startswith(f"{namespace}/"):
        name = full_name[len(namespace) + 1:]
    if not name:
        raise MalformedPayload("event_data.repository has neither a name nor a repo_full_name.")
    return namespace, name


def parse(payload: dict) -> ParsedPayload:
    kind = payload["type"]
    if not isinstance(kind, str):
        raise MalformedPayload("'type' must be a string.")
    if kind not in PUSH_TYPES:
        return ParsedPayload(PushSource.HARBOR, (), 1)
    cloud_event = "specversion" in payload
    data = object_field(payload, "data" if cloud_event else "event_data", "payload")
    namespace, repository = _repository(data)
    resources = data.get("resources")
    if not isinstance(resources, list) or not resources:
        raise MalformedPayload("event_data.resources must be a non-empty list.")
    if len(resources) > MAX_EVENTS:
        raise MalformedPayload(f"More than {MAX_EVENTS} resources in one delivery.")
    operator = text_field(data if cloud_event else payload, "operator", "payload", MAX_ACTOR_LENGTH)
    event_id = text_field(payload, "id", "payload", MAX_DELIVERY_ID_LENGTH - 10) if cloud_event else ""
    occurred = payload.get("occur_at", data.get("occur_at"))
    if isinstance(occurred, (dict, list)):
        raise MalformedPayload("occur_at must be a timestamp.")
    pushes = []
    for index, resource in enumerate(resources):
        where = f"event_data.resources[{index}]"
        if not isinstance(resource, dict):
            raise MalformedPayload(f"{where} must be an object.")
        digest = digest_field(resource, where)
        tag = text_field(resource, "tag", where, MAX_TAG_LENGTH)
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
