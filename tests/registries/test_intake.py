"""Webhook intake: authentication, size limits, hostile bodies, and the decision stored per push."""

import json
import os
import random
import threading

import pytest
from django.db import connection
from django.test import Client

from pipeline.models import PushEvent
from registries.models import Instance
from tests.registries.conftest import (
    DISTRIBUTION_TYPE,
    blob_event,
    digest_of,
    envelope,
    harbor_push,
    manifest_event,
)

pytestmark = pytest.mark.django_db


def only_event() -> PushEvent:
    (event,) = PushEvent.objects.all()
    return event


# --- Authentication, methods, limits ------------------------------------------------------------

def test_matching_push_requests_conversion(instance, make_rule, post_webhook):
    rule = make_rule(instance, "web releases", repository_pattern="web", tag_pattern=r"\d+\.\d+")
    response = post_webhook(instance, envelope(manifest_event("team/web", "1.2", event_id="e1")))
    assert response.status_code == 202
    body = response.json()
    assert body["received"] == 1 and body["ignored"] == 0
    event = only_event()
    assert body["events"] == [{"id": event.pk, "outcome": "conversion_requested", "reason": "rule_matched"}]
    assert (event.namespace, event.repository, event.tag, event.source) == ("team", "web", "1.2", "distribution")
    assert event.matched_rule == rule
    assert "web releases" in event.reason_detail and "team/web:1.2-apparate" in event.reason_detail
    assert event.actor == "ci-bot"


def test_bearer_prefix_is_accepted(instance, make_rule, post_webhook):
    response = post_webhook(instance, envelope(manifest_event("team/web")), secret=f"Bearer {instance.webhook_secret}")
    assert response.status_code == 202


@pytest.mark.parametrize("secret", ["", "wrong", "Bearer wrong", "Bearer ", "Basic abc", "ünïcødé-secret"])
def test_wrong_or_missing_secret_is_401_and_stores_nothing(instance, post_webhook, secret):
    response = post_webhook(instance, envelope(manifest_event("team/web")), secret=secret)
    assert response.status_code == 401
    assert "secret" in response.json()["error"]
    assert instance.webhook_secret not in response.content.decode()
    assert not PushEvent.objects.exists()


def test_secret_of_another_instance_is_refused(instance, post_webhook):
    other = Instance.objects.create(name="other", url="https://other.example")
    response = post_webhook(instance, envelope(manifest_event("team/web")), secret=other.webhook_secret)
    assert response.status_code == 401


@pytest.mark.parametrize("path", ["999999", "abc", "1.5", "99999999999999999999999", "%C2%B2", "-1"])
def test_unknown_instance_is_404(client, instance, path):
    response = client.post(f"/webhooks/registry/{path}/", data=envelope(), content_type=DISTRIBUTION_TYPE,
                           HTTP_AUTHORIZATION=instance.webhook_secret)
    assert response.status_code == 404
    assert response.json()["error"].startswith("Unknown instance")


@pytest.mark.parametrize("method", ["get", "put", "delete", "patch"])
def test_only_post_is_allowed(client, instance, method):
    response = getattr(client, method)(f"/webhooks/registry/{instance.pk}/", HTTP_AUTHORIZATION=instance.webhook_secret)
    assert response.status_code == 405


def test_no_login_or_csrf_token_needed(instance):
    client = Client(enforce_csrf_checks=True)
    response = client.post(f"/webhooks/registry/{instance.pk}/", data=envelope(manifest_event("team/web")),
                           content_type=DISTRIBUTION_TYPE, HTTP_AUTHORIZATION=instance.webhook_secret)
    assert response.status_code == 202


def test_body_over_one_mebibyte_is_413(instance, post_webhook):
    body = envelope(manifest_event("team/web"))
    oversized = body[:-1] + b" " * ((1 << 20) + 1 - len(body)) + b"}"
    assert len(oversized) == (1 << 20) + 1
    response = post_webhook(instance, oversized)
    assert response.status_code == 413
    assert not PushEvent.objects.exists()
    exactly = body[:-1] + b" " * ((1 << 20) - len(body)) + b"}"
    assert post_webhook(instance, exactly).status_code == 202


