"""Database trouble answers 503 + Retry-After, JSON for machines, a page for people (issue 11 #13).

Real locks, no mocks: on PostgreSQL a second connection holds an exclusive table lock and the
request's connection runs into lock_timeout; on SQLite (what `make run` uses) a second connection
holds the write lock of the real file while a real `manage.py runserver` answers requests.
"""

import json
import os
import re
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from urllib.parse import urlencode

import psycopg2
import pytest
from django.conf import settings
from django.db import connection
from django.test import Client, RequestFactory
from rest_framework.test import APIClient

from console.settings import BASE_DIR
from core.errors import server_error
from core.roles import Role
from registries.models import Instance
from tests.console.test_runconsole import free_port
from tests.registries.conftest import envelope, manifest_event

RETRY_MESSAGE = ("The database is busy or unavailable right now, so this request could not be completed. "
                 "Try again in 10 seconds.")


def test_lock_wait_is_five_seconds_on_both_databases():
    assert settings.DATABASE_LOCK_TIMEOUT == 5
    assert "-c lock_timeout=5000" in settings.DATABASES["default"]["OPTIONS"]["options"]


@pytest.fixture(params=["lock_timeout", "statement_timeout"])
def locked_instances(request, transactional_db):
    """An instance, then a second PostgreSQL connection holding an exclusive lock on its table; the
    request's wait ends by lock_timeout (what the settings set) or by a statement_timeout."""
    instance = Instance.objects.create(name="main", url="http://registry.example", acceleration_enabled=True)
    with connection.cursor() as cursor:
        cursor.execute("SHOW lock_timeout")
        assert cursor.fetchone()[0] == "5s"  # what the settings give every connection
        if request.param == "lock_timeout":
            cursor.execute("SET lock_timeout = '300ms'")  # the same error, sooner
        else:
            cursor.execute("SET lock_timeout = 0")
            cursor.execute("SET statement_timeout = '300ms'")
    db = settings.DATABASES["default"]
    holder = psycopg2.connect(dbname=db["NAME"], user=db["USER"], host=db["HOST"] or "127.0.0.1",
                              port=db["PORT"] or 5432, password=db.get("PASSWORD") or None)
    with holder.cursor() as cursor:
        cursor.execute("LOCK TABLE registries_instance IN ACCESS EXCLUSIVE MODE")
    try:
        yield instance
    finally:
        holder.rollback()
        holder.close()
        with connection.cursor() as cursor:  # the session's own values again, before the teardown's flush
            cursor.execute("RESET lock_timeout")
            cursor.execute("RESET statement_timeout")


def test_postgresql_lock_timeout_gives_json_503_to_api_and_webhook_and_a_page_to_people(locked_instances,
                                                                                           make_user):
    instance = locked_instances
    api = APIClient(raise_request_exception=False)
    api.force_authenticate(make_user(Role.ADMIN, "api-admin"))
    response = api.patch(f"/api/v1/instances/{instance.pk}/", {"description": "x"}, format="json")
    assert response.status_code == 503
    assert response["Retry-After"] == "10"
    assert response.json() == {"detail": RETRY_MESSAGE}

    hook = Client(raise_request_exception=False).post(
        f"/webhooks/registry/{instance.pk}/", envelope(manifest_event("team/app")), content_type="application/json",
        HTTP_AUTHORIZATION="whatever")
    assert hook.status_code == 503 and hook["Retry-After"] == "10"
    assert hook.json() == {"detail": RETRY_MESSAGE}

    web = Client(raise_request_exception=False)
    web.force_login(make_user(Role.VIEWER, "web-viewer"))
    page = web.get(f"/instances/{instance.pk}/")
    assert page.status_code == 503 and page["Retry-After"] == "10"
    assert page["Content-Type"].startswith("text/html")
    assert "Try again in a moment" in page.content.decode() and RETRY_MESSAGE in page.content.decode()


def test_other_server_errors_are_json_for_api_clients(make_user, db):
    """A bug is still a 500, but an API client gets JSON, never an HTML page."""
    api_request = RequestFactory().get("/api/v1/instances/")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        response = server_error(api_request)
    assert response.status_code == 500
    assert json.loads(response.content) == {"detail": "Server error; it has been logged."}
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        page = server_error(RequestFactory().get("/instances/"))
    assert page.status_code == 500 and "Something went wrong on our side" in page.content.decode()


