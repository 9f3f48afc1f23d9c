"""Models of the console shell: the audit log."""

from django.conf import settings
from django.db import models


class AuditEntry(models.Model):
    """One change to a configuration object: who, when, through which door, what changed."""

    ACTIONS = [("create", "Created"), ("update", "Changed"), ("delete", "Deleted")]
    SOURCES = [("ui", "Web UI"), ("api", "API"), ("admin", "Admin"), ("system", "System")]

    timestamp = models.DateTimeField(auto_now_add=True, db_index=True)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    actor_name = models.CharField(max_length=150)
    source = models.CharField(max_length=10, choices=SOURCES)
    action = models.CharField(max_length=10, choices=ACTIONS)
    app_label = models.CharField(max_length=100)
    model = models.CharField(max_length=100)
    object_id = models.CharField(max_length=64)
    object_repr = models.CharField(max_length=200)
    changes = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-timestamp", "-id"]
        indexes = [models.Index(fields=["app_label", "model", "object_id"])]
        verbose_name_plural = "audit entries"

    def __str__(self):
        return f"{self.actor_name} {self.action} {self.model} {self.object_repr}"
