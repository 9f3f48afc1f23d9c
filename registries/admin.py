"""Django admin for registry instances; secrets are never shown here either.

Instances use the console's own form (write-only password, no webhook secret field).
"""

from django.contrib import admin

from registries.forms import InstanceForm
from registries.models import Instance


@admin.register(Instance)
class InstanceAdmin(admin.ModelAdmin):
    form = InstanceForm
    list_display = ["name", "url", "username", "acceleration_enabled", "verify_tls", "created_at"]
    list_filter = ["acceleration_enabled", "verify_tls"]
    search_fields = ["name", "url", "description", "username"]
    readonly_fields = ["acceleration_enabled", "acceleration_changed_at", "created_at", "updated_at"]

    def get_fields(self, request, obj=None):
        fields = ["name", "url", "description", "username", "password"]
        if obj is not None and obj.password:
            fields.append("clear_password")
        return [*fields, "verify_tls", "ca_bundle", *self.readonly_fields]


