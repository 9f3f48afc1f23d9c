"""The shell in Debian's chromium: log in, dashboard, audit log, confirmation dialog, phone width."""

import re

import pytest
from django.contrib.auth.models import Group
from playwright.sync_api import expect

from core.roles import Role
from tests.support.browser import login
from tests.support.users import PASSWORD

pytestmark = pytest.mark.browser  # live_server makes the database transactional


def test_login_dashboard_and_audit_log(page, live_server, make_user):
    make_user(Role.ADMIN, "alice")
    Group.objects.create(name="release-managers")  # something for the audit log

    page.goto(live_server.url + "/audit/")
    expect(page).to_have_url(re.compile(r"/login/\?next=/audit/"))
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill("wrong password")
    page.get_by_role("button", name="Log in").click()
    expect(page.locator(".errorlist.nonfield")).to_contain_text("correct username and password")

    login(page, live_server.url, "alice", PASSWORD)
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
    expect(page.get_by_role("heading", name="Getting started")).to_be_visible()
    expect(page.locator(".account")).to_contain_text("alice")
    expect(page.locator(".account .badge")).to_have_text("admin")
    # Our stylesheet is loaded from the live server (the top bar is dark, not the browser default).
    background = page.locator(".topbar").evaluate("el => getComputedStyle(el).backgroundColor")
    assert background == "rgb(22, 27, 46)"
    menu = page.get_by_role("navigation", name="Main")
    expect(menu.get_by_role("link", name="Jobs")).to_have_attribute("href", "/rules/jobs/")

    page.get_by_role("navigation", name="Main").get_by_role("link", name="Audit").click()
    expect(page.get_by_role("heading", name="Audit log")).to_be_visible()
    expect(page.locator('.menu-item[aria-current="page"]')).to_have_text("Audit")
    row = page.locator(".audit-table > tbody > tr", has_text="release-managers")
    expect(row).to_contain_text("Created")
    expect(row.locator(".changes")).to_contain_text("release-managers")

    page.get_by_label("Object name").fill("release")
    page.get_by_label("Source").select_option("system")
    page.get_by_role("button", name="Filter").click()
    expect(page).to_have_url(re.compile(r"q=release"))
    expect(page.locator(".audit-table > tbody > tr")).to_have_count(1)

    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(re.compile(r"/login/$"))


def test_confirmation_dialog_guards_destructive_forms(page, live_server, make_user):
    make_user(Role.VIEWER, "viewer")
    login(page, live_server.url, "viewer", PASSWORD)
    page.evaluate(
        """() => document.querySelector('main').insertAdjacentHTML('beforeend',
        '<form method="get" action="/audit/" data-confirm="Delete the instance hub?" data-confirm-button="Delete">'
        + '<button type="submit">Delete hub</button></form>')"""
    )
    page.get_by_role("button", name="Delete hub").click()
    dialog = page.locator("#confirm-dialog")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("Delete the instance hub?")
    dialog.get_by_role("button", name="Cancel").click()
    expect(dialog).to_be_hidden()
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()

    page.get_by_role("button", name="Delete hub").click()
    dialog.get_by_role("button", name="Delete").click()
    expect(page.get_by_role("heading", name="Audit log")).to_be_visible()


def test_copy_button_copies_code_blocks(page, live_server, make_user):
    make_user(Role.VIEWER, "viewer")
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    login(page, live_server.url, "viewer", PASSWORD)
    page.evaluate(
        """() => document.querySelector('main').insertAdjacentHTML('beforeend',
        '<div class="code-block"><button type="button" class="copy">Copy</button><pre>notifications: {}</pre></div>')"""
    )
    page.get_by_role("button", name="Copy").click()
    expect(page.locator("button.copy")).to_have_text("Copied")
    assert page.evaluate("() => navigator.clipboard.readText()") == "notifications: {}"


def test_layout_fits_a_phone(page, live_server, make_user):
    make_user(Role.VIEWER, "viewer")
    page.set_viewport_size({"width": 375, "height": 740})
    login(page, live_server.url, "viewer", PASSWORD)
    page.goto(live_server.url + "/audit/")
    expect(page.get_by_role("navigation", name="Main").get_by_role("link", name="Dashboard")).to_be_visible()
    overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0
