"""pytest plugin: users holding each role, and logged-in web and API clients for them."""

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client
from rest_framework.test import APIClient

from core.roles import Role

PASSWORD = "correct-horse-battery-9"


@pytest.fixture
def make_user(db):
    """make_user(Role.OPERATOR) → a user in that role's group (password PASSWORD)."""

    def factory(role: Role, username: str | None = None) -> User:
        user = User.objects.create_user(username or f"{role.group_name}-user", password=PASSWORD)
        if role != Role.NONE:
            user.groups.add(Group.objects.get_or_create(name=role.group_name)[0])
        return user

    return factory


@pytest.fixture
def client_as(make_user):
    """client_as(Role.VIEWER) → a Django test client logged in as a fresh user of that role."""

    def factory(role: Role) -> Client:
        client = Client()
        client.force_login(make_user(role, f"web-{role.group_name}"))
        return client

    return factory


@pytest.fixture
def api_as(make_user):
    """api_as(Role.ADMIN) → a DRF APIClient authenticated as a fresh user of that role."""

    def factory(role: Role) -> APIClient:
        client = APIClient()
        client.force_authenticate(make_user(role, f"api-{role.group_name}"))
        return client

    return factory
