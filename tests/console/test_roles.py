"""Roles as groups: hierarchy, view mixin/decorator and the DRF permission (viewer refused writes)."""

import pytest
from django.contrib.auth.models import Group, User
from rest_framework.test import APIClient

from core.roles import Role, has_role, role_of
from tests.support.users import PASSWORD

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.console.urls")]


def test_role_of_takes_the_highest_group_and_superusers_are_admins(make_user):
    viewer = make_user(Role.VIEWER)
    assert role_of(viewer) is Role.VIEWER
    both = make_user(Role.VIEWER, "both")
    both.groups.add(Group.objects.get(name="operator"))
    assert role_of(User.objects.get(pk=both.pk)) is Role.OPERATOR
    assert has_role(both, Role.VIEWER) and not has_role(both, Role.ADMIN)
    root = User.objects.create_superuser("root", password=PASSWORD)
    assert role_of(root) is Role.ADMIN
    assert role_of(make_user(Role.NONE, "nobody")) is Role.NONE


def test_inactive_and_anonymous_users_have_no_role(make_user):
    admin = make_user(Role.ADMIN)
    admin.is_active = False
    assert role_of(admin) is Role.NONE
    assert role_of(None) is Role.NONE


def test_role_required_reads_for_viewers_writes_for_the_write_role(client_as):
    viewer = client_as(Role.VIEWER)
    assert viewer.get("/test/groups/").status_code == 200
    response = viewer.post("/test/groups/", {"name": "blocked"})
    assert response.status_code == 403
    assert b"This needs the admin role." in response.content
    assert not Group.objects.filter(name="blocked").exists()
    assert client_as(Role.ADMIN).post("/test/groups/", {"name": "allowed"}).status_code == 200
    assert Group.objects.filter(name="allowed").exists()


def test_role_required_sends_anonymous_users_to_login(client):
    response = client.get("/test/groups/")
    assert response.status_code == 302
    assert response["Location"].startswith("/login/?next=")


def test_user_without_role_is_refused_even_reading(client_as):
    response = client_as(Role.NONE).get("/test/groups/")
    assert response.status_code == 403
    assert b"have access to this" in response.content
    assert b"This needs the viewer role." in response.content


def test_role_required_mixin(client_as, client):
    assert client.get("/test/operator/").status_code == 302
    viewer = client_as(Role.VIEWER)
    assert viewer.get("/test/operator/").status_code == 200
    assert viewer.post("/test/operator/").status_code == 403
    assert client_as(Role.OPERATOR).post("/test/operator/").content == b"wrote"


def test_api_viewer_reads_but_every_write_is_refused_and_changes_nothing(api_as):
    group = Group.objects.create(name="existing")
    viewer = api_as(Role.VIEWER)
    assert viewer.get("/api/v1/test-groups/").status_code == 200
    before = list(Group.objects.order_by("pk").values_list("pk", "name"))
    assert viewer.post("/api/v1/test-groups/", {"name": "new"}, format="json").status_code == 403
    assert viewer.patch(f"/api/v1/test-groups/{group.pk}/", {"name": "x"}, format="json").status_code == 403
    assert viewer.put(f"/api/v1/test-groups/{group.pk}/", {"name": "x"}, format="json").status_code == 403
    assert viewer.delete(f"/api/v1/test-groups/{group.pk}/").status_code == 403
    assert list(Group.objects.order_by("pk").values_list("pk", "name")) == before


def test_api_write_role_and_action_roles(api_as):
    operator = api_as(Role.OPERATOR)
    assert operator.post("/api/v1/test-groups/", {"name": "made"}, format="json").status_code == 201
    # action_roles lowers the role for one action: a viewer may call `ping` (a POST).
    assert api_as(Role.VIEWER).post("/api/v1/test-groups/ping/").json() == {"pong": True}


def test_api_refuses_anonymous_requests():
    response = APIClient().get("/api/v1/test-groups/")
    assert response.status_code in {401, 403}
