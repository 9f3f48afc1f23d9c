"""REST API of the registries app: instances (with their switches), push events and images.

Reading needs the viewer role. Creating, editing and deleting instances, the acceleration switch
and rotating the webhook secret need admin; "test connection" changes nothing and is open to
operators. Deleting an image needs operator, as on the Images page (images and jobs are the
operator's). The same verbs as the web UI are called (registries/actions.py, registries/catalogue.py).
"""

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from console.roles import Role
from registries import actions, catalogue
from registries.api.serializers import (
    AccelerationSerializer,
    CatalogueSerializer,
    ConnectionResultSerializer,
    ImageDeleteSerializer,
    ImageQuerySerializer,
    InstanceCreatedSerializer,
    InstanceSerializer,
    PushEventSerializer,
    WebhookSecretSerializer,
)
from registries.filters import PushEventFilter
from registries.models import Instance, PushEvent


class InstanceViewSet(viewsets.ModelViewSet):
    """Registry instances. Password and webhook secret are write-only (see the create response)."""

    queryset = Instance.objects.all()
    serializer_class = InstanceSerializer
    write_role = Role.ADMIN
    action_roles = {"test_connection": Role.OPERATOR}
    filterset_fields = ["acceleration_enabled", "verify_tls"]
    search_fields = ["name", "url", "description"]
    ordering_fields = ["name", "url", "created_at", "updated_at", "acceleration_enabled"]
    ordering = ["name"]

    @extend_schema(responses={201: InstanceCreatedSerializer})
    def create(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        instance = serializer.save()
        created = InstanceCreatedSerializer(instance, context=self.get_serializer_context())
        return Response(created.data, status=status.HTTP_201_CREATED)

    def perform_destroy(self, instance):
        actions.delete_instance(instance)

    @extend_schema(request=None, responses=ConnectionResultSerializer)
    @action(detail=True, methods=["post"], url_path="test-connection")
    def test_connection(self, request, pk=None):
        """GET /v2/ on the registry with the stored credentials; the answer explains any failure."""
        result = actions.test_connection(self.get_object())
        return Response(ConnectionResultSerializer(result).data)

    @extend_schema(request=AccelerationSerializer, responses=InstanceSerializer)
    @action(detail=True, methods=["post"])
    def acceleration(self, request, pk=None):
        """Turn acceleration on (`{"enabled": true, "confirm": true}`) or off (`{"enabled": false}`)."""
        instance = self.get_object()
        switch = AccelerationSerializer(data=request.data)
        switch.is_valid(raise_exception=True)
        if switch.validated_data["enabled"]:
            try:
                actions.enable_acceleration(instance, request.user, confirm=switch.validated_data["confirm"])
            except actions.ConfirmationRequired as error:
                raise serializers.ValidationError({"confirm": [error.message]}) from None
        else:
            actions.disable_acceleration(instance, request.user)
        return Response(self.get_serializer(instance).data)

    @extend_schema(request=None, responses=WebhookSecretSerializer)
    @action(detail=True, methods=["post"], url_path="rotate-secret")
    def rotate_secret(self, request, pk=None):
        """Replace the webhook secret; the new one is in this response only and the old one stops working."""
        secret = actions.rotate_webhook_secret(self.get_object())
        return Response({"webhook_secret": secret})


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
