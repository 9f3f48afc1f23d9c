"""Django admin for the pipeline's records: push events, conversion jobs and the layer cache.

They are machine records: read them here; retry or cancel jobs on the Jobs page or the API.
"""

from django.contrib import admin

from pipeline.models import ConversionJob, LayerCacheEntry, PushEvent


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
