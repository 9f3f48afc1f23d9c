"""Security headers (issue 11 #14): the Content-Security-Policy on every answer, HSTS over HTTPS,
and the pages working under that policy in a real browser with no violation reported."""

import os
import re
import subprocess
import sys

import pytest
from django.contrib.auth.models import User
from django.test import Client, override_settings
from playwright.sync_api import expect

from console.settings import BASE_DIR
from core.roles import Role
from registries.models import Instance
from rules.models import Rule
from tests.support.browser import login
from tests.support.users import PASSWORD

POLICY = ("default-src 'self'", "script-src 'self'", "style-src 'self'", "img-src 'self' data:",
          "object-src 'none'", "base-uri 'self'", "form-action 'self'", "frame-ancestors 'none'")


def directives(header: str) -> set[str]:
    return {part.strip() for part in header.split(";")}


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/login/", "/api/v1/", "/api/v1/schema/", "/no-such-page/", "/metrics"])
def test_every_answer_carries_the_policy(path):
    response = Client().get(path)
    assert set(POLICY) <= directives(response["Content-Security-Policy"])
    assert "unsafe-inline" not in response["Content-Security-Policy"]
    assert "unsafe-eval" not in response["Content-Security-Policy"]


def settings_value(name: str, **env: str) -> str:
    environment = {**os.environ, "DJANGO_SETTINGS_MODULE": "console.settings", **env}
    if "SECURE_COOKIES" not in env:
        environment.pop("SECURE_COOKIES", None)
    code = f"from django.conf import settings; print(settings.{name})"
    return subprocess.run([sys.executable, "-c", f"import django; django.setup(); {code}"], cwd=BASE_DIR,
                          env=environment, capture_output=True, text=True, check=True).stdout.strip()


def test_hsts_follows_secure_cookies():
    assert settings_value("SECURE_HSTS_SECONDS") == "0"
    assert settings_value("SECURE_HSTS_SECONDS", SECURE_COOKIES="1") == "31536000"
    assert settings_value("SECURE_HSTS_SECONDS", SECURE_COOKIES="1", APPARATE_HSTS_SECONDS="600") == "600"


@pytest.mark.django_db
def test_hsts_header_is_sent_over_https_when_on():
    with override_settings(SECURE_HSTS_SECONDS=31536000):
        assert Client().get("/login/", secure=True)["Strict-Transport-Security"] == "max-age=31536000"
        assert "Strict-Transport-Security" not in Client().get("/login/")  # never over plain HTTP
    assert "Strict-Transport-Security" not in Client().get("/login/", secure=True)


def test_templates_have_no_inline_script_handlers_or_styles():
    offenders = []
    for path in (BASE_DIR / "templates").rglob("*.html"):
        text = path.read_text()
        if re.search(r"<script(?![^>]*\bsrc=)[^>]*>|\son[a-z]+=|\sstyle=|<style|javascript:", text):
            offenders.append(str(path.relative_to(BASE_DIR)))
    assert offenders == []


@pytest.mark.browser
def test_pages_work_under_the_policy_without_violations(page, live_server, make_user):
    admin = make_user(Role.ADMIN, "alice")
    User.objects.filter(pk=admin.pk).update(is_staff=True, is_superuser=True)
    instance = Instance.objects.create(name="local", url="http://127.0.0.1:9", acceleration_enabled=True)
    rule = Rule.objects.create(instance=instance, name="prod", namespace="team")
    messages = []
    page.on("console", lambda message: messages.append(f"{message.type}: {message.text}"))
    page.on("pageerror", lambda error: messages.append(f"pageerror: {error}"))

    login(page, live_server.url, "alice", PASSWORD)
    for path in ("/", "/instances/", f"/instances/{instance.pk}/", "/rules/", f"/rules/{rule.pk}/",
                 "/rules/jobs/", "/instances/events/", "/clusters/", "/clusters/nodes/", "/audit/", "/admin/"):
        page.goto(live_server.url + path)
        expect(page.locator("body")).to_be_visible()
    # htmx at work: the live search of the instance list and the live pattern check.
    page.goto(f"{live_server.url}/instances/")
    with page.expect_response(re.compile(r"/instances/\?q=loc")):
        page.get_by_role("searchbox").press_sequentially("loc", delay=30)
    page.goto(f"{live_server.url}/rules/new/")
    page.get_by_label("Tag pattern").press_sequentially("(x", delay=20)
    expect(page.locator("#check-tag_pattern")).to_contain_text("Invalid RE2 pattern")
    # Swagger UI renders from its own static files.
    page.goto(f"{live_server.url}/api/v1/docs/")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("apparate API")
    # (The admin's pages have no icon link, so the browser asks for /favicon.ico: a 404, not a violation.)
    assert [message for message in messages if "Failed to load resource" not in message] == []

    # The listener does see a violation: an inline style is refused and reported.
    page.evaluate("() => { const s = document.createElement('style'); s.textContent = 'body{}'; "
                  "document.head.appendChild(s); }")
    for _ in range(50):
        if any("Content Security Policy" in message for message in messages):
            break
        page.wait_for_timeout(100)
    assert any("Content Security Policy" in message for message in messages), messages
