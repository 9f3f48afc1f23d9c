"""REST serializers of the clusters app. Secrets (token, client key, kubeconfig) are write-only."""

from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import serializers

from clusters.actions.deploy import namespace_refusal
from clusters.choices import AuthMethod, LabelOperation, SuiteOperation
from clusters.forms import apply_kubeconfig
from clusters.kube import CONNECTION_FIELDS
from clusters.models import Cluster, DeployRequest, LabelJob, LabelResult, Node, Suite
from clusters.validators import (
    credentials_again,
    image_of_instance,
    moved_to_another_host,
    validate_dns_label,
    validate_image_tag,
    validate_label_selector,
    validate_namespace_list,
)
from registries.models import Instance


class ClusterSerializer(serializers.ModelSerializer):
    token = serializers.CharField(write_only=True, required=False, allow_blank=True, trim_whitespace=True,
                                  style={"input_type": "password"})
    kubeconfig = serializers.CharField(write_only=True, required=False, allow_blank=True, trim_whitespace=False,
                                       help_text="Kubeconfig text; `context` picks the context.")
    context = serializers.CharField(write_only=True, required=False, allow_blank=True, max_length=253)
    has_token = serializers.SerializerMethodField()
    deploy_namespaces = serializers.ListField(
        child=serializers.CharField(), required=False, validators=[validate_namespace_list],
        help_text="Namespaces operators may deploy into (default: [\"default\"]).",
    )
    node_count = serializers.IntegerField(read_only=True)
    compatible_count = serializers.IntegerField(read_only=True)
    labelled_count = serializers.IntegerField(read_only=True)
    ready_count = serializers.IntegerField(read_only=True)

    class Meta:
        model = Cluster
        fields = ["id", "name", "description", "auth_method", "kubeconfig", "context", "context_name", "server",
                  "ca_data", "insecure_skip_tls_verify", "tls_server_name", "token", "has_token", "auto_label",
                  "deploy_namespaces",
                  "connection_status", "server_version", "last_checked_at", "last_error", "last_synced_at",
                  "sync_status", "sync_message",
                  "node_count", "compatible_count", "labelled_count", "ready_count", "created_at", "updated_at"]
        read_only_fields = ["context_name", "connection_status", "server_version", "last_checked_at", "last_error",
                            "last_synced_at", "sync_status", "sync_message", "created_at", "updated_at"]
        extra_kwargs = {"server": {"required": False}}

    def get_has_token(self, cluster) -> bool:
        return bool(cluster.token or cluster.client_key)

    def validate(self, attrs):
        cluster = self.instance or Cluster()
        method = attrs.get("auth_method", cluster.auth_method if self.instance else AuthMethod.TOKEN)
        kubeconfig = attrs.pop("kubeconfig", "")
        context = attrs.pop("context", "")
        if kubeconfig:
            probe = Cluster()
            try:
                apply_kubeconfig(probe, kubeconfig, context)
            except DjangoValidationError as error:
                raise serializers.ValidationError({"kubeconfig": error.messages}) from None
            for name in ("auth_method", "context_name", *CONNECTION_FIELDS):
                attrs[name] = getattr(probe, name)
            return attrs
        if method == AuthMethod.KUBECONFIG and not self.instance:
            raise serializers.ValidationError({"kubeconfig": ["Give the kubeconfig text."]})
        stored_server = self.instance.server if self.instance else ""
        if not attrs.get("token") and moved_to_another_host(stored_server, attrs.get("server", "")):
            if method == AuthMethod.KUBECONFIG:
                raise serializers.ValidationError({"kubeconfig": [credentials_again("upload the kubeconfig")]})
            raise serializers.ValidationError({"token": [credentials_again("give the bearer token")]})
        if method == AuthMethod.TOKEN:
            if not (attrs.get("server") or cluster.server):
                raise serializers.ValidationError({"server": ["Give the API server URL."]})
            if not attrs.get("token"):
                if not cluster.token:
                    raise serializers.ValidationError({"token": ["Give a bearer token."]})
                attrs.pop("token", None)
            attrs["client_certificate"] = attrs["client_key"] = ""
        return attrs


class NodeSerializer(serializers.ModelSerializer):
    cluster_name = serializers.CharField(source="cluster.name", read_only=True)

    class Meta:
        model = Node
        fields = ["id", "cluster", "cluster_name", "name", "labels", "ready", "kubelet_version", "container_runtime",
                  "runtime_version", "os_image", "kernel_version", "architecture", "labelled", "agent_ready",
                  "lazy_pull", "lazy_pull_reason", "agent_report", "compatibility", "reasons", "first_seen_at",
                  "last_seen_at"]


class LabelResultSerializer(serializers.ModelSerializer):
    cluster_name = serializers.CharField(source="cluster.name", read_only=True)

    class Meta:
        model = LabelResult
        fields = ["id", "cluster", "cluster_name", "node", "node_name", "status", "message", "attempts", "finished_at"]


