"""Serializers of the rules API; field validation comes from the model (rules/validators.py)."""

import copy

from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import serializers

from registries.models import Instance
from rules import actions
from rules.actions import DOWN, UP
from rules.models import ConversionJob, Rule


class RuleSerializer(serializers.ModelSerializer):
    """A rule. Creating one needs acceleration on for its instance; the instance cannot change later."""

    instance_name = serializers.CharField(source="instance.name", read_only=True)
    is_active = serializers.BooleanField(read_only=True, help_text="Enabled and its instance has acceleration on.")

    class Meta:
        model = Rule
        fields = [
            "id", "instance", "instance_name", "name", "description", "namespace", "repository_pattern",
            "tag_pattern", "enabled", "is_active", "position", "format", "prioritized_files", "chunk_size",
            "compression", "created_at", "updated_at",
        ]
        read_only_fields = ["position", "created_at", "updated_at"]
        # Name uniqueness is reported by Rule.clean() at the name, in the same words as the form.
        validators: list = []

    def validate_instance(self, value):
        if self.instance is not None and value.pk != self.instance.instance_id:
            raise serializers.ValidationError("A rule cannot move to another instance; create a new rule there.")
        return value

    def validate(self, attrs):
        rule = copy.copy(self.instance) if self.instance is not None else Rule()
        for key, value in attrs.items():
            setattr(rule, key, value)
        try:
            rule.clean()
        except DjangoValidationError as error:
            raise serializers.ValidationError(error.message_dict) from None
        attrs["prioritized_files"] = rule.prioritized_files
        return attrs

    def create(self, validated_data):
        return actions.save_rule(Rule(**validated_data))

    def update(self, rule, validated_data):
        for key, value in validated_data.items():
            setattr(rule, key, value)
        return actions.save_rule(rule)


class AddressSerializer(serializers.Serializer):
    address = serializers.CharField(max_length=4096, help_text="host[:port]/namespace/repository[:tag|@sha256:…]")


class MoveSerializer(serializers.Serializer):
    direction = serializers.ChoiceField(choices=[UP, DOWN])


class CriterionSerializer(serializers.Serializer):
    name = serializers.CharField()
    passed = serializers.BooleanField()
    detail = serializers.CharField()


class ReferenceSerializer(serializers.Serializer):
    host = serializers.CharField()
    namespace = serializers.CharField()
    repository = serializers.CharField()
    tag = serializers.CharField(allow_null=True)
    digest = serializers.CharField(allow_null=True)


class ValidationResultSerializer(serializers.Serializer):
    """The validation box's answer: the parsed address, the verdict and every criterion."""

    address = serializers.CharField()
    reference = ReferenceSerializer()
    matched = serializers.BooleanField()
    criteria = CriterionSerializer(many=True)
    first_failure = CriterionSerializer(allow_null=True)


class JobSerializer(serializers.ModelSerializer):
    """A conversion job, read-only: progress, result and why it failed or was skipped."""

    instance_name = serializers.CharField(source="instance.name", read_only=True)
    source = serializers.CharField(read_only=True, help_text="host/namespace/repository:tag")
    accelerated = serializers.CharField(read_only=True, help_text="The accelerated image, once pushed.")
    percent = serializers.IntegerField(read_only=True)
    is_terminal = serializers.BooleanField(read_only=True)

    class Meta:
        model = ConversionJob
        fields = [
            "id", "instance", "instance_name", "namespace", "repository", "source_tag", "source_digest", "source",
            "rule", "event", "trigger", "format", "options", "status", "is_terminal", "percent", "attempts",
            "retries", "last_error", "reason", "created_at", "started_at", "finished_at", "bytes_in", "bytes_out",
            "bytes_total", "layers", "log", "result_tag", "result_digest", "result_size", "accelerated",
        ]
        read_only_fields = fields


class BackfillReportSerializer(serializers.Serializer):
    """What "Convert existing images" found (GET) or requested (POST) for one rule."""

    repositories = serializers.IntegerField(help_text="Repositories of the rule's namespace that were walked.")
    tags = serializers.IntegerField(help_text="Tags looked at.")
    with_twin = serializers.IntegerField(help_text="Matching tags that already have an accelerated twin.")
    with_job = serializers.IntegerField(help_text="Matching tags that already have a conversion job.")
    requested = serializers.IntegerField(help_text="Tags that would be (GET) or were (POST) requested.")
    errors = serializers.ListField(child=serializers.CharField(), help_text="Registry errors met on the way.")


class ConvertNowSerializer(serializers.Serializer):
    """Convert one tag of an instance now, with or without a matching rule."""

    instance = serializers.PrimaryKeyRelatedField(queryset=Instance.objects.all())
    image = serializers.CharField(max_length=4096, help_text="namespace/repository:tag, or the full address.")
