"""Serializers of the registries API; field validation comes from the model (registries/validators.py).

Secrets are write-only: `password` is accepted but never returned, and the webhook secret is
returned only by the create response and the rotate-secret action.
"""

from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import serializers

from registries import actions
from registries.models import Instance, PushEvent
from registries.validators import validate_credentials, validate_manifest_digest, validate_repository_path


class InstanceSerializer(serializers.ModelSerializer):
    """A registry instance. Omit `password` to keep the stored one; send "" to clear it."""

    password = serializers.CharField(
        write_only=True, required=False, allow_blank=True, trim_whitespace=False, max_length=10000,
        style={"input_type": "password"},
        help_text="Password or token (write-only). Omit to keep the stored one; an empty string clears it.",
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


class PushEventSerializer(serializers.ModelSerializer):
    instance_name = serializers.CharField(source="instance.name", read_only=True)
    matched_rule_name = serializers.CharField(source="matched_rule.name", read_only=True, default=None)
    outcome_display = serializers.CharField(source="get_outcome_display", read_only=True)
    reason_display = serializers.CharField(source="get_reason_display", read_only=True)

    class Meta:
        model = PushEvent
        fields = [
            "id", "instance", "instance_name", "received_at", "source", "delivery_id", "actor", "namespace",
            "repository", "tag", "digest", "media_type", "outcome", "outcome_display", "reason", "reason_display",
            "reason_detail", "matched_rule", "matched_rule_name",
        ]
        read_only_fields = fields


class ImageQuerySerializer(serializers.Serializer):
    """Which images to list: one instance, optionally narrowed by namespace and part of the repository name."""

    instance = serializers.PrimaryKeyRelatedField(queryset=Instance.objects.all())
    namespace = serializers.CharField(required=False, allow_blank=True, max_length=255, default="")
    repository = serializers.CharField(required=False, allow_blank=True, max_length=255, default="",
                                       help_text="Part of the repository name below the namespace.")
    page = serializers.IntegerField(required=False, min_value=1, default=1,
                                    help_text="Page of repositories (50 per page).")


class ImageInfoSerializer(serializers.Serializer):
    tag = serializers.CharField()
    digest = serializers.CharField(help_text="Manifest digest; delete by this.")
    size = serializers.IntegerField(allow_null=True, help_text="Config and layers, in bytes.")
    error = serializers.CharField(help_text="Why the image could not be read, if it could not.")


class TagRowSerializer(serializers.Serializer):
    tag = serializers.CharField(help_text="The source tag (for an orphan: its twin's tag without the suffix).")
    orphan = serializers.BooleanField(help_text="The accelerated image remains but its source tag is gone.")
    original = ImageInfoSerializer(source="source", allow_null=True)
    accelerated = ImageInfoSerializer(source="twin", allow_null=True)
    job = serializers.IntegerField(source="job.pk", allow_null=True, default=None,
                                   help_text="The latest conversion job of the tag.")
    job_status = serializers.CharField(source="job.status", allow_null=True, default=None)


class RepositoryImagesSerializer(serializers.Serializer):
    path = serializers.CharField(help_text="namespace/repository")
    error = serializers.CharField()
    tags = TagRowSerializer(source="rows", many=True)


class CatalogueSerializer(serializers.Serializer):
    page = serializers.IntegerField(source="page.number", help_text="This page of repositories.")
    pages = serializers.IntegerField(source="page.paginator.num_pages", help_text="Pages of repositories in all.")
    repository_count = serializers.IntegerField(source="page.paginator.count",
                                                help_text="Repositories matching the filters, on all pages.")
    original_bytes = serializers.IntegerField()
    accelerated_bytes = serializers.IntegerField()
    repositories = RepositoryImagesSerializer(many=True)


class ImageDeleteSerializer(serializers.Serializer):
    """One image to delete, by manifest digest. Its twin (or source) is another manifest and stays."""

    instance = serializers.PrimaryKeyRelatedField(queryset=Instance.objects.all())
    repository = serializers.CharField(max_length=1024, validators=[validate_repository_path],
                                       help_text="namespace/repository")
    digest = serializers.CharField(max_length=71, validators=[validate_manifest_digest])
