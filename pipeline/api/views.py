"""REST API of the pipeline (under /api/v1/): push events, images, conversion jobs, operations and backfill.

Reading needs the viewer role. Retry, cancel, convert-now, backfill and deleting an image need
operator, as on the pages; refreshing the images needs viewer (it only reads the registry). The
same verbs as the web UI are called (pipeline/actions.py, pipeline/operations.py,
pipeline/catalogue.py). Slow work answers 202 with an operation to poll at /api/v1/operations/{id}/.
"""

from django.core.exceptions import ValidationError as DjangoValidationError
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from converter.reference import InvalidReference
from core.roles import Role
from pipeline import actions, catalogue, deliveries, operations
from pipeline.api.serializers import (
    CatalogueSerializer,
    ConvertNowSerializer,
    ImageDeleteSerializer,
    ImageQuerySerializer,
    ImageRefreshSerializer,
    JobSerializer,
    OperationSerializer,
    PushEventSerializer,
    WebhookHealthSerializer,
    WebhookTestSerializer,
)
from pipeline.filters import PushEventFilter
from pipeline.models import ConversionJob, Operation, PushEvent
from registries.actions import webhook_url
from registries.models import Instance
from rules.models import Rule


class PushEventViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Push events (read-only): every manifest push a registry reported, its outcome and why, and
    the current state of the job it asked for or joined."""

    queryset = PushEvent.objects.select_related("instance", "matched_rule", "job")
    serializer_class = PushEventSerializer
    filterset_class = PushEventFilter
    search_fields = ["namespace", "repository", "tag", "digest", "delivery_id"]
    ordering_fields = ["received_at", "namespace", "repository", "tag", "outcome", "reason"]
    ordering = ["-received_at", "-id"]


INSTANCE_PK = OpenApiParameter("instance_pk", int, OpenApiParameter.PATH, description="The instance's id.")


@extend_schema(parameters=[INSTANCE_PK])
class WebhookHealthViewSet(viewsets.ViewSet):
    """Webhook health of an instance: what its webhook endpoint received (read: viewer), and Send test
    event (operator), as on the instance page."""

    write_role = Role.OPERATOR

    def _instance(self, instance_pk) -> Instance:
        return get_object_or_404(Instance, pk=instance_pk)

    @extend_schema(responses=WebhookHealthSerializer)
    def list(self, request, instance_pk=None):
        """Counters of accepted and refused deliveries, the last delivery and its result, and the last
        refused deliveries with the reason (never a secret or a body)."""
        instance = self._instance(instance_pk)
        health = deliveries.health_of(instance)
        health.recent_refusals = deliveries.recent_refusals(instance)
        return Response(WebhookHealthSerializer(health).data)

    @extend_schema(request=None, responses=WebhookTestSerializer)
    @action(detail=False, methods=["post"])
    def test(self, request, instance_pk=None):
        """Send a real test delivery, signed with the instance's secret, to the console's own webhook URL.

        The intake records it as a test event (source `test`), never converted."""
        instance = self._instance(instance_pk)
        outcome = deliveries.send_test_delivery(instance, webhook_url(instance, request), request.user)
        return Response(WebhookTestSerializer(outcome).data)


DELETE_STATUS = {catalogue.DeleteRefused.DISABLED: status.HTTP_409_CONFLICT,
                 catalogue.DeleteRefused.NOT_FOUND: status.HTTP_404_NOT_FOUND,
                 catalogue.DeleteRefused.INVALID: status.HTTP_400_BAD_REQUEST}


class ImageViewSet(viewsets.ViewSet):
    """The images of an instance beside their accelerated twins, from rows kept up to date in the background."""

    write_role = Role.OPERATOR
    action_roles = {"refresh": Role.VIEWER}

    @extend_schema(parameters=[ImageQuerySerializer], responses={200: CatalogueSerializer})
    def list(self, request):
        """Tags of `?instance=`, each original beside its accelerated twin (in any state) and job.

        Read from rows that a background refresh keeps up to date (`as_of`); when they are older than
        APPARATE_IMAGES_REFRESH_AGE a refresh is started (`refreshing`). Filter with `namespace`
        (exact) and `repository` (part of the name); tags come a page at a time (`page`, `pages`,
        `tag_count`), grouped by repository.
        """
        query = ImageQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        data = query.validated_data
        found = operations.images_page(data["instance"], data["namespace"], data["repository"], data["page"],
                                       request.user)
        return Response(CatalogueSerializer(found).data)

    @extend_schema(request=ImageRefreshSerializer, responses={202: OperationSerializer})
    @action(detail=False, methods=["post"])
    def refresh(self, request):
        """Read the instance's registry again in the background ("Refresh now"); 202 with the
        operation (the one under way, if a refresh is running already)."""
        payload = ImageRefreshSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        operation = operations.request_refresh(payload.validated_data["instance"], request.user)
        return Response(OperationSerializer(operation).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        request=ImageDeleteSerializer,
        responses={200: OpenApiResponse(description="Deleted; `detail` names the image."),
                   404: OpenApiResponse(description="No manifest with that digest in the repository."),
                   409: OpenApiResponse(description="The registry has deletion disabled."),
                   502: OpenApiResponse(description="The registry refused or failed; `detail` says why.")},
    )
    @action(detail=False, methods=["post"], url_path="delete")
    def delete_image(self, request):
        """Delete one image (original or accelerated) by manifest digest; the other image of the pair stays.

        Twins among the tags of that digest are marked deleted (by you, through the API; audited).
        """
        serializer = ImageDeleteSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        try:
            catalogue.delete_image(data["instance"], data["repository"], data["digest"], request.user, "api")
        except catalogue.DeleteRefused as error:
            return Response({"detail": error.message},
                            status=DELETE_STATUS.get(error.kind, status.HTTP_502_BAD_GATEWAY))
        return Response({"detail": f"Deleted {data['repository']}@{data['digest']}."})


class JobViewSet(viewsets.ReadOnlyModelViewSet):
    """Conversion jobs: list and read need the viewer role; retry, cancel and convert-now need operator."""

    queryset = ConversionJob.objects.select_related("instance").prefetch_related("push_events", "twins")
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

    @extend_schema(request=ConvertNowSerializer, responses={202: OperationSerializer})
    @action(detail=False, methods=["post"], url_path="convert-now")
    def convert_now(self, request):
        """Convert any tag of an instance now: 202 with an operation whose `job` is the new or existing
        job once the worker has read the tag's digest (`result.outcome` says what was done)."""
        payload = ConvertNowSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        try:
            operation = operations.request_convert_now(payload.validated_data["instance"],
                                                       payload.validated_data["image"], requested_by=request.user)
        except InvalidReference as error:
            raise serializers.ValidationError({"image": [str(error)]}) from None
        except DjangoValidationError as error:
            raise serializers.ValidationError({"image": error.messages}) from None
        return Response(OperationSerializer(operation).data, status=status.HTTP_202_ACCEPTED)


