"""REST API of the rules app: CRUD, reordering and the validation box."""

from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from console.roles import Role
from converter.reference import InvalidReference
from rules import actions
from rules.api.serializers import (
    AddressSerializer,
    BackfillReportSerializer,
    ConvertNowSerializer,
    JobSerializer,
    MoveSerializer,
    RuleSerializer,
    ValidationResultSerializer,
)
from rules.models import ConversionJob, Rule


class RuleViewSet(viewsets.ModelViewSet):
    """Acceleration rules. Reading and validating need the viewer role; changes need operator."""

    queryset = Rule.objects.select_related("instance")
    serializer_class = RuleSerializer
    write_role = Role.OPERATOR
    action_roles = {"validate": Role.VIEWER, "backfill": (Role.VIEWER, Role.OPERATOR)}
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


    @extend_schema(request=None, responses=BackfillReportSerializer)
    @action(detail=True, methods=["get", "post"])
    def backfill(self, request, pk=None):
        """"Convert existing images": GET previews how many existing tags this rule would convert
        (nothing is written); POST requests their conversion. Reads the registry's catalog."""
        rule = self.get_object()
        try:
            report = actions.backfill_rule(rule, request.user) if request.method == "POST" else (
                actions.preview_backfill(rule))
        except DjangoValidationError as error:
            return Response({"detail": " ".join(error.messages)}, status=status.HTTP_409_CONFLICT)
        return Response(BackfillReportSerializer(report.as_dict()).data,
                        status=status.HTTP_202_ACCEPTED if request.method == "POST" else status.HTTP_200_OK)


class JobViewSet(viewsets.ReadOnlyModelViewSet):
    """Conversion jobs: list and read need the viewer role; retry, cancel and convert-now need operator."""

    queryset = ConversionJob.objects.select_related("instance")
    serializer_class = JobSerializer
    write_role = Role.OPERATOR
    filterset_fields = ["instance", "status", "namespace", "repository", "source_tag", "source_digest", "rule",
                        "trigger"]
    search_fields = ["namespace", "repository", "source_tag", "source_digest"]
    ordering_fields = ["created_at", "finished_at", "status", "repository"]
    ordering = ["-created_at", "-id"]

    def _answer(self, job, code=status.HTTP_200_OK):
        return Response(JobSerializer(job, context=self.get_serializer_context()).data, status=code)

    @extend_schema(request=None, responses=JobSerializer)
    @action(detail=True, methods=["post"])
    def retry(self, request, pk=None):
        """Queue a failed, cancelled or skipped job again (409 for other states)."""
        try:
            return self._answer(actions.retry_job(self.get_object()))
        except actions.JobActionRefused as error:
            return Response({"detail": " ".join(error.messages)}, status=status.HTTP_409_CONFLICT)

    @extend_schema(request=None, responses=JobSerializer)
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        """Cancel a queued job (409 for other states)."""
        try:
            return self._answer(actions.cancel_job(self.get_object()))
        except actions.JobActionRefused as error:
            return Response({"detail": " ".join(error.messages)}, status=status.HTTP_409_CONFLICT)

    @extend_schema(request=ConvertNowSerializer, responses=JobSerializer)
    @action(detail=False, methods=["post"], url_path="convert-now")
    def convert_now(self, request):
        """Convert any tag of an instance now: 201 with a new job, 200 with the existing one."""
        payload = ConvertNowSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        try:
            job, created = actions.convert_now(payload.validated_data["instance"], payload.validated_data["image"],
                                               requested_by=request.user)
        except InvalidReference as error:
            raise serializers.ValidationError({"image": [str(error)]}) from None
        except DjangoValidationError as error:
            raise serializers.ValidationError({"image": error.messages}) from None
        return self._answer(job, status.HTTP_201_CREATED if created else status.HTTP_200_OK)
