"""REST API of the clusters app (under /api/v1/): the same verbs as the pages, from clusters/actions/.

Roles: viewers read everything; registering, editing and deleting clusters (credentials) needs
admin; connection tests, syncs, label jobs, suite operations, Helm charts and deploys need operator.
"""

from django.http import HttpResponse
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from clusters import helm
from clusters.actions.deploy import DeployRefused, accelerated_images, confirm_deploy, plan_deploy, preview_deploy
from clusters.actions.labelling import request_labelling, select_nodes
from clusters.actions.suite import SuiteBusy, SuiteNotInstalled, request_suite_operation, suite_params
from clusters.actions.sync import annotate_counts, request_sync, test_connection
from clusters.api.serializers import (
    AcceleratedImageSerializer,
    ClusterSerializer,
    DeployConfirmSerializer,
    DeploySerializer,
    LabelJobSerializer,
    LabelRequestSerializer,
    LabelResultSerializer,
    NodeSerializer,
    SuiteRequestSerializer,
    SuiteSerializer,
)
from clusters.kube import Connection
from clusters.models import Cluster, DeployRequest, LabelJob, Node, Suite
from core.roles import Role, has_role
from registries.models import Instance


class ClusterViewSet(viewsets.ModelViewSet):
    serializer_class = ClusterSerializer
    write_role = Role.ADMIN
    action_roles = {"test_connection": Role.OPERATOR, "sync": Role.OPERATOR, "suite": (Role.VIEWER, Role.OPERATOR),
                    "helm_chart": Role.OPERATOR}
    search_fields = ["name", "server", "description"]
    ordering_fields = ["name", "node_count", "compatible_count", "labelled_count", "ready_count", "last_synced_at"]
    ordering = ["name"]
    filterset_fields = ["connection_status", "auth_method", "auto_label"]

    def get_queryset(self):
        return annotate_counts(Cluster.objects.all())

    @extend_schema(request=None)
    @action(detail=True, methods=["post"], url_path="test-connection")
    def test_connection(self, request, pk=None):
        ok, message = test_connection(self.get_object())
        return Response({"ok": ok, "message": message}, status=status.HTTP_200_OK)

    def perform_create(self, serializer):
        request_sync(serializer.save(), test_first=True)

    def perform_update(self, serializer):
        before = Connection.of(serializer.instance)
        cluster = serializer.save()
        if Connection.of(cluster) != before:
            request_sync(cluster, test_first=True)

    @extend_schema(request=None, responses={202: ClusterSerializer})
    @action(detail=True, methods=["post"])
    def sync(self, request, pk=None):
        """Queue a node sync; watch the cluster's `sync_status` (queued, running, idle) and `sync_message`."""
        cluster = request_sync(self.get_object())
        return Response(self.get_serializer(cluster).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=SuiteRequestSerializer, responses=SuiteSerializer)
    @action(detail=True, methods=["get", "post"])
    def suite(self, request, pk=None):
        cluster = self.get_object()
        if request.method == "GET":
            suite = Suite.objects.filter(cluster=cluster).first()
            if suite is None:
                return Response({"status": "not_installed"})
            return Response(SuiteSerializer(suite).data)
        serializer = SuiteRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        try:
            suite = request_suite_operation(cluster, data["operation"], request.user,
                                                    instance=data.get("instance"), namespace=data.get("namespace", ""),
                                                    version=data.get("version", ""), force=data["force"])
        except (SuiteBusy, SuiteNotInstalled) as error:
            return Response({"detail": str(error)}, status=status.HTTP_409_CONFLICT)
        except ValueError as error:
            return Response({"instance": [str(error)]}, status=status.HTTP_400_BAD_REQUEST)
        return Response(SuiteSerializer(suite).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(responses={(200, "application/gzip"): bytes})
    @action(detail=True, methods=["get"], url_path="helm-chart")
    def helm_chart(self, request, pk=None):
        cluster = self.get_object()
        instance_id = request.query_params.get("instance", "")
        suite = Suite.objects.filter(cluster=cluster).first()
        instance = (Instance.objects.filter(pk=instance_id).first() if instance_id.isdigit()
                    else suite.instance if suite else None)
        if instance is None:
            return Response({"instance": ["Give ?instance=<id> of the registry instance."]},
                            status=status.HTTP_400_BAD_REQUEST)
        probe = suite or Suite(cluster=cluster)
        probe.instance = instance
        archive = helm.chart_archive(suite_params(probe), include_password=has_role(request.user, Role.ADMIN))
        response = HttpResponse(archive, content_type="application/gzip")
        response["Content-Disposition"] = f'attachment; filename="{helm.CHART_NAME}-{helm.CHART_VERSION}.tgz"'
        return response


class NodeViewSet(viewsets.ReadOnlyModelViewSet):
    queryset = Node.objects.select_related("cluster")
    serializer_class = NodeSerializer
    filterset_fields = ["cluster", "compatibility", "labelled", "ready", "agent_ready", "lazy_pull", "architecture"]
    search_fields = ["name", "os_image", "kubelet_version"]
    ordering_fields = ["name", "cluster__name", "compatibility", "kubelet_version"]


class LabelJobViewSet(mixins.CreateModelMixin, viewsets.ReadOnlyModelViewSet):
    queryset = LabelJob.objects.select_related("requested_by")
    serializer_class = LabelJobSerializer
    write_role = Role.OPERATOR
    filterset_fields = ["status", "operation"]
    ordering_fields = ["created_at"]

    @extend_schema(request=LabelRequestSerializer, responses={202: LabelJobSerializer})
    def create(self, request, *args, **kwargs):
        serializer = LabelRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        nodes = select_nodes(cluster_ids=[c.pk for c in data.get("clusters", [])],
                                     node_ids=data.get("nodes"), all_compatible=data["all_compatible"],
                                     selector=data.get("selector", ""))
        if not nodes.exists():
            return Response({"detail": "No node matches that selection."}, status=status.HTTP_400_BAD_REQUEST)
        description = ("api: " + ("all compatible nodes" if data["all_compatible"] else
                                  f"selector {data['selector']}" if data.get("selector") else
                                  f"{len(data['nodes'])} node(s)"))
        job = request_labelling(request.user, nodes, data["operation"], data["force"], description)
        return Response(LabelJobSerializer(job).data, status=status.HTTP_202_ACCEPTED)

    @action(detail=True, methods=["get"])
    def results(self, request, pk=None):
        job = self.get_object()
        page = self.paginate_queryset(job.results.select_related("cluster"))
        return self.get_paginated_response(LabelResultSerializer(page, many=True).data)


class SuiteViewSet(viewsets.ReadOnlyModelViewSet):
    queryset = Suite.objects.select_related("cluster", "instance")
    serializer_class = SuiteSerializer
    filterset_fields = ["status", "cluster"]


class DeployViewSet(mixins.CreateModelMixin, viewsets.ReadOnlyModelViewSet):
    """Deploys, in two steps: `POST /deploys/` previews (201, status `previewed`, with `plan_digest`,
    `yaml` and `warnings`); `POST /deploys/{id}/confirm/` with that `plan_digest` applies exactly the
    preview (202; a worker applies it, watch `status`). `image` may be an original or an accelerated
    image of the instance; the twin (from the conversion jobs) runs pinned to labelled nodes unless
    `use_original`."""

    queryset = DeployRequest.objects.select_related("cluster")
    serializer_class = DeploySerializer
    write_role = Role.OPERATOR
    filterset_fields = ["cluster", "status", "namespace"]

    @extend_schema(responses={201: DeploySerializer})
    def create(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        plan = plan_deploy(data["cluster"], data["instance"], data["namespace"], data["name"],
                           data.get("replicas", 1), data["reference"], use_original=data["use_original"])
        preview = preview_deploy(plan, request.user)
        return Response({**DeploySerializer(preview).data, "original_image": plan.original_image,
                         "accelerated_image": plan.accelerated_image}, status=status.HTTP_201_CREATED)

    @extend_schema(request=DeployConfirmSerializer, responses={202: DeploySerializer})
    @action(detail=True, methods=["post"])
    def confirm(self, request, pk=None):
        """Apply a preview of yours, unchanged (its `plan_digest`), within 15 minutes of previewing it."""
        serializer = DeployConfirmSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            deploy = confirm_deploy(pk, request.user, serializer.validated_data["plan_digest"])
        except DeployRefused as refusal:
            return Response({"detail": str(refusal)}, status=status.HTTP_409_CONFLICT)
        return Response(DeploySerializer(deploy).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(parameters=[OpenApiParameter("instance", int, required=True)],
                   responses=AcceleratedImageSerializer(many=True))
    @action(detail=False, methods=["get"], url_path="images", pagination_class=None, filter_backends=[])
    def images(self, request):
        """The instance's accelerated images offered to deploys (from its succeeded conversion jobs)."""
        instance_id = request.query_params.get("instance", "")
        instance = Instance.objects.filter(pk=instance_id).first() if instance_id.isdigit() else None
        if instance is None:
            return Response({"instance": ["Give ?instance=<id> of a registry instance."]},
                            status=status.HTTP_400_BAD_REQUEST)
        return Response(AcceleratedImageSerializer(accelerated_images(instance), many=True).data)