def test_declared_length_over_limit_is_413_without_reading(instance, post_webhook):
    response = post_webhook(instance, b"{}", CONTENT_LENGTH=str(50 << 20))
    assert response.status_code == 413


def test_body_longer_than_limit_is_413_even_if_length_header_is_small(instance, post_webhook, settings):
    settings.APPARATE_WEBHOOK_MAX_BYTES = 100
    response = post_webhook(instance, b"[" * 200, CONTENT_LENGTH="")
    assert response.status_code in (400, 413)  # no length: nothing is read beyond the limit
    response = post_webhook(instance, b" " * 150 + b"{}")
    assert response.status_code == 413


def test_bad_content_length_is_400(instance, post_webhook):
    assert post_webhook(instance, b"{}", CONTENT_LENGTH="lots").status_code == 400


@pytest.mark.parametrize("body", [
    b"",
    b"not json",
    b"\xff\xfe\xfa\x00\x01",
    "{\"events\": [{\"action\": \"push\", \"id\": \"é\"}]}".encode("latin-1"),
    b"[" * 400_000 + b"]" * 400_000,
    b'{"a":' * 150_000 + b"1" + b"}" * 150_000,
    b'{"events": [' + b"9" * 100_000 + b"]}",
    b'{"events": [1e999999, -1e999999, NaN]}',
    b'{"events": "push"}',
    b'{"events": [{"action": "push", "id": "x", "target": {"repository": 5, "digest": null}}]}',
    b'{"events": [{"action": "push", "id": {"a": 1}, "target": {"repository": "a/b", "digest": "sha256:'
    + b"0" * 64 + b'"}}]}',
    b'{"events": [{"action": "push", "id": "1", "target": {"repository": "a/b\\u0000c", "digest": "x"}}]}',
    b'{"events": [{"action": "push", "id": "1", "target": {"repository": "a/\\udfff", "digest": "x"}}]}',
    b'{"type": "PUSH_ARTIFACT", "event_data": {"resources": "all", "repository": {}}}',
    b'{"type": "PUSH_ARTIFACT", "occur_at": [], "event_data": {"resources": [{"digest": "sha256:'
    + b"0" * 64 + b'"}], "repository": {"namespace": "a", "name": "b"}}}',
    b"null",
    b"12345",
], ids=lambda body: f"{len(body)}-bytes-{body[:12]!r}")
def test_hostile_bodies_are_400_with_a_json_reason(instance, post_webhook, body):
    response = post_webhook(instance, body)
    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    assert response.json()["error"]
    assert not PushEvent.objects.exists()


def test_random_bytes_never_give_a_500(instance, post_webhook):
    generator = random.Random(1234)
    seeds = [envelope(manifest_event("team/web")), harbor_push("team", "web")]
    for _ in range(60):
        body = bytearray(generator.choice(seeds))
        for _ in range(generator.randint(1, 8)):
            body[generator.randrange(len(body))] = generator.randrange(256)
        assert post_webhook(instance, bytes(body)).status_code in (202, 400)


def test_a_malformed_event_rejects_the_whole_delivery(instance, make_rule, post_webhook):
    make_rule(instance)
    bad = manifest_event("team/web", "2.0")
    bad["target"]["tag"] = 2
    response = post_webhook(instance, envelope(manifest_event("team/web", "1.0"), bad))
    assert response.status_code == 400
    assert "events[1].target.tag" in response.json()["error"]
    assert not PushEvent.objects.exists()


# --- Decisions ------------------------------------------------------------------------------------

def test_harbor_push_artifact_is_recorded(instance, make_rule, post_webhook):
    rule = make_rule(instance, namespace="library")
    response = post_webhook(instance, harbor_push("library", "nginx", "1.27"), CONTENT_TYPE="application/json")
    assert response.status_code == 202
    event = only_event()
    assert (event.source, event.outcome, event.matched_rule) == ("harbor", "conversion_requested", rule)
    assert (event.namespace, event.repository, event.tag, event.actor) == ("library", "nginx", "1.27", "admin")
    # Harbor resends the same body when it thinks the delivery failed.
    post_webhook(instance, harbor_push("library", "nginx", "1.27"))
    assert PushEvent.objects.latest("id").reason == "already_seen"


