"""The pure webhook parser: Distribution and Harbor payloads in, normalized push records out."""

import json
import re

import pytest

from pipeline.intake import MalformedPayload, is_image_manifest, is_signature_tag, parse_payload
from tests.registries.conftest import blob_event, digest_of, envelope, harbor_push, manifest_event


def test_distribution_manifest_push_is_normalized():
    event = manifest_event("team/apps/web", "1.2", event_id="evt-1")
    parsed = parse_payload(envelope(event))
    assert parsed.source == "distribution"
    assert parsed.ignored == 0
    (push,) = parsed.pushes
    assert (push.namespace, push.repository, push.tag) == ("team", "apps/web", "1.2")
    assert push.delivery_id == "evt-1"
    assert push.digest == event["target"]["digest"]
    assert push.actor == "ci-bot"
    assert push.path == "team/apps/web"


def test_distribution_blobs_pulls_and_deletes_are_ignored():
    parsed = parse_payload(envelope(
        blob_event("team/web"), manifest_event("team/web", action="pull"), manifest_event("team/web", action="delete"),
        manifest_event("team/web", "2.0"),
    ))
    assert parsed.ignored == 3
    assert [push.tag for push in parsed.pushes] == ["2.0"]


def test_blob_is_recognized_by_media_type_without_url():
    event = blob_event("team/web")
    del event["target"]["url"]
    event["target"]["mediaType"] = "application/vnd.oci.image.layer.v1.tar+gzip"
    assert parse_payload(envelope(event)).pushes == ()


def test_manifest_pushed_by_digest_has_no_tag():
    (push,) = parse_payload(envelope(manifest_event("team/web", tag=None))).pushes
    assert push.tag == ""


def test_single_component_repository_has_no_namespace():
    (push,) = parse_payload(envelope(manifest_event("alpine", "3"))).pushes
    assert (push.namespace, push.repository) == ("", "alpine")


def test_harbor_push_artifact():
    parsed = parse_payload(harbor_push("library", "nginx", "1.27"))
    assert parsed.source == "harbor"
    (push,) = parsed.pushes
    assert (push.namespace, push.repository, push.tag, push.actor) == ("library", "nginx", "1.27", "admin")
    assert push.delivery_id.startswith("harbor-")
    assert push.media_type == ""
    # Harbor retries resend the same body: the derived delivery id is stable.
    assert parse_payload(harbor_push("library", "nginx", "1.27")).pushes[0].delivery_id == push.delivery_id
    assert parse_payload(harbor_push("library", "nginx", "1.27", occur_at=1)).pushes[0].delivery_id != push.delivery_id


def test_harbor_nested_repository_uses_full_name():
    body = json.loads(harbor_push("team", "apps/web"))
    body["event_data"]["repository"]["name"] = "web"  # what some Harbor versions send
    (push,) = parse_payload(json.dumps(body).encode()).pushes
    assert (push.namespace, push.repository) == ("team", "apps/web")


def test_harbor_cloudevents_format():
    body = {
        "specversion": "1.0", "id": "ce-42", "type": "harbor.artifact.pushed", "source": "/projects/1/webhook",
        "data": {"operator": "robot", "resources": [{"digest": digest_of("x"), "tag": "v1"}],
                 "repository": {"namespace": "team", "name": "web", "repo_full_name": "team/web"}},
    }
    (push,) = parse_payload(json.dumps(body).encode()).pushes
    assert (push.delivery_id, push.actor, push.tag) == ("ce-42#0", "robot", "v1")


def test_other_harbor_events_are_ignored():
    parsed = parse_payload(json.dumps({"type": "PULL_ARTIFACT", "event_data": {}}).encode())
    assert parsed.pushes == () and parsed.ignored == 1


@pytest.mark.parametrize("body, message", [
    (b"", "not valid JSON"),
    (b"{", "not valid JSON"),
    (b"\xff\xfe\x00garbage", "not valid JSON"),
    (b"[" * 100_000 + b"]" * 100_000, "not valid JSON"),
    (b'{"events": [' + b"9" * 5000 + b"]}", "not valid JSON"),
    (b"[]", "must be a JSON object"),
    (b'"events"', "must be a JSON object"),
    (b"{}", "Not a CNCF Distribution notification"),
    (b'{"events": {}}', "'events' must be a list"),
    (b'{"events": [1]}', "events[0] must be an object"),
    (b'{"events": [{"action": 5}]}', "events[0].action must be a string"),
    (b'{"events": [{"action": "push", "target": "x"}]}', "events[0].target must be an object"),
    (b'{"events": [{"action": "push", "id": "1", "target": {"repository": ["a"], "digest": "x"}}]}',
     "repository must be a string"),
    (b'{"events": [{"action": "push", "id": "1", "target": {"repository": "a/b", "digest": "md5:1"}}]}',
     "digest is not a sha256"),
    (b'{"events": [{"action": "push", "target": {"repository": "a/b", "digest": "sha256:'
     + b"a" * 64 + b'"}}]}', "events[0].id is missing"),
    (b'{"events": [{"action": "push", "id": "1", "target": {"repository": "a/b\\u0000", "digest": "x"}}]}',
     "control characters"),
    (b'{"events": [{"action": "push", "id": "1", "target": {"repository": "a/\\ud800", "digest": "x"}}]}',
     "not valid Unicode"),
    (b'{"type": 7}', "'type' must be a string"),
    (b'{"type": "PUSH_ARTIFACT"}', "event_data must be an object"),
    (b'{"type": "PUSH_ARTIFACT", "event_data": {"repository": {"namespace": "a", "name": "b"}, "resources": []}}',
     "resources must be a non-empty list"),
])
def test_malformed_payloads_are_refused_with_a_reason(body, message):
    with pytest.raises(MalformedPayload, match=re.escape(message)):
        parse_payload(body)


def test_overlong_values_are_refused():
    event = manifest_event("team/" + "a" * 2000, "1.0")
    with pytest.raises(MalformedPayload, match="longer than"):
        parse_payload(envelope(event))


def test_too_many_events_are_refused():
    with pytest.raises(MalformedPayload, match="More than 1000 events"):
        parse_payload(json.dumps({"events": [{"action": "pull"}] * 1001}).encode())


def test_media_type_helpers():
    assert is_image_manifest("application/vnd.docker.distribution.manifest.v2+json")
    assert is_image_manifest("application/vnd.oci.image.index.v1+json")
    assert is_image_manifest("")  # Harbor does not say
    assert not is_image_manifest("application/vnd.cncf.helm.config.v1+json")
    assert not is_image_manifest("application/vnd.docker.distribution.manifest.v1+prettyjws")
    assert is_signature_tag("sha256-" + "a" * 64 + ".sig")
    assert not is_signature_tag("1.0")
