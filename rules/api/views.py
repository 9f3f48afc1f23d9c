"""REST API of the rules app: CRUD, reordering and the validation box."""

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from converter.reference import InvalidReference
from core.roles import Role
from rules import actions
from rules.api.serializers import AddressSerializer, MoveSerializer, RuleSerializer, ValidationResultSerializer
from rules.models import Rule


class RuleViewSet(viewsets.ModelViewSet):
    """Acceleration rules. Reading and validating need the viewer role; changes need operator."""

    queryset = Rule.objects.select_related("instance")
    serializer_class = RuleSerializer
    write_role = Role.OPERATOR
    action_roles = {"validate": Role.VIEWER}
    filterset_fields = ["instance", "enabled", "namespace", "format", "compression"]
    search_fields = ["name", "description", "namespace", "repository_pattern", "tag_pattern"]
    ordering_fields = ["position", "name", "namespace", "created_at", "updated_at", "instance__name"]
    ordering = ["instance__name", "position", "id"]

    def perform_destroy(self, instance):
        actions.delete_rule(instance)

    @extend_schema(request=MoveSerializer, responses=RuleSerializer)
    @action(detail=True, methods=["post"])
    def move(self, request, pk=None):
        """Move the rule one place up or down in its instance's evaluation order."""
        rule = self.get_object()
        payload = MoveSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        actions.move_rule(rule, payload.validated_data["direction"])
        return Response(RuleSerializer(rule, context=self.get_serializer_context()).data)

    @extend_schema(request=AddressSerializer, responses=ValidationResultSerializer)
    @action(detail=True, methods=["post"])
    def validate(self, request, pk=None):
        """Check an image address against this rule, criterion by criterion. Changes nothing."""
        rule = self.get_object()
        payload = AddressSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        address = payload.validated_data["address"]
        try:
            reference, evaluation = actions.validate_address(rule, address)
        except InvalidReference as error:
            raise serializers.ValidationError({"address": [str(error)]}) from None
        result = {
            "address": str(reference),
            "reference": reference,
            "matched": evaluation.matched,
            "criteria": evaluation.criteria,
            "first_failure": evaluation.first_failure,
        }
        return Response(ValidationResultSerializer(result).data, status=status.HTTP_200_OK)