def test_blob_pushes_are_not_stored(instance, make_rule, post_webhook):
    make_rule(instance)
    response = post_webhook(instance, envelope(blob_event("team/web"), blob_event("team/web")))
    assert response.status_code == 202
    assert response.json() == {"received": 0, "ignored": 2, "events": []}
    assert not PushEvent.objects.exists()


def test_pulls_and_deletes_are_not_stored(instance, post_webhook):
    body = envelope(manifest_event("team/web", action="pull"), manifest_event("team/web", action="delete"))
    assert post_webhook(instance, body).json()["ignored"] == 2
    assert not PushEvent.objects.exists()


def test_duplicate_delivery_id_is_already_seen(instance, make_rule, post_webhook):
    make_rule(instance)
    event = manifest_event("team/web", "1.0", event_id="delivery-7")
    post_webhook(instance, envelope(event))
    post_webhook(instance, envelope(event))
    first, second = PushEvent.objects.order_by("id")
    assert first.outcome == "conversion_requested"
    assert (second.outcome, second.reason) == ("skipped", "already_seen")
    assert "delivery-7" in second.reason_detail and f"#{first.pk}" in second.reason_detail


def test_same_digest_pushed_again_is_already_seen(instance, make_rule, post_webhook):
    make_rule(instance)
    digest = digest_of("content")
    post_webhook(instance, envelope(manifest_event("team/web", "1.0", digest)))
    post_webhook(instance, envelope(manifest_event("team/web", "latest", digest)))
    first, second = PushEvent.objects.order_by("id")
    assert first.outcome == "conversion_requested"
    assert (second.outcome, second.reason) == ("skipped", "already_seen")
    assert digest in second.reason_detail and "'1.0'" in second.reason_detail
    # The same digest in another repository is other content as far as tags go: converted too.
    post_webhook(instance, envelope(manifest_event("team/api", "1.0", digest)))
    assert PushEvent.objects.latest("id").outcome == "conversion_requested"


def test_accelerated_tag_is_skipped(instance, make_rule, post_webhook):
    make_rule(instance)
    post_webhook(instance, envelope(manifest_event("team/web", "1.0-apparate")))
    event = only_event()
    assert (event.outcome, event.reason) == ("skipped", "accelerated_tag")
    assert "-apparate" in event.reason_detail


def test_acceleration_off_is_skipped(instance, make_rule, post_webhook):
    make_rule(instance)
    Instance.objects.filter(pk=instance.pk).update(acceleration_enabled=False)
    post_webhook(instance, envelope(manifest_event("team/web", "1.0")))
    event = only_event()
    assert (event.outcome, event.reason) == ("skipped", "acceleration_off")
    assert "Acceleration is off for instance 'main'" in event.reason_detail


def test_no_matching_rule_names_the_closest_rule_and_criterion(instance, make_rule, post_webhook):
    make_rule(instance, "other team", namespace="other", repository_pattern="api")
    make_rule(instance, "web releases", repository_pattern="web", tag_pattern=r"\d+\.\d+")
    post_webhook(instance, envelope(manifest_event("team/web", "1.0-rc1")))
    event = only_event()
    assert (event.outcome, event.reason, event.matched_rule) == ("skipped", "no_rule_matched", None)
    assert "Closest rule: 'web releases'" in event.reason_detail
    assert "failed on tag" in event.reason_detail and "1.0-rc1" in event.reason_detail


def test_disabled_rule_is_named_as_closest(instance, make_rule, post_webhook):
    make_rule(instance, "paused", enabled=False)
    post_webhook(instance, envelope(manifest_event("team/web", "1.0")))
    event = only_event()
    assert event.reason == "no_rule_matched"
    assert "'paused'" in event.reason_detail and "enabled" in event.reason_detail


def test_no_rules_at_all_says_so(instance, post_webhook):
    post_webhook(instance, envelope(manifest_event("team/web", "1.0")))
    event = only_event()
    assert event.reason == "no_rule_matched"
    assert "has no acceleration rules" in event.reason_detail and "'team'" in event.reason_detail


