"""The audit log: who changed what, when, and through which door (UI, API, admin, system).

Every save and delete of a model in our apps (and of users and groups) is recorded from model
signals, so UI, API and admin cannot forget it. The request in progress is kept in a context
variable by `AuditContextMiddleware`; outside a request the actor is "system". Secret fields
(see console.fields.is_secret_field) and password hashes are recorded only as "changed".
Models that record machine activity rather than configuration opt out with `audit_log = False`.
"""

import contextvars
import datetime
import decimal
import uuid

from django.apps import apps
from django.db.models.signals import m2m_changed, post_delete, post_save, pre_save

from console.fields import is_secret_field

AUDITED_APPS = {"auth", "authtoken", "console", "registries", "rules", "clusters"}
MASK = "••••••"
_request = contextvars.ContextVar("apparate_audit_request", default=None)


class AuditContextMiddleware:
    """Makes the current request (and so its user) visible to the audit signal handlers."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        token = _request.set(request)
        try:
            return self.get_response(request)
        finally:
            _request.reset(token)


def current_actor():
    """(user or None, source) for the change being made right now."""
    request = _request.get()
    if request is None:
        return None, "system"
    path = request.path
    source = "api" if path.startswith("/api/") else "admin" if path.startswith("/admin/") else "ui"
    user = getattr(request, "user", None)
    return (user if user is not None and user.is_authenticated else None), source


def _is_audited(model) -> bool:
    meta = model._meta
    if meta.app_label not in AUDITED_APPS or not getattr(model, "audit_log", True):
        return False
    return not (meta.app_label == "console" and meta.model_name == "auditentry")


def _plain(value):
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, (decimal.Decimal, uuid.UUID)):
        return str(value)
    if isinstance(value, (str, int, float, bool, list, dict)) or value is None:
        return value
    return str(value)


def _is_masked(field) -> bool:
    return is_secret_field(field) or (field.model._meta.label == "auth.User" and field.name == "password")


def snapshot(instance) -> dict:
    """Field name → plain value (secrets masked) for concrete, non-m2m fields."""
    values = {}
    for field in instance._meta.concrete_fields:
        raw = field.value_from_object(instance)
        if _is_masked(field):
            values[field.name] = MASK if raw else ""
            values[f"__secret__{field.name}"] = hash(raw) if raw else None
        else:
            values[field.name] = _plain(raw)
    return values


def _diff(before: dict, after: dict) -> dict:
    changes = {}
    for name, new in after.items():
        if name.startswith("__secret__"):
            continue
        key = f"__secret__{name}"
        if key in after:
            if before.get(key) != after[key]:
                changes[name] = {"old": before.get(name, ""), "new": MASK if after[key] else ""}
            continue
        old = before.get(name)
        if old != new:
            changes[name] = {"old": old, "new": new}
    return changes


def record(action: str, instance, changes: dict) -> None:
    AuditEntry = apps.get_model("console", "AuditEntry")
    user, source = current_actor()
    AuditEntry.objects.create(
        actor=user,
        actor_name=user.get_username() if user else source,
        source=source,
        action=action,
        app_label=instance._meta.app_label,
        model=instance._meta.model_name,
        object_id=str(instance.pk),
        object_repr=str(instance)[:200],
        changes=changes,
    )


def _pre_save(sender, instance, raw=False, **kwargs):
    if raw or not _is_audited(sender):
        return
    previous = None
    if instance.pk is not None:
        old = sender._default_manager.filter(pk=instance.pk).first()
        previous = snapshot(old) if old is not None else None
    instance._audit_before = previous


def _post_save(sender, instance, created, raw=False, **kwargs):
    if raw or not _is_audited(sender):
        return
    before = getattr(instance, "_audit_before", None)
    after = snapshot(instance)
    if created or before is None:
        changes = {k: {"old": None, "new": v} for k, v in after.items() if not k.startswith("__secret__")}
        record("create", instance, changes)
        return
    changes = _diff(before, after)
    if changes:
        record("update", instance, changes)


def _post_delete(sender, instance, **kwargs):
    if _is_audited(sender):
        record("delete", instance, {})


def _m2m_changed(sender, instance, action, model, pk_set, **kwargs):
    if action not in {"post_add", "post_remove", "post_clear"} or not _is_audited(type(instance)):
        return
    field = next(
        (f.name for f in type(instance)._meta.many_to_many if f.remote_field.through is sender),
        sender._meta.model_name,
    )
    names = sorted(str(obj) for obj in model._default_manager.filter(pk__in=pk_set or []))
    verb = {"post_add": "added", "post_remove": "removed", "post_clear": "cleared"}[action]
    record("update", instance, {field: {verb: names}})


def connect_signals() -> None:
    pre_save.connect(_pre_save, dispatch_uid="apparate-audit-pre-save")
    post_save.connect(_post_save, dispatch_uid="apparate-audit-post-save")
    post_delete.connect(_post_delete, dispatch_uid="apparate-audit-post-delete")
    m2m_changed.connect(_m2m_changed, dispatch_uid="apparate-audit-m2m")
