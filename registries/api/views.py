"""REST API of the registries app: instances, with their switches.

Reading needs the viewer role. Creating, editing and deleting instances, the acceleration switch
and rotating the webhook secret need admin; "test connection" changes nothing and is open to
operators. Deleting an image needs operator, as on the Images page (images and jobs are the
operator's). The same verbs as the web UI are called (registries/actions.py, registries/catalogue.py).
"""

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from core.roles import Role
from registries import actions
from registries.api.serializers import (
    AccelerationSerializer,
    ConnectionResultSerializer,
    InstanceCreatedSerializer,
    InstanceSerializer,
    WebhookSecretSerializer,
)
from registries.models import Instance


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


