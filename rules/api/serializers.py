"""Serializers of the rules API; field validation comes from the model (rules/validators.py)."""

import copy

from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import serializers

from rules import actions
from rules.actions import DOWN, UP
from rules.models import Rule


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