class OperationViewSet(viewsets.ReadOnlyModelViewSet):
    """Operations (read-only): slow work a request started, with its status and result."""

    queryset = Operation.objects.select_related("requested_by")
    serializer_class = OperationSerializer
    filterset_fields = ["kind", "status", "instance", "rule"]
    ordering_fields = ["created_at", "finished_at"]
    ordering = ["-created_at", "-id"]


class RuleBackfillViewSet(viewsets.GenericViewSet):
    """"Convert existing images" of one rule, at /api/v1/rules/{id}/backfill/ beside the rules API."""

    queryset = Rule.objects.select_related("instance")
    action_roles = {"backfill": (Role.VIEWER, Role.OPERATOR)}

    @extend_schema(request=None, responses={202: OperationSerializer,
                                            409: OpenApiResponse(description="The rule is not active.")})
    @action(detail=True, methods=["get", "post"])
    def backfill(self, request, pk=None):
        """"Convert existing images": GET starts a preview (how many existing tags this rule would
        convert; nothing is requested), POST requests their conversion. Both walk the registry in a
        worker: 202 with the operation, whose `result` is the report."""
        rule = self.get_object()
        try:
            operation = operations.request_backfill(rule, request.user, preview=request.method == "GET")
        except DjangoValidationError as error:
            return Response({"detail": " ".join(error.messages)}, status=status.HTTP_409_CONFLICT)
        return Response(OperationSerializer(operation).data, status=status.HTTP_202_ACCEPTED)
