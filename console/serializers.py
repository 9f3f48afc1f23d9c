"""REST serializers of the console shell: audit entries (read-only)."""

from rest_framework import serializers

from core.models import AuditEntry


class AuditEntrySerializer(serializers.ModelSerializer):
    object_type = serializers.CharField(read_only=True, help_text="`app_label.model` of the changed object.")
    changes = serializers.JSONField(
        read_only=True, help_text='Field → {"old", "new"}; many-to-many → {"added"|"removed"|"cleared": [names]}. '
        "Secrets appear masked."
    )

    class Meta:
        model = AuditEntry
        fields = [
            "id", "timestamp", "actor", "actor_name", "source", "action",
            "app_label", "model", "object_type", "object_id", "object_repr", "changes",
        ]
        read_only_fields = fields
