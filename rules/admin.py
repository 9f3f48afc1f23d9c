"""Django admin for acceleration rules."""

from django.contrib import admin

from rules.models import Rule


@admin.register(Rule)
class RuleAdmin(admin.ModelAdmin):
    list_display = ["name", "instance", "namespace", "repository_pattern", "tag_pattern", "enabled", "position",
                    "compression", "updated_at"]
    list_filter = ["instance", "enabled", "format", "compression"]
    search_fields = ["name", "description", "namespace", "repository_pattern", "tag_pattern", "instance__name"]
    list_select_related = ["instance"]
    readonly_fields = ["created_at", "updated_at"]
    ordering = ["instance__name", "position", "id"]


