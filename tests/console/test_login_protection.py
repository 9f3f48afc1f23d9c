"""Brute force (issue 11 #6): failed logins lock the username and the client address, on the login
page, Django admin and the token endpoint alike; a locked attempt costs no password hashing."""

import re

import pytest
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.test import Client
from rest_framework.test import APIClient

from core.roles import Role
from tests.support.users import PASSWORD

pytestmark = pytest.mark.django_db
LIMIT = 10
LOCKOUT = ("Too many failed logins for this username or from this address. Try again in 15 minutes, or ask an "
           "administrator to unlock it (Django admin → Access attempts).")


def web_login(username, password, address="10.0.0.1"):
    return Client(REMOTE_ADDR=address).post("/login/", {"username": username, "password": password})


def token(username, password, address="10.0.0.1"):
    return APIClient(REMOTE_ADDR=address).post("/api/v1/auth/token/", {"username": username, "password": password},
                                               format="json")


def test_login_page_locks_a_username_after_the_limit(make_user):
    make_user(Role.VIEWER, "carol")
    for attempt in range(LIMIT - 1):
        assert web_login("carol", f"wrong-{attempt}", address=f"10.0.1.{attempt}").status_code == 200
    assert web_login("carol", "wrong-last", address="10.0.2.1").status_code == 429  # the 10th failure locks
    # The right password, from yet another address, is refused while the lock lasts.
    locked = web_login("carol", PASSWORD, address="10.0.3.1")
    assert locked.status_code == 429 and locked["Retry-After"] == "900"
    page = locked.content.decode()
    assert LOCKOUT in page and '<form method="post"' in page
    assert "_auth_user_id" not in locked.client.session


def test_a_success_before_the_limit_resets_the_count(make_user):
    make_user(Role.VIEWER, "dave")
    for _ in range(2):
        for attempt in range(LIMIT - 1):
            assert web_login("dave", f"wrong-{attempt}").status_code == 200
        assert web_login("dave", PASSWORD).status_code == 302  # logged in: the count starts again


def test_one_address_guessing_many_usernames_is_locked_out(make_user):
    make_user(Role.VIEWER, "erin")
    for attempt in range(LIMIT):
        web_login(f"user-{attempt}", "guess", address="10.9.9.9")
    assert web_login("erin", PASSWORD, address="10.9.9.9").status_code == 429
    assert web_login("erin", PASSWORD, address="10.9.9.10").status_code == 302  # others are not affected


def test_token_endpoint_answers_429_json_with_retry_after(make_user):
    make_user(Role.VIEWER, "ci-bot")
    for attempt in range(LIMIT - 1):
        assert token("ci-bot", f"wrong-{attempt}").status_code == 400
    tenth = token("ci-bot", "wrong-again")
    assert tenth.status_code == 429
    right = token("ci-bot", PASSWORD, address="10.7.7.7")
    assert right.status_code == 429
    assert right["Retry-After"] == "900"
    assert right.json() == {"detail": f"{LOCKOUT} Expected available in 900 seconds."}
    # The web login shares the count: the same username is locked there too.
    assert web_login("ci-bot", PASSWORD, address="10.8.8.8").status_code == 429


def test_admin_login_is_protected_too(make_user):
    make_user(Role.ADMIN, "root")
    client = Client(REMOTE_ADDR="10.5.5.5")
    for attempt in range(LIMIT):
        client.post("/admin/login/", {"username": "root", "password": f"wrong-{attempt}"})
    locked = Client(REMOTE_ADDR="10.6.6.6").post("/admin/login/?next=/admin/", {"username": "root",
                                                                                "password": PASSWORD})
    assert locked.status_code == 429 and LOCKOUT in locked.content.decode()


@pytest.fixture(autouse=True)
def counting_hasher(settings):
    """Every password of these tests is hashed by CountingHasher (cheap, and counted)."""
    settings.PASSWORD_HASHERS = ["tests.console.test_login_protection.CountingHasher"]


class CountingHasher(PBKDF2PasswordHasher):
    """PBKDF2 that counts how often a password is hashed or checked."""

    algorithm = "counting_pbkdf2"
    iterations = 1000
    calls = 0

    def encode(self, password, salt, iterations=None):
        CountingHasher.calls += 1
        return super().encode(password, salt, iterations)


def test_a_locked_out_attempt_hashes_no_password(make_user):
    make_user(Role.VIEWER, "frank")
    for attempt in range(LIMIT):
        web_login("frank", f"wrong-{attempt}")
    CountingHasher.calls = 0
    for attempt in range(20):
        assert web_login("frank", f"guess-{attempt}").status_code == 429
        assert token("frank", f"guess-{attempt}").status_code == 429
    assert CountingHasher.calls == 0
    web_login("someone-else", "x", address="10.4.4.4")  # an allowed attempt does hash (the control)
    assert CountingHasher.calls >= 1


def test_lockout_does_not_record_the_password(make_user):
    from axes.models import AccessAttempt

    make_user(Role.VIEWER, "gina")
    web_login("gina", "hunter2-secret")
    attempt = AccessAttempt.objects.get(username="gina")
    assert "hunter2-secret" not in attempt.post_data and re.search(r"password=\*+", attempt.post_data)