class LabelJobSerializer(serializers.ModelSerializer):
    requested_by = serializers.StringRelatedField()

    class Meta:
        model = LabelJob
        fields = ["id", "operation", "force", "selection", "status", "requested_by", "total", "succeeded", "failed",
                  "last_error", "created_at", "started_at", "finished_at"]


class LabelRequestSerializer(serializers.Serializer):
    """Which nodes to (un)label: node ids, all compatible nodes, or a label selector; optionally per cluster."""

    operation = serializers.ChoiceField(choices=LabelOperation.choices, default=LabelOperation.LABEL)
    force = serializers.BooleanField(default=False)
    nodes = serializers.ListField(child=serializers.IntegerField(min_value=1), required=False, max_length=100000)
    all_compatible = serializers.BooleanField(default=False)
    selector = serializers.CharField(required=False, allow_blank=True, max_length=500,
                                     validators=[validate_label_selector])
    clusters = serializers.PrimaryKeyRelatedField(queryset=Cluster.objects.all(), many=True, required=False)

    def validate(self, attrs):
        chosen = [bool(attrs.get("nodes")), attrs["all_compatible"], bool(attrs.get("selector"))]
        if sum(chosen) != 1:
            raise serializers.ValidationError("Give exactly one of: nodes, all_compatible, selector.")
        return attrs


class SuiteSerializer(serializers.ModelSerializer):
    cluster_name = serializers.CharField(source="cluster.name", read_only=True)
    instance_name = serializers.CharField(source="instance.name", read_only=True, default="")

    class Meta:
        model = Suite
        fields = ["id", "cluster", "cluster_name", "instance", "instance_name", "namespace", "image", "version",
                  "operation", "force", "status", "preflight", "applied", "failed_object", "last_error", "desired",
                  "ready", "updated", "node_status", "cleanup_started_at", "started_at", "finished_at", "updated_at"]


class SuiteRequestSerializer(serializers.Serializer):
    operation = serializers.ChoiceField(choices=SuiteOperation.choices)
    instance = serializers.PrimaryKeyRelatedField(queryset=Instance.objects.all(), required=False, allow_null=True)
    namespace = serializers.CharField(required=False, allow_blank=True, max_length=63, validators=[validate_dns_label])
    version = serializers.CharField(required=False, allow_blank=True, max_length=128, validators=[validate_image_tag])
    force = serializers.BooleanField(default=False, help_text="Uninstall without waiting for the nodes to clean up.")

    def validate(self, attrs):
        if attrs["force"] and attrs["operation"] != SuiteOperation.UNINSTALL:
            raise serializers.ValidationError({"force": ["Only an uninstall can be forced."]})
        return attrs


class DeploySerializer(serializers.ModelSerializer):
    """A deploy: posting one previews it (status `previewed`); `POST …/{id}/confirm/` with its
    `plan_digest` applies exactly that preview. `image` is an address in the instance's registry,
    original or accelerated."""

    use_original = serializers.BooleanField(default=False, write_only=True,
                                            help_text="Deploy the original image without pinning to labelled nodes.")
    yaml = serializers.CharField(source="plan_yaml", read_only=True,
                                 help_text="The previewed objects (secret data hidden).")

    class Meta:
        model = DeployRequest
        fields = ["id", "cluster", "instance", "namespace", "name", "replicas", "image", "use_original",
                  "accelerated", "status", "plan_digest", "warnings", "yaml", "message", "created_at",
                  "confirmed_at", "finished_at", "rollout", "rollout_checked_at"]
        read_only_fields = ["accelerated", "status", "plan_digest", "warnings", "message", "created_at",
                            "confirmed_at", "finished_at", "rollout", "rollout_checked_at"]
        extra_kwargs = {"instance": {"required": True, "allow_null": False},
                        "replicas": {"min_value": 1, "max_value": 1000}}

    def validate(self, attrs):
        try:
            attrs["reference"] = image_of_instance(attrs["instance"], attrs["image"])
        except DjangoValidationError as error:
            raise serializers.ValidationError({"image": error.messages}) from None
        refusal = namespace_refusal(attrs["cluster"], attrs["namespace"])
        if refusal:
            raise serializers.ValidationError({"namespace": [refusal]})
        return attrs


class DeployConfirmSerializer(serializers.Serializer):
    plan_digest = serializers.CharField(max_length=64, help_text="The `plan_digest` of the preview being confirmed.")


class AcceleratedImageSerializer(serializers.Serializer):
    """An accelerated image the console converted, as offered to deploys."""

    image = serializers.CharField(source="accelerated", help_text="The accelerated twin's address.")
    original = serializers.CharField(source="source", help_text="The source image it was converted from.")
    digest = serializers.CharField(source="twin_digest")
    job = serializers.IntegerField(source="job_id", allow_null=True, help_text="The conversion job that made it.")
    finished_at = serializers.DateTimeField(source="state_changed_at", help_text="When the twin was pushed.")
