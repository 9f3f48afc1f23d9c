"""Django admin for the clusters app: every model, with list filters and search; secrets never shown."""

from django.contrib import admin

from clusters.models import Cluster, DeployRequest, LabelJob, LabelResult, Node, Suite


@admin.register(Cluster)
class ClusterAdmin(admin.ModelAdmin):
    list_display = ["name", "server", "auth_method", "connection_status", "server_version", "auto_label",
                    "last_synced_at"]
    list_filter = ["auth_method", "connection_status", "auto_label"]
    search_fields = ["name", "server", "description"]
    exclude = ["token", "client_key"]
    readonly_fields = ["connection_status", "server_version", "last_checked_at", "last_error", "last_synced_at",
                       "created_at", "updated_at"]


@admin.register(Node)
class NodeAdmin(admin.ModelAdmin):
    list_display = ["name", "cluster", "ready", "kubelet_version", "container_runtime", "runtime_version", "os_image",
                    "labelled", "agent_ready", "compatibility"]
    list_filter = ["cluster", "compatibility", "labelled", "ready", "agent_ready", "container_runtime",
                   "architecture"]
    search_fields = ["name", "os_image", "kubelet_version"]
    list_select_related = ["cluster"]


class LabelResultInline(admin.TabularInline):
    model = LabelResult
    extra = 0
    fields = ["cluster", "node_name", "status", "attempts", "message", "finished_at"]
    readonly_fields = fields
    can_delete = False
    show_change_link = True


@admin.register(LabelJob)
class LabelJobAdmin(admin.ModelAdmin):
    list_display = ["id", "operation", "status", "force", "total", "succeeded", "failed", "requested_by", "created_at"]
    list_filter = ["status", "operation", "force"]
    search_fields = ["selection", "requested_by__username"]
    inlines = [LabelResultInline]


@admin.register(LabelResult)
class LabelResultAdmin(admin.ModelAdmin):
    list_display = ["node_name", "cluster", "job", "status", "attempts", "finished_at"]
    list_filter = ["status", "cluster"]
    search_fields = ["node_name", "message"]
    list_select_related = ["cluster", "job"]


@admin.register(Suite)
class SuiteAdmin(admin.ModelAdmin):
    list_display = ["cluster", "status", "operation", "namespace", "version", "instance", "desired", "ready",
                    "updated_at"]
    list_filter = ["status", "operation"]
    search_fields = ["cluster__name", "namespace", "failed_object"]


@admin.register(DeployRequest)
class DeployRequestAdmin(admin.ModelAdmin):
    list_display = ["name", "namespace", "cluster", "image", "replicas", "accelerated", "status", "requested_by",
                    "created_at"]
    list_filter = ["status", "accelerated", "cluster"]
    search_fields = ["name", "namespace", "image"]
