"""pytest plugin: Debian's chromium driven by Playwright, a fresh page per test, and `login`.

The browser is launched once per session; each test gets its own context (cookies, storage), so
tests never share a session. Playwright's sync API runs an event loop in the test thread, which
Django's async-safety check would otherwise refuse when the test touches the database.
"""

import os

import pytest
from django.contrib.auth.models import Group
from playwright.sync_api import Browser, Page, expect, sync_playwright

from core.roles import ROLE_GROUPS

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TIMEOUT_MS = 15_000


@pytest.fixture(scope="session")
def browser() -> Browser:
    """One headless chromium for the whole session."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def role_groups(transactional_db) -> None:
    """The viewer/operator/admin groups, recreated if an earlier live_server test flushed them."""
    for role in ROLE_GROUPS:
        Group.objects.get_or_create(name=role.group_name)


@pytest.fixture
def page(browser, role_groups) -> Page:
    """A page in a new browser context (no cookies shared between tests).

    Browser tests use `live_server`, so their database is transactional and flushed after each
    test (which also drops the role groups created by migrations; `role_groups` restores them).
    """
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    try:
        yield page
    finally:
        context.close()


def login(page: Page, live_server_url: str, username: str, password: str) -> None:
    """Log in through the login form and wait until the console has left the login page."""
    page.goto(f"{live_server_url}/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("button", name="Log out")).to_be_visible()
