"""The audit log records every change through each door with its actor; secrets never appear."""

import json

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from core.audit import MASK
from core.models import AuditEntry
from core.roles import Role
from registries.models import Instance
from tests.support.users import PASSWORD

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.console.urls")]


def entries_for(obj):
    return AuditEntry.objects.filter(
        app_label=obj._meta.app_label, model=obj._meta.model_name, object_id=str(obj.pk)
    ).order_by("id")


def test_web_form_create_update_delete_recorded_with_actor_and_ui_source(make_user):
    admin = make_user(Role.ADMIN, "alice")
    client = Client()
    client.force_login(admin)
    assert client.post("/test/groups/", {"name": "team-a"}).status_code == 200
    group = Group.objects.get(name="team-a")
    assert client.post(f"/test/groups/{group.pk}/", {"name": "team-b"}).status_code == 200
    assert client.post(f"/test/groups/{group.pk}/", {"delete": "1"}).status_code == 200

    created, updated, deleted = entries_for(group)
    assert [e.action for e in (created, updated, deleted)] == ["create", "update", "delete"]
    for entry in (created, updated, deleted):
        assert entry.actor == admin and entry.actor_name == "alice" and entry.source == "ui"
    assert created.changes["name"] == {"old": None, "new": "team-a"}
    assert updated.changes == {"name": {"old": "team-a", "new": "team-b"}}
    assert deleted.changes["name"] == {"old": "team-b", "new": None}
    assert deleted.object_repr == "team-b"


def test_token_authenticated_api_changes_carry_the_token_user():
    operator = User.objects.create_user("bob", password=PASSWORD)
    operator.groups.add(Group.objects.get(name="operator"))
    token = Token.objects.create(user=operator)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")

    response = api.post("/api/v1/test-groups/", {"name": "from-script"}, format="json")
    assert response.status_code == 201
    group_id = response.json()["id"]
    assert api.patch(f"/api/v1/test-groups/{group_id}/", {"name": "renamed"}, format="json").status_code == 200
    assert api.delete(f"/api/v1/test-groups/{group_id}/").status_code == 204

    entries = AuditEntry.objects.filter(model="group", object_id=str(group_id)).order_by("id")
    assert [(e.action, e.actor_id, e.actor_name, e.source) for e in entries] == [
        ("create", operator.pk, "bob", "api"),
        ("update", operator.pk, "bob", "api"),
        ("delete", operator.pk, "bob", "api"),
    ]


def test_admin_changes_recorded_with_admin_source(make_user):
    root = User.objects.create_superuser("root", password=PASSWORD)
    client = Client()
    client.force_login(root)
    assert client.post("/admin/auth/group/add/", {"name": "ops"}).status_code == 302
    group = Group.objects.get(name="ops")
    assert client.post(f"/admin/auth/group/{group.pk}/change/", {"name": "ops-2"}).status_code == 302
    assert client.post(f"/admin/auth/group/{group.pk}/delete/", {"post": "yes"}).status_code == 302
    assert not Group.objects.filter(pk=group.pk).exists()
    entries = entries_for(group)
    assert [(e.action, e.actor_id, e.source) for e in entries] == [
        ("create", root.pk, "admin"), ("update", root.pk, "admin"), ("delete", root.pk, "admin")
    ]


def test_changes_outside_requests_are_attributed_to_system():
    group = Group.objects.create(name="from-a-task")
    entry = entries_for(group).get()
    assert (entry.actor, entry.actor_name, entry.source) == (None, "system", "system")


def test_group_membership_changes_are_recorded_by_name(make_user):
    admin = make_user(Role.ADMIN, "carol")
    target = make_user(Role.VIEWER, "dave")
    client = Client()
    client.force_login(admin)
    AuditEntry.objects.all().delete()

    client.post(f"/test/users/{target.pk}/groups/", {"groups": ["viewer", "operator"]})
    client.post(f"/test/users/{target.pk}/groups/", {"groups": ["operator"]})
    changes = [e.changes for e in entries_for(target)]
    assert changes == [{"groups": {"added": ["operator"]}}, {"groups": {"removed": ["viewer"]}}]
    assert {e.actor_name for e in entries_for(target)} == {"carol"}

    target.groups.clear()
    assert entries_for(target).last().changes == {"groups": {"cleared": ["operator"]}}
    # The reverse side (group.user_set) is recorded on the group.
    group = Group.objects.get(name="admin")
    group.user_set.add(target)
    assert entries_for(group).last().changes == {"users": {"added": ["dave"]}}


def test_encrypted_fields_are_masked_on_create_update_and_delete():
    instance = Instance.objects.create(name="hub", url="https://registry.example", password="s3cret-pass")
    secret = instance.webhook_secret
    instance.password = "n3w-pass"
    instance.save()
    instance.description = "only the description"
    instance.save()
    entries = entries_for(instance)
    instance.delete()

    created, password_changed, described, deleted = entries
    assert created.changes["password"] == {"old": None, "new": MASK}
    assert created.changes["webhook_secret"] == {"old": None, "new": MASK}
    assert password_changed.changes == {"password": {"old": MASK, "new": MASK}}
    assert "password" not in described.changes and set(described.changes) == {"description"}
    assert deleted.changes["password"] == {"old": MASK, "new": None}
    stored = json.dumps(list(AuditEntry.objects.values()), default=str)
    for plaintext in ("s3cret-pass", "n3w-pass", secret):
        assert plaintext not in stored


def test_password_changes_are_masked_and_logins_are_not_noise(make_user):
    user = make_user(Role.VIEWER, "erin")
    old_hash = user.password
    user.set_password("another-long-passphrase-7")
    user.save()
    entry = entries_for(user).last()
    assert entry.changes == {"password": {"old": MASK, "new": MASK}}
    stored = json.dumps(list(AuditEntry.objects.values()), default=str)
    assert old_hash not in stored and user.password not in stored

    count = AuditEntry.objects.count()
    assert Client().login(username="erin", password="another-long-passphrase-7")
    assert AuditEntry.objects.count() == count  # last_login changes are not audited


def test_admin_password_change_is_masked():
    root = User.objects.create_superuser("root", password=PASSWORD)
    client = Client()
    client.force_login(root)
    new = "brand-new-passphrase-42"
    response = client.post(
        f"/admin/auth/user/{root.pk}/password/", {"password1": new, "password2": new, "usable_password": "true"}
    )
    assert response.status_code == 302
    entry = entries_for(root).last()
    assert (entry.source, entry.changes) == ("admin", {"password": {"old": MASK, "new": MASK}})


def test_api_token_key_never_recorded_and_named_after_its_user(make_user):
    user = make_user(Role.VIEWER, "frank")
    response = APIClient().post("/api/v1/auth/token/", {"username": "frank", "password": PASSWORD}, format="json")
    assert response.status_code == 200
    key = response.json()["token"]
    entry = AuditEntry.objects.get(app_label="authtoken")
    assert entry.object_repr == "API token of frank"
    assert (entry.actor, entry.source, entry.changes["key"]["new"]) == (user, "api", MASK)
    assert key not in json.dumps(list(AuditEntry.objects.values()), default=str)


def test_partial_saves_record_only_the_fields_written():
    instance = Instance.objects.create(name="hub", url="https://registry.example")
    instance.description = "changed in memory only"
    instance.acceleration_enabled = True
    instance.save(update_fields=["acceleration_enabled"])
    assert entries_for(instance).last().changes == {"acceleration_enabled": {"old": False, "new": True}}
    instance.save(update_fields=["url"])  # nothing written changed: no entry
    assert entries_for(instance).count() == 2
