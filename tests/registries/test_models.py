"""Model, validators, form and action units of the registries app."""

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection

from core.roles import Role
from pipeline.actions import record_push
from pipeline.intake import PushRecord
from pipeline.models import PushEvent
from registries import actions
from registries.forms import InstanceForm
from registries.models import Instance
from registries.validators import validate_credentials

pytestmark = pytest.mark.django_db


def record(**fields) -> PushRecord:
    values = {"source": "distribution", "delivery_id": "d1", "namespace": "team", "repository": "web", "tag": "1.0",
              "digest": "sha256:" + "a" * 64, "media_type": "application/vnd.oci.image.manifest.v1+json"}
    values.update(fields)
    return PushRecord(**values)


def test_instance_defaults_and_secrets_at_rest():
    instance = Instance.objects.create(name="h", url="https://Harbor.Example:8443/", password="pw-1")
    assert instance.host == "harbor.example:8443" and instance.base_url == "https://Harbor.Example:8443"
    assert not instance.acceleration_enabled and instance.verify_tls
    assert len(instance.webhook_secret) >= 40
    assert Instance.objects.create(name="g", url="https://g.example").webhook_secret != instance.webhook_secret
    with connection.cursor() as cursor:
        cursor.execute("SELECT password, webhook_secret FROM registries_instance WHERE id = %s", [instance.pk])
        stored_password, stored_secret = cursor.fetchone()
    assert "pw-1" not in stored_password and instance.webhook_secret not in stored_secret


def test_full_clean_uses_the_field_validators():
    with pytest.raises(ValidationError) as error:
        Instance(name="h", url="https://h.example/path", ca_bundle="x").full_clean()
    assert set(error.value.message_dict) == {"url", "ca_bundle"}


@pytest.mark.parametrize("username, password, field", [("u", "", "password"), ("", "p", "username")])
def test_credentials_go_together(username, password, field):
    with pytest.raises(ValidationError) as error:
        validate_credentials(username, password)
    assert field in error.value.message_dict
    validate_credentials("", "")
    validate_credentials("u", "p")


def test_form_never_renders_the_stored_password():
    instance = Instance.objects.create(name="h", url="https://h.example", username="u", password="stored-pw-9")
    html = InstanceForm(instance=instance).as_div()
    assert "stored-pw-9" not in html and "clear_password" in html
    assert "clear_password" not in InstanceForm().as_div()
    assert "webhook_secret" not in html


def test_webhook_secret_check():
    created = Instance.objects.create(name="h", url="https://h.example")
    secret = created.webhook_secret
    instance = actions.webhook_instance(str(created.pk))  # the secret as stored: encrypted, for the check
    assert instance.stored_webhook_secret != secret and secret not in instance.stored_webhook_secret
    assert actions.check_webhook_secret(instance, secret)
    assert actions.check_webhook_secret(instance, f"Bearer {secret}")
    assert actions.check_webhook_secret(instance, f"bearer  {secret} ")
    assert not actions.check_webhook_secret(instance, secret[:-1])
    assert not actions.check_webhook_secret(instance, "")
    assert not actions.check_webhook_secret(instance, "\udcff\u00e9")


def test_webhook_url_without_request_or_public_url_is_a_path(settings):
    instance = Instance.objects.create(name="h", url="https://h.example")
    assert actions.webhook_url(instance) == f"/webhooks/registry/{instance.pk}/"
    settings.APPARATE_PUBLIC_URL = "https://console.example"
    assert actions.webhook_url(instance) == f"https://console.example/webhooks/registry/{instance.pk}/"


def test_enable_needs_confirm_and_is_idempotent(make_user):
    user = make_user(Role.ADMIN)
    instance = Instance.objects.create(name="h", url="https://h.example")
    with pytest.raises(actions.ConfirmationRequired, match="extra registry storage"):
        actions.enable_acceleration(instance, user, confirm=False)
    instance.refresh_from_db()
    assert not instance.acceleration_enabled
    actions.enable_acceleration(instance, user, confirm=True)
    changed_at = instance.acceleration_changed_at
    actions.enable_acceleration(instance, user, confirm=True)
    assert instance.acceleration_enabled and instance.acceleration_changed_at == changed_at
    actions.disable_acceleration(instance, user)
    assert not instance.acceleration_enabled and instance.acceleration_changed_at > changed_at


def test_record_push_and_the_one_conversion_constraint(make_rule):
    instance = Instance.objects.create(name="h", url="https://h.example", acceleration_enabled=True)
    rule = make_rule(instance)
    event = record_push(instance, record())
    assert (event.outcome, event.matched_rule, event.source) == ("conversion_requested", rule, "distribution")
    assert event.image == "team/web:1.0" and event.outcome_colour == "green"
    assert str(event) == "team/web:1.0 (Conversion requested)"
    with pytest.raises(IntegrityError):
        PushEvent.objects.create(instance=instance, outcome="conversion_requested", reason="rule_matched",
                                 namespace="team", repository="web", digest=event.digest, delivery_id="x")


def test_rule_deletion_keeps_the_event(make_rule):
    instance = Instance.objects.create(name="h", url="https://h.example", acceleration_enabled=True)
    rule = make_rule(instance)
    event = record_push(instance, record())
    rule.delete()
    event.refresh_from_db()
    assert event.matched_rule is None and "team apps" in event.reason_detail


def test_delete_instance_counts(make_rule):
    instance = Instance.objects.create(name="h", url="https://h.example", acceleration_enabled=True)
    make_rule(instance)
    record_push(instance, record())
    record_push(instance, record(delivery_id="d2", tag="2.0"))
    assert actions.delete_instance(instance) == {"rules": 1, "events": 2}
    assert not PushEvent.objects.exists()
