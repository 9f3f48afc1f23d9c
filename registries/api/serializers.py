"""Serializers of the registries API; field validation comes from the model (registries/validators.py).

Secrets are write-only: `password` is accepted but never returned, and the webhook secret is
returned only by the create response and the rotate-secret action.
"""

from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import serializers

from registries import actions
from registries.models import Instance
from registries.validators import validate_credentials, validate_password_follows_url


class InstanceSerializer(serializers.ModelSerializer):
    """A registry instance. Omit `password` to keep the stored one; send "" to clear it.

    Changing `url` to another host, port or scheme needs `password` again (or "" to clear it).
    """

    password = serializers.CharField(
        write_only=True, required=False, allow_blank=True, trim_whitespace=False, max_length=10000,
        style={"input_type": "password"},
        help_text="Password or token (write-only). Omit to keep the stored one; an empty string clears it. "
                  "Required again when `url` moves to another host, port or scheme.",
    )
    has_password = serializers.SerializerMethodField(help_text="Whether a password or token is stored.")
    webhook_url = serializers.SerializerMethodField(help_text="Where the registry posts push notifications.")

    class Meta:
        model = Instance
        fields = [
            "id", "name", "url", "description", "username", "password", "has_password", "verify_tls", "ca_bundle",
            "acceleration_enabled", "acceleration_changed_at", "webhook_url", "created_at", "updated_at",
        ]
        read_only_fields = ["acceleration_enabled", "acceleration_changed_at", "created_at", "updated_at"]

    def get_has_password(self, instance) -> bool:
        return bool(instance.password)

    def get_webhook_url(self, instance) -> str:
        return actions.webhook_url(instance, self.context.get("request"))

    def validate(self, attrs):
        stored = self.instance
        username = attrs.get("username", stored.username if stored else "")
        password = attrs.get("password", stored.password if stored else "")
        try:
            if stored is not None and "url" in attrs:
                validate_password_follows_url(stored.url, attrs["url"], bool(stored.password), "password" in attrs)
            validate_credentials(username, password)
        except DjangoValidationError as error:
            raise serializers.ValidationError(error.message_dict) from None
        return attrs


class InstanceCreatedSerializer(InstanceSerializer):
    """The create response: the instance plus its webhook secret, returned this once."""

    webhook_secret = serializers.CharField(read_only=True, help_text="Shown only in this response.")

    class Meta(InstanceSerializer.Meta):
        fields = [*InstanceSerializer.Meta.fields, "webhook_secret"]


class AccelerationSerializer(serializers.Serializer):
    enabled = serializers.BooleanField()
    confirm = serializers.BooleanField(
        default=False, help_text="Required (true) to enable: original and accelerated images are both stored.",
    )


class ConnectionResultSerializer(serializers.Serializer):
    ok = serializers.BooleanField()
    summary = serializers.CharField()
    detail = serializers.CharField(allow_blank=True)
    hint = serializers.CharField(allow_blank=True)


class WebhookSecretSerializer(serializers.Serializer):
    webhook_secret = serializers.CharField(help_text="The new secret, shown only in this response.")


