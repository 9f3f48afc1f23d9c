"""REST API of the pipeline (under /api/v1/): push events, images, conversion jobs and backfill.

Reading needs the viewer role. Retry, cancel, convert-now, backfill and deleting an image need
operator, as on the pages. The same verbs as the web UI are called (pipeline/actions.py,
pipeline/reconciler.py, pipeline/catalogue.py).
"""

from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from converter.reference import InvalidReference
from core.roles import Role
from pipeline import actions, catalogue, reconciler
from pipeline.api.serializers import (
    BackfillReportSerializer,
    CatalogueSerializer,
    ConvertNowSerializer,
    ImageDeleteSerializer,
    ImageQuerySerializer,
    JobSerializer,
    PushEventSerializer,
)
from pipeline.filters import PushEventFilter
from pipeline.models import ConversionJob, PushEvent
from rules.models import Rule


class PushEventViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Push events (read-only): every manifest push a registry reported, its outcome and why."""

    queryset = PushEvent.objects.select_related("instance", "matched_rule")
    serializer_class = PushEventSerializer
    filterset_class = PushEventFilter
    search_fields = ["namespace", "repository", "tag", "digest", "delivery_id"]
    ordering_fields = ["received_at", "namespace", "repository", "tag", "outcome", "reason"]
    ordering = ["-received_at", "-id"]

DELETE_STATUS = {catalogue.DeleteRefused.DISABLED: status.HTTP_409_CONFLICT,
                 catalogue.DeleteRefused.NOT_FOUND: status.HTTP_404_NOT_FOUND,
                 catalogue.DeleteRefused.INVALID: status.HTTP_400_BAD_REQUEST}


class ImageViewSet(viewsets.ViewSet):
    """The images of an instance, read live from its registry, beside their accelerated twins."""

    write_role = Role.OPERATOR

    @extend_schema(
        parameters=[ImageQuerySerializer],
        responses={200: CatalogueSerializer,
                   502: OpenApiResponse(description="The registry could not be listed; `detail` says why.")},
    )
    def list(self, request):
        """Repositories and tags of `?instance=`, each original beside its accelerated twin and job.

        Filter with `namespace` (exact) and `repository` (part of the name); 50 repositories per
        `page` (`pages` and `repository_count` say how many there are).
        """
        query = ImageQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        data = query.validated_data
        found = catalogue.list_images(data["instance"], data["namespace"], data["repository"], data["page"])
        if found.error:
            return Response({"detail": f"Could not list the images of {data['instance'].name}: {found.error}"},
                            status=status.HTTP_502_BAD_GATEWAY)
        return Response(CatalogueSerializer(found).data)

    @extend_schema(
        request=ImageDeleteSerializer,
        responses={200: OpenApiResponse(description="Deleted; `detail` names the image."),
                   404: OpenApiResponse(description="No manifest with that digest in the repository."),
                   409: OpenApiResponse(description="The registry has deletion disabled."),
                   502: OpenApiResponse(description="The registry refused or failed; `detail` says why.")},
    )
    @action(detail=False, methods=["post"], url_path="delete")
    def delete_image(self, request):
        """Delete one image (original or accelerated) by manifest digest; the other image of the pair stays."""
        serializer = ImageDeleteSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        try:
            catalogue.delete_image(data["instance"], data["repository"], data["digest"])
        except catalogue.DeleteRefused as error:
            return Response({"detail": error.message},
                            status=DELETE_STATUS.get(error.kind, status.HTTP_502_BAD_GATEWAY))
        return Response({"detail": f"Deleted {data['repository']}@{data['digest']}."})


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


class RuleBackfillViewSet(viewsets.GenericViewSet):
    """"Convert existing images" of one rule, at /api/v1/rules/{id}/backfill/ beside the rules API."""

    queryset = Rule.objects.select_related("instance")
    action_roles = {"backfill": (Role.VIEWER, Role.OPERATOR)}

    @extend_schema(request=None, responses=BackfillReportSerializer)
    @action(detail=True, methods=["get", "post"])
    def backfill(self, request, pk=None):
        """"Convert existing images": GET previews how many existing tags this rule would convert
        (nothing is written); POST requests their conversion. Reads the registry's catalog."""
        rule = self.get_object()
        try:
            report = reconciler.backfill_rule(rule, request.user) if request.method == "POST" else (
                reconciler.preview_backfill(rule))
        except DjangoValidationError as error:
            return Response({"detail": " ".join(error.messages)}, status=status.HTTP_409_CONFLICT)
        return Response(BackfillReportSerializer(report.as_dict()).data,
                        status=status.HTTP_202_ACCEPTED if request.method == "POST" else status.HTTP_200_OK)
