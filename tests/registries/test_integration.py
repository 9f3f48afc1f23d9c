"""End to end: Debian's docker-registry notifies the live console; pushes become explained events."""

import time

import pytest

from pipeline.models import PushEvent
from registries.models import Instance
from rules.models import Rule
from tests.support.images import Platform, push_image

pytestmark = [pytest.mark.registry, pytest.mark.django_db(transaction=True)]


def wait_for_events(instance: Instance, count: int, timeout: float = 90) -> list[PushEvent]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        events = list(PushEvent.objects.filter(instance=instance).order_by("id"))
        if len(events) >= count:
            return events
        time.sleep(0.2)
    raise AssertionError(f"expected {count} push events, got {PushEvent.objects.filter(instance=instance).count()}")


def test_pushes_to_a_real_registry_are_recorded_with_outcome_and_reason(live_server, registry_factory, tmp_path):
    instance = Instance.objects.create(name="local", url="http://127.0.0.1:1", acceleration_enabled=True)
    rule = Rule.objects.create(instance=instance, name="web images", namespace="team", repository_pattern="web",
                               tag_pattern=r"\d+\.\d+")
    running = registry_factory(notify_url=f"{live_server.url}/webhooks/registry/{instance.id}/",
                               notify_secret=instance.webhook_secret)
    instance.url = running.url
    instance.save()

    matching = push_image(tmp_path, f"{running.host}/team/web:1.0")
    (converted,) = wait_for_events(instance, 1)
    assert (converted.namespace, converted.repository, converted.tag) == ("team", "web", "1.0")
    assert converted.digest == matching
    assert converted.media_type == "application/vnd.oci.image.manifest.v1+json"
    assert (converted.source, converted.outcome, converted.reason) == ("distribution", "conversion_requested",
                                                                       "rule_matched")
    assert converted.matched_rule == rule
    assert "Rule 'web images' matched" in converted.reason_detail

    push_image(tmp_path, f"{running.host}/team/api:1.0", [Platform(layers=[{"api.txt": b"api\n"}])])
    skipped = wait_for_events(instance, 2)[1]
    assert (skipped.repository, skipped.outcome, skipped.reason) == ("api", "skipped", "no_rule_matched")
    assert skipped.matched_rule is None
    assert "Closest rule: 'web images'" in skipped.reason_detail and "failed on repository" in skipped.reason_detail

    push_image(tmp_path, f"{running.host}/team/web:1.0-apparate", [Platform(layers=[{"x": b"accelerated\n"}])])
    accelerated = wait_for_events(instance, 3)[2]
    assert (accelerated.tag, accelerated.reason) == ("1.0-apparate", "accelerated_tag")

    # Blob pushes were reported too (every layer and config) but none was stored.
    assert PushEvent.objects.filter(instance=instance).count() == 3
    assert not PushEvent.objects.exclude(media_type__contains="manifest").exists()