# --- SQLite, as under `make run` ---------------------------------------------------------------------

def manage(env, *args) -> str:
    return subprocess.run([sys.executable, "manage.py", *args], cwd=BASE_DIR, env=env, check=True,
                          capture_output=True, text=True, timeout=120).stdout


def request(url, data=None, headers=None, method=None):
    req = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=60) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()
    except urllib.error.URLError:
        return None, {}, b""


def test_sqlite_write_lock_gives_503_within_the_lock_wait(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "CELERY_BROKER_URL"}}
    env |= {"APPARATE_VAR_DIR": str(tmp_path), "PYTHONUNBUFFERED": "1"}
    manage(env, "migrate", "--noinput")
    setup = ("from django.contrib.auth.models import User; from rest_framework.authtoken.models import Token; "
             "from registries.models import Instance; import json; "
             "u = User.objects.create_superuser('root', password='correct-horse-battery-9'); "
             "i = Instance.objects.create(name='main', url='http://registry.example', acceleration_enabled=True); "
             "print(json.dumps([Token.objects.create(user=u).key, i.pk, i.webhook_secret]))")
    token, instance_id, secret = json.loads(manage(env, "shell", "-c", setup).strip().splitlines()[-1])
    port = free_port()
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen([sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"],
                              cwd=BASE_DIR, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    holder = sqlite3.connect(tmp_path / "apparate.sqlite3", isolation_level=None)
    try:
        deadline = time.monotonic() + 60
        while request(f"{base}/login/")[0] != 200:
            assert time.monotonic() < deadline and server.poll() is None, "runserver did not start"
            time.sleep(0.3)
        holder.execute("BEGIN IMMEDIATE")  # the write lock, as a long write elsewhere would hold it

        new_instance = json.dumps({"name": "n", "url": "https://n.example"}).encode()
        api_headers = {"Authorization": f"Token {token}", "Content-Type": "application/json"}
        status, headers, body = request(f"{base}/api/v1/instances/", new_instance, api_headers)
        assert (status, headers["Retry-After"], json.loads(body)) == (503, "10", {"detail": RETRY_MESSAGE})

        status, headers, body = request(f"{base}/webhooks/registry/{instance_id}/", envelope(manifest_event("team/a")),
                                        {"Authorization": secret, "Content-Type": "application/json"})
        assert (status, headers["Content-Type"]) == (503, "application/json")
        assert json.loads(body) == {"detail": RETRY_MESSAGE}

        # A person logging in (last_login and the session are written): a 503 page, not a 500.
        holder.execute("ROLLBACK")
        _, headers, body = request(f"{base}/login/")
        cookie = headers["Set-Cookie"].split(";")[0]
        csrf = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', body).group(1).decode()
        holder.execute("BEGIN IMMEDIATE")
        form = urlencode({"csrfmiddlewaretoken": csrf, "username": "root", "password": "correct-horse-battery-9"})
        status, headers, body = request(f"{base}/login/", form.encode(),
                                        {"Cookie": cookie, "Content-Type": "application/x-www-form-urlencoded"})
        assert (status, headers["Retry-After"]) == (503, "10")
        assert headers["Content-Type"].startswith("text/html") and RETRY_MESSAGE in body.decode()
        holder.execute("ROLLBACK")

        # The lock gone, the same requests go through.
        status, _, body = request(f"{base}/api/v1/instances/", new_instance, api_headers)
        assert status == 201 and json.loads(body)["name"] == "n"
    finally:
        holder.close()
        server.terminate()
        server.wait(timeout=20)
        log.close()
    logged = (tmp_path / "server.log").read_text()
    assert "database trouble on POST /api/v1/instances/: database is locked" in logged


def test_not_found_and_forbidden_fit_the_client(client_as):
    viewer = client_as(Role.VIEWER)
    api_miss = viewer.get("/api/v1/no-such-thing/")
    assert api_miss.status_code == 404 and api_miss.json() == {"detail": "Nothing at /api/v1/no-such-thing/."}
    page_miss = viewer.get("/no-such-page/")
    assert page_miss.status_code == 404
    assert "There is nothing at <code>/no-such-page/</code>" in page_miss.content.decode()
    refused = viewer.get("/rules/new/")
    assert refused.status_code == 403
    page = refused.content.decode()
    assert "This needs the operator role." in page and "Your role: <strong>viewer</strong>" in page
