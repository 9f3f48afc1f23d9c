"""Django admin of the shared layer: the audit log (read-only) and users with their roles."""

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin
from django.contrib.auth.models import User

from core.models import AuditEntry, WorkerHeartbeat
from core.roles import Role, role_of

admin.site.site_header = "apparate administration"
admin.site.site_title = "apparate admin"
admin.site.index_title = "Administration"
admin.site.site_url = "/"


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows written by the console or its workers: readable here, never added, changed or deleted."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(AuditEntry)
class AuditEntryAdmin(ReadOnlyAdmin):
    """The audit log can be read here but never written, changed or deleted."""

    list_display = ["timestamp", "actor_name", "source", "action", "app_label", "model", "object_repr"]
    list_filter = ["source", "action", "app_label", "model", ("timestamp", admin.DateFieldListFilter)]
    search_fields = ["object_repr", "actor_name", "object_id"]
    date_hierarchy = "timestamp"
    list_select_related = ["actor"]


@admin.register(WorkerHeartbeat)
class WorkerHeartbeatAdmin(ReadOnlyAdmin):
    """When each worker last reported in; written by the workers only."""

    list_display = ["hostname", "seen_at"]
    list_filter = [("seen_at", admin.DateFieldListFilter)]
    search_fields = ["hostname"]
    ordering = ["-seen_at"]


admin.site.unregister(User)


@admin.register(User)
class ConsoleUserAdmin(UserAdmin):
    """Users with their console role; assign roles by adding users to viewer/operator/admin groups."""

    list_display = ["username", "email", "role", "is_active", "is_staff", "is_superuser", "last_login"]
    list_filter = ["groups", "is_active", "is_staff", "is_superuser"]

    @admin.display(description="console role")
    def role(self, user):
        role = role_of(user)
        return "—" if role is Role.NONE else role.group_name
