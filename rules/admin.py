"""Django admin for acceleration rules."""

from django.contrib import admin

from rules.models import ConversionJob, LayerCacheEntry, Rule


@admin.register(Rule)
class RuleAdmin(admin.ModelAdmin):
    list_display = ["name", "instance", "namespace", "repository_pattern", "tag_pattern", "enabled", "position",
                    "compression", "updated_at"]
    list_filter = ["instance", "enabled", "format", "compression"]
    search_fields = ["name", "description", "namespace", "repository_pattern", "tag_pattern", "instance__name"]
    list_select_related = ["instance"]
    readonly_fields = ["created_at", "updated_at"]
    ordering = ["instance__name", "position", "id"]


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
