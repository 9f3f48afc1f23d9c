"""Models of the shared layer: the audit log and the worker heartbeat."""

import json

from django.conf import settings
from django.db import models


def _display(value) -> str:
    """A recorded value as people read it: blanks and missing values made visible."""
    if value is None:
        return "—"
    if value == "":
        return "(blank)"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


class AuditEntry(models.Model):
    """One change to a configuration object: who, when, through which door, what changed.

    `changes` maps a field name to {"old": …, "new": …} (secrets recorded as a mask), or for
    many-to-many fields to {"added"|"removed"|"cleared": [names]}.
    """

    ACTIONS = [("create", "Created"), ("update", "Changed"), ("delete", "Deleted")]
    SOURCES = [("ui", "Web UI"), ("api", "API"), ("admin", "Admin"), ("system", "System")]
    ACTION_COLOURS = {"create": "green", "update": "blue", "delete": "red"}

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
        db_table = "console_auditentry"  # kept from the app it moved from
        ordering = ["-timestamp", "-id"]
        indexes = [models.Index(fields=["app_label", "model", "object_id"])]
        verbose_name_plural = "audit entries"

    def __str__(self):
        return f"{self.actor_name} {self.action} {self.model} {self.object_repr}"

    @property
    def object_type(self) -> str:
        """`app_label.model`, the value the audit filters take."""
        return f"{self.app_label}.{self.model}"

    @property
    def action_colour(self) -> str:
        return self.ACTION_COLOURS.get(self.action, "grey")

    def change_rows(self) -> list[tuple[str, str, str]]:
        """(field, old, new) rows for display; many-to-many changes read "added: a, b".

        A creation lists only the fields that were given a value (the id is the object's).
        """
        rows = []
        for name, change in sorted(self.changes.items()):
            blank = isinstance(change, dict) and "new" in change and change["new"] in (None, "")
            if self.action == "create" and (name == "id" or blank):
                continue
            if not isinstance(change, dict):
                rows.append((name, "—", _display(change)))
            elif "old" in change or "new" in change:
                rows.append((name, _display(change.get("old")), _display(change.get("new"))))
            else:
                new = "; ".join(f"{verb}: {', '.join(map(str, names)) or '—'}" for verb, names in change.items())
                rows.append((name, "—", new))
        return rows


class WorkerHeartbeat(models.Model):
    """The last time a Celery worker reported in, so the console can tell whether background work
    (conversions, node syncs, labelling) is being processed at all, and which worker runs are alive.

    Every worker process run has a random `session`: a worker restarted under the same hostname
    reports a new one, so work recorded under the old session is known to be orphaned at once.
    Machine activity: not audited.
    """

    audit_log = False

    hostname = models.CharField(max_length=255, unique=True)
    session = models.CharField(max_length=32, blank=True, help_text="Random id of the worker run that reported.")
    seen_at = models.DateTimeField()

    class Meta:
        db_table = "console_workerheartbeat"  # kept from the app it moved from
        ordering = ["-seen_at"]

    def __str__(self):
        return f"{self.hostname} at {self.seen_at:%Y-%m-%d %H:%M:%S}"
