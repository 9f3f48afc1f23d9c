"""The audit log: who changed what, when, and through which door (UI, API, admin, system).

Every save and delete of a model in our apps (and of users, groups and API tokens) is recorded
from model signals, so UI, API and admin cannot forget it. The request in progress is kept in a
context variable by `AuditContextMiddleware`; DRF authenticates on that same request object
(its `Request.user` setter writes through to the Django request), so token-authenticated API
calls carry their user too. Outside a request the actor is "system".

Secret fields (core.fields.is_secret_field), password hashes and API token keys are recorded
only as "changed" (a mask), never as values; a token is named after its user, not its key.
Models that record machine activity rather than configuration opt out with `audit_log = False`.
"""

import contextvars
import datetime
import decimal
import hashlib
import uuid

from django.apps import apps
from django.conf import settings
from django.db.models.signals import m2m_changed, post_delete, post_save, pre_save

from core.fields import is_secret_field

AUDITED_APPS = {"auth", "authtoken", "core", "registries", "rules", "pipeline", "clusters"}
MASK = "••••••"
# Fields that are secrets although they are not EncryptedTextFields, by model label.
MASKED_FIELDS = {settings.AUTH_USER_MODEL: {"password"}, "authtoken.Token": {"key"}, "authtoken.TokenProxy": {"key"}}
# Fields that change on their own (e.g. at every login) and would only bury real changes.
IGNORED_FIELDS = {settings.AUTH_USER_MODEL: {"last_login"}}
TOKEN_MODELS = {"authtoken.Token", "authtoken.TokenProxy"}
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
    """(user or None, source) for the change being made right now.

    Source is "api" or "admin" by URL; other requests are "ui" when a user is logged in and
    "system" otherwise (e.g. webhook intake), as are changes made outside any request.
    """
    request = _request.get()
    if request is None:
        return None, "system"
    user = getattr(request, "user", None)
    user = user if user is not None and user.is_authenticated else None
    path = request.path_info
    if path.startswith("/api/"):
        return user, "api"
    if path.startswith("/admin/"):
        return user, "admin"
    return user, "ui" if user is not None else "system"


def _is_audited(model) -> bool:
    meta = model._meta
    if meta.app_label not in AUDITED_APPS or not getattr(model, "audit_log", True):
        return False
    return not (meta.app_label == "core" and meta.model_name == "auditentry")


def _plain(value):
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, (decimal.Decimal, uuid.UUID)):
        return str(value)
    if isinstance(value, (str, int, float, bool, list, dict)) or value is None:
        return value
    return str(value)


def _is_masked(model, field) -> bool:
    return is_secret_field(field) or field.name in MASKED_FIELDS.get(model._meta.label, ())


def _fingerprint(raw) -> str:
    """Tells whether a secret changed without keeping it (only ever held in memory)."""
    return hashlib.sha256(str(raw).encode()).hexdigest()


def snapshot(instance) -> dict:
    """Field name → plain value (secrets masked) for concrete, non-m2m fields."""
    model = type(instance)
    ignored = IGNORED_FIELDS.get(model._meta.label, ())
    values = {}
    for field in model._meta.concrete_fields:
        # auto_now timestamps change at every save: they would turn every save into a "change".
        if field.name in ignored or getattr(field, "auto_now", False):
            continue
        raw = field.value_from_object(instance)
        if _is_masked(model, field):
            values[field.name] = MASK if raw else ""
            values[f"__secret__{field.name}"] = _fingerprint(raw) if raw else None
        else:
            values[field.name] = _plain(raw)
    return values


def _public(values: dict) -> dict:
    return {name: value for name, value in values.items() if not name.startswith("__secret__")}


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


def _identity(instance, user):
    """(object id, object name, actor) — API tokens are named by their user, never by their key."""
    if instance._meta.label in TOKEN_MODELS:
        owner = instance.user
        return str(owner.pk), f"API token of {owner.get_username()}", user or owner
    return str(instance.pk), str(instance)[:200], user


def record(action: str, instance, changes: dict) -> None:
    """Store one audit entry for `instance`, attributed to the current request's user and door."""
    AuditEntry = apps.get_model("core", "AuditEntry")
    user, source = current_actor()
    object_id, object_repr, user = _identity(instance, user)
    if action == "delete" and user is not None and instance._meta.label == settings.AUTH_USER_MODEL:
        # A user deleting their own account: the row the actor would point at is gone.
        user = None if user.pk == instance.pk else user
    AuditEntry.objects.create(
        actor=user,
        actor_name=user.get_username() if user else source,
        source=source,
        action=action,
        app_label=instance._meta.app_label,
        model=instance._meta.model_name,
        object_id=object_id,
        object_repr=object_repr,
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


def _post_save(sender, instance, created, raw=False, update_fields=None, **kwargs):
    if raw or not _is_audited(sender):
        return
    before = getattr(instance, "_audit_before", None)
    instance._audit_before = None
    after = snapshot(instance)
    if created or before is None:
        record("create", instance, {k: {"old": None, "new": v} for k, v in _public(after).items()})
        return
    changes = _diff(before, after)
    if update_fields is not None:
        # Only these columns were written; other in-memory differences never reached the database.
        saved = {sender._meta.get_field(name).name for name in update_fields}
        changes = {name: change for name, change in changes.items() if name in saved}
    if changes:
        record("update", instance, changes)


def _post_delete(sender, instance, **kwargs):
    if _is_audited(sender):
        record("delete", instance, {k: {"old": v, "new": None} for k, v in _public(snapshot(instance)).items()})


def _m2m_changed(sender, instance, action, reverse, model, pk_set, **kwargs):
    if action not in {"pre_clear", "post_add", "post_remove", "post_clear"} or not _is_audited(type(instance)):
        return
    if action == "pre_clear":
        # The cleared objects are gone by post_clear: remember their names now.
        instance._audit_cleared = sorted(str(obj) for obj in _related(instance, sender, reverse).all())
        return
    if reverse:
        field = model._meta.verbose_name_plural
    else:
        field = next(f.name for f in type(instance)._meta.many_to_many if f.remote_field.through is sender)
    if action == "post_clear":
        names = getattr(instance, "_audit_cleared", [])
        if not names:
            return
    else:
        names = sorted(str(obj) for obj in model._default_manager.filter(pk__in=pk_set or []))
    verb = {"post_add": "added", "post_remove": "removed", "post_clear": "cleared"}[action]
    record("update", instance, {str(field): {verb: names}})


def _related(instance, through, reverse):
    """The manager of `instance`'s side of the many-to-many relation using `through`."""
    if reverse:
        relation = next(r for r in type(instance)._meta.related_objects if r.many_to_many and r.through is through)
        return getattr(instance, relation.get_accessor_name())
    field = next(f for f in type(instance)._meta.many_to_many if f.remote_field.through is through)
    return getattr(instance, field.name)


def connect_signals() -> None:
    pre_save.connect(_pre_save, dispatch_uid="apparate-audit-pre-save")
    post_save.connect(_post_save, dispatch_uid="apparate-audit-post-save")
    post_delete.connect(_post_delete, dispatch_uid="apparate-audit-post-delete")
    m2m_changed.connect(_m2m_changed, dispatch_uid="apparate-audit-m2m")
