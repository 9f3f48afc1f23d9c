"""CNCF Distribution notification envelopes (`application/vnd.docker.distribution.events.v1+json`).

`{"events": [{"id", "action", "target": {"mediaType", "digest", "repository", "tag", "url"}, ...}]}`.
Registries report blob pushes, pulls and deletes too; only manifest pushes become records.
"""

from pipeline.choices import PushSource
from pipeline.intake.records import (
    MAX_EVENTS,
    MalformedPayload,
    ParsedPayload,
    PushRecord,
    digest_field,
    is_blob_type,
    object_field,
    split_path,
    text_field,
)
from pipeline.models import (
    MAX_ACTOR_LENGTH,
    MAX_DELIVERY_ID_LENGTH,
    MAX_MEDIA_TYPE_LENGTH,
    MAX_REPOSITORY_LENGTH,
    MAX_TAG_LENGTH,
)


def recognizes(payload: dict) -> bool:
    return "events" in payload


def _events(payload: dict) -> list:
    events = payload["events"]
    if not isinstance(events, list):
        raise MalformedPayload("'events' must be a list.")
    if len(events) > MAX_EVENTS:
        raise MalformedPayload(f"More than {MAX_EVENTS} events in one delivery.")
    return events


def parse(payload: dict) -> ParsedPayload:
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
        target = object_field(event, "target", where)
        media_type = text_field(target, "mediaType", f"{where}.target", MAX_MEDIA_TYPE_LENGTH)
        # Only the path is looked at, to tell blobs from manifests; the URL itself is never fetched.
        url = text_field(target, "url", f"{where}.target", 8192)
        if "/blobs/" in url or ("/manifests/" not in url and is_blob_type(media_type)):
            ignored += 1
            continue
        actor = event.get("actor")
        namespace, repository = split_path(
            text_field(target, "repository", f"{where}.target", MAX_REPOSITORY_LENGTH, required=True)
        )
        pushes.append(PushRecord(
            source=PushSource.DISTRIBUTION,
            delivery_id=text_field(event, "id", where, MAX_DELIVERY_ID_LENGTH, required=True),
            namespace=namespace,
            repository=repository,
            tag=text_field(target, "tag", f"{where}.target", MAX_TAG_LENGTH),
            digest=digest_field(target, f"{where}.target"),
            media_type=media_type,
            actor=text_field(actor, "name", f"{where}.actor", MAX_ACTOR_LENGTH) if isinstance(actor, dict) else "",
        ))
    return ParsedPayload(PushSource.DISTRIBUTION, tuple(pushes), ignored)