def test_push_by_digest_without_tag_is_skipped(instance, make_rule, post_webhook):
    make_rule(instance)
    post_webhook(instance, envelope(manifest_event("team/web", tag=None)))
    event = only_event()
    assert (event.reason, event.tag) == ("no_tag", "")
    assert "without a tag" in event.reason_detail


@pytest.mark.parametrize("media_type", [
    "application/vnd.cncf.helm.config.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
    "application/vnd.in-toto+json",
])
def test_non_image_manifest_is_skipped(instance, make_rule, post_webhook, media_type):
    make_rule(instance)
    post_webhook(instance, envelope(manifest_event("team/web", "1.0", media_type=media_type)))
    event = only_event()
    assert event.reason == "not_image_manifest"
    assert media_type in event.reason_detail


def test_signature_tag_is_not_an_image(instance, make_rule, post_webhook):
    make_rule(instance)
    post_webhook(instance, envelope(manifest_event("team/web", "sha256-" + "a" * 64 + ".sig")))
    assert only_event().reason == "not_image_manifest"


def test_repository_without_namespace_is_an_invalid_reference(instance, make_rule, post_webhook):
    make_rule(instance)
    post_webhook(instance, envelope(manifest_event("alpine", "3.20")))
    event = only_event()
    assert event.reason == "invalid_reference"
    assert "namespace" in event.reason_detail


def test_invalid_tag_characters_are_an_invalid_reference(instance, make_rule, post_webhook):
    make_rule(instance)
    post_webhook(instance, envelope(manifest_event("team/web", "bad tag!")))
    assert only_event().reason == "invalid_reference"


def test_url_in_the_body_is_not_used(instance, make_rule, post_webhook):
    make_rule(instance)
    event = manifest_event("team/web", "1.0")
    event["target"]["url"] = "http://169.254.169.254/latest/meta-data/"
    post_webhook(instance, envelope(event))
    stored = only_event()
    assert stored.outcome == "conversion_requested"
    assert "169.254" not in json.dumps(list(PushEvent.objects.values()), default=str)


def test_events_are_not_audited(instance, make_rule, post_webhook):
    from core.models import AuditEntry

    make_rule(instance)
    before = AuditEntry.objects.count()
    post_webhook(instance, envelope(manifest_event("team/web", "1.0")))
    assert AuditEntry.objects.count() == before


# --- Concurrency ----------------------------------------------------------------------------------

def _deliver_concurrently(instance: Instance, bodies: list[bytes]) -> list[int]:
    barrier = threading.Barrier(len(bodies))
    statuses: list[int] = []

    def deliver(body: bytes):
        try:
            barrier.wait(timeout=30)
            response = Client().post(f"/webhooks/registry/{instance.pk}/", data=body, content_type=DISTRIBUTION_TYPE,
                                     HTTP_AUTHORIZATION=instance.webhook_secret)
            statuses.append(response.status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=deliver, args=(body,)) for body in bodies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return statuses


@pytest.mark.django_db(transaction=True)
def test_twenty_identical_concurrent_deliveries_request_one_conversion(make_rule):
    instance = Instance.objects.create(name="race", url="http://registry.example:5000", acceleration_enabled=True)
    make_rule(instance)
    body = envelope(manifest_event("team/web", "1.0", event_id="same-delivery"))
    statuses = _deliver_concurrently(instance, [body] * 20)
    assert statuses == [202] * 20
    events = PushEvent.objects.filter(instance=instance)
    assert events.count() == 20
    assert events.filter(outcome="conversion_requested").count() == 1
    assert events.filter(outcome="skipped", reason="already_seen").count() == 19


@pytest.mark.django_db(transaction=True)
def test_concurrent_deliveries_of_one_digest_under_different_ids_request_one_conversion(make_rule):
    instance = Instance.objects.create(name="race2", url="http://registry.example:5000", acceleration_enabled=True)
    make_rule(instance)
    digest = digest_of(os.urandom(8).hex())
    bodies = [envelope(manifest_event("team/web", f"v{n}", digest)) for n in range(10)]
    assert _deliver_concurrently(instance, bodies) == [202] * 10
    assert PushEvent.objects.filter(instance=instance, outcome="conversion_requested").count() == 1
    assert PushEvent.objects.filter(instance=instance, reason="already_seen").count() == 9
