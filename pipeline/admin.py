"""Django admin for the pipeline's records: push events, jobs, twins, registry tags, operations, the layer cache,
webhook health and refused deliveries.

They are machine records: read them here; retry or cancel jobs on the Jobs page or the API.
"""

from django.contrib import admin

from core.admin import ReadOnlyAdmin
from pipeline.models import (
    AcceleratedImage,
    ConversionJob,
    LayerCacheEntry,
    Operation,
    PushEvent,
    RefusedDelivery,
    RegistryTag,
    WebhookHealth,
)


@admin.register(PushEvent)
class PushEventAdmin(admin.ModelAdmin):
    list_display = ["received_at", "instance", "namespace", "repository", "tag", "outcome", "reason"]
    list_filter = ["outcome", "reason", "source", "instance"]
    search_fields = ["namespace", "repository", "tag", "digest", "delivery_id", "reason_detail"]
    date_hierarchy = "received_at"
    list_select_related = ["instance"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(ConversionJob)
class ConversionJobAdmin(admin.ModelAdmin):
    """Jobs are machine records: read them here; retry or cancel them on the Jobs page or the API."""

    list_display = ["id", "instance", "namespace", "repository", "source_tag", "status", "attempts", "retries",
                    "trigger", "created_at", "finished_at"]
    list_filter = ["status", "trigger", "instance", "format"]
    search_fields = ["namespace", "repository", "source_tag", "source_digest", "result_digest", "reason"]
    list_select_related = ["instance"]
    readonly_fields = [field.name for field in ConversionJob._meta.fields]
    ordering = ["-created_at"]

    def has_add_permission(self, request):
        return False

@admin.register(LayerCacheEntry)
class LayerCacheEntryAdmin(admin.ModelAdmin):
    list_display = ["source_digest", "digest", "instance", "repository", "size", "hits", "converter_version",
                    "used_at"]
    list_filter = ["instance", "converter_version"]
    search_fields = ["source_digest", "digest", "repository"]
    list_select_related = ["instance"]


@admin.register(AcceleratedImage)
class AcceleratedImageAdmin(admin.ModelAdmin):
    """Twin records: read them here; delete or re-create twins on the Images page or the API (audited)."""

    list_display = ["twin_tag", "namespace", "repository", "instance", "state", "twin_size", "startup_bytes",
                    "full_pull_bytes", "job", "state_changed_at"]
    list_filter = ["state", "instance"]
    search_fields = ["namespace", "repository", "source_tag", "twin_tag", "source_digest", "twin_digest"]
    list_select_related = ["instance", "job"]
    readonly_fields = [field.name for field in AcceleratedImage._meta.fields]

    def has_add_permission(self, request):
        return False


@admin.register(RegistryTag)
class RegistryTagAdmin(admin.ModelAdmin):
    list_display = ["tag", "namespace", "repository", "instance", "digest", "size", "seen_at"]
    list_filter = ["instance"]
    search_fields = ["namespace", "repository", "tag", "digest"]
    list_select_related = ["instance"]
    readonly_fields = [field.name for field in RegistryTag._meta.fields]

    def has_add_permission(self, request):
        return False


@admin.register(Operation)
class OperationAdmin(admin.ModelAdmin):
    list_display = ["id", "kind", "instance", "status", "requested_by", "created_at", "finished_at"]
    list_filter = ["kind", "status", "instance"]
    search_fields = ["error", "params"]
    list_select_related = ["instance", "requested_by"]
    readonly_fields = [field.name for field in Operation._meta.fields]

    def has_add_permission(self, request):
        return False


@admin.register(WebhookHealth)
class WebhookHealthAdmin(ReadOnlyAdmin):
    """What each instance's webhook endpoint received: written by the intake only."""

    list_display = ["instance", "accepted", "refused", "last_status", "last_received_at"]
    list_filter = ["last_status"]
    search_fields = ["instance__name", "last_result"]
    list_select_related = ["instance"]


@admin.register(RefusedDelivery)
class RefusedDeliveryAdmin(ReadOnlyAdmin):
    """The last refused deliveries of each instance (a ring of 20): written by the intake only."""

    list_display = ["received_at", "instance", "status", "reason", "client"]
    list_filter = ["status", "instance"]
    search_fields = ["reason", "client"]
    list_select_related = ["instance"]
