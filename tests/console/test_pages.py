"""Shell pages: layout and menu, dashboard figures and checklist, audit log page, error pages."""

import re
from datetime import timedelta

import pytest
from django.contrib.auth.models import Group
from django.test import Client
from django.utils import timezone

from clusters.models import Cluster, Node
from core.actions import record_heartbeat
from core.models import AuditEntry
from core.roles import Role
from pipeline.models import PushEvent
from registries.models import Instance
from rules.models import Rule

pytestmark = pytest.mark.django_db


def html(response) -> str:
    assert response.status_code == 200, response.status_code
    return response.content.decode()


def test_layout_menu_marks_the_active_section_and_links_pipeline_pages(client_as):
    page = html(client_as(Role.VIEWER).get("/audit/"))
    assert re.search(r'<a class="menu-item active" href="/audit/" aria-current="page">Audit</a>', page)
    assert '<a class="menu-item" href="/">Dashboard</a>' in page
    assert '<a class="menu-item" href="/instances/images/">Images</a>' in page
    assert '<a class="menu-item" href="/rules/jobs/">Jobs</a>' in page
    assert "web-viewer" in page and ">viewer</span>" in page
    assert 'action="/logout/"' in page
    assert "https://" not in page.split("<body")[0]  # no CDN assets in <head>


@pytest.mark.parametrize(
    ("path", "active"),
    [("/", "Dashboard"), ("/instances/", "Instances"), ("/instances/images/", "Images"),
     ("/rules/", "Rules"), ("/rules/jobs/", "Jobs"), ("/instances/events/", "Instances")],
)
def test_menu_marks_the_section_with_the_longest_matching_path(client_as, path, active):
    page = html(client_as(Role.VIEWER).get(path))
    assert re.findall(r'<a class="menu-item active" href="[^"]+" aria-current="page">([^<]+)</a>', page) == [active]


def test_static_assets_are_served(client):
    for path in ("/static/console/app.css", "/static/console/app.js", "/static/django_htmx/htmx.min.js"):
        response = client.get(path)
        assert response.status_code == 200, path
        assert b"".join(response.streaming_content) if response.streaming else response.content


def test_login_page_and_failed_login(client):
    page = html(client.get("/login/"))
    assert '<label for="id_username">Username</label>' in page
    failed = html(client.post("/login/", {"username": "nobody", "password": "wrong"}))
    assert 'class="errorlist nonfield"' in failed and "correct username and password" in failed


def test_logout_goes_back_to_login(client_as):
    client = client_as(Role.VIEWER)
    response = client.post("/logout/")
    assert response.status_code == 302 and response["Location"] == "/login/"
    assert client.get("/").status_code == 302


def test_404_and_403_render_in_the_layout(client_as):
    client = client_as(Role.VIEWER)
    missing = client.get("/no-such-page/")
    assert missing.status_code == 404
    assert b"Page not found" in missing.content and b"/no-such-page/" in missing.content
    assert b'class="topbar"' in missing.content
    denied = client_as(Role.NONE).get("/audit/")
    assert denied.status_code == 403
    assert b"This needs the viewer role." in denied.content


def test_500_page_renders_without_a_request_context():
    from django.template.loader import render_to_string

    page = render_to_string("500.html")
    assert "Something went wrong on our side" in page


def test_empty_dashboard_shows_the_getting_started_checklist(client_as):
    page = html(client_as(Role.VIEWER).get("/"))
    assert "Getting started" in page and "0 of 5 done" in page
    for step in ("Register a registry instance", "Enable acceleration", "Add an acceleration rule",
                 "Configure the registry webhook", "Register a Kubernetes cluster"):
        assert step in page
    assert "No worker has reported in yet." in page


def make_event(instance, outcome, reason, detail, tag, **extra):
    return PushEvent.objects.create(
        instance=instance, source="distribution", delivery_id=f"d-{tag}", namespace="team", repository="app",
        tag=tag, digest=f"sha256:{tag.encode().hex():0<64}", outcome=outcome, reason=reason, reason_detail=detail,
        **extra,
    )


def test_dashboard_counts_and_recent_skipped_reasons(client_as):
    hub = Instance.objects.create(name="hub", url="https://hub.example", acceleration_enabled=True)
    Instance.objects.create(name="quiet", url="https://quiet.example")
    Rule.objects.create(instance=hub, name="releases", namespace="team", enabled=True)
    Rule.objects.create(instance=hub, name="old", namespace="team", enabled=False)
    make_event(hub, "conversion_requested", "rule_matched", "Rule releases matched.", "1.0")
    make_event(hub, "skipped", "no_rule_matched", "tag '1.0-rc' does not fully match ^\\d+\\.\\d+$", "1.0-rc")
    stale = make_event(hub, "skipped", "acceleration_off", "Acceleration was off.", "0.9")
    PushEvent.objects.filter(pk=stale.pk).update(received_at=timezone.now() - timedelta(days=2))
    cluster = Cluster.objects.create(name="prod", server="https://k8s.example:6443")
    Node.objects.create(cluster=cluster, name="n1", labelled=True)
    Node.objects.create(cluster=cluster, name="n2")
    record_heartbeat("worker@host")

    page = html(client_as(Role.VIEWER).get("/"))
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page))
    assert "Registry instances 2 1 with acceleration on" in text
    assert "Rules 1 enabled of 2 in total" in text
    assert "Pushes, last 24 h 2 Conversion requested: 1 Skipped: 1" in text
    assert "Clusters 1 2 nodes, 1 labelled for acceleration" in text
    assert "tag &#x27;1.0-rc&#x27; does not fully match" in page  # the reason, escaped
    assert "team/app:0.9" in page  # older skipped pushes still listed
    assert "Running" in text and "worker@host" in text
    assert "Getting started" not in page  # every step done


def test_dashboard_checklist_ticks_steps_as_they_are_done(client_as):
    Instance.objects.create(name="hub", url="https://hub.example")
    page = html(client_as(Role.VIEWER).get("/"))
    assert "1 of 5 done" in page
    assert re.search(r'<li class="done">\s*<div>\s*<span class="step">Register a registry instance', page)


def audit_entry(**fields):
    defaults = dict(actor_name="system", source="system", action="update", app_label="rules", model="rule",
                    object_id="1", object_repr="releases", changes={})
    return AuditEntry.objects.create(**(defaults | fields))


def test_audit_page_lists_changes_as_field_old_new_rows(client_as):
    audit_entry(actor_name="alice", source="ui", changes={"tag_pattern": {"old": "", "new": "^v\\d+$"}})
    audit_entry(action="create", app_label="auth", model="user", object_repr="bob",
                changes={"groups": {"added": ["operator", "viewer"]}})
    page = html(client_as(Role.VIEWER).get("/audit/"))
    assert re.search(r'<th scope="row">tag_pattern</th><td class="old">\(blank\)</td><td class="new">\^v\\d\+\$</td>',
                     page)
    assert '<td class="new">added: operator, viewer</td>' in page
    assert "rules.rule #1" in page and "Web UI" in page


def test_audit_page_filters_search_sort_and_paginate(client_as):
    client = client_as(Role.VIEWER)
    Group.objects.create(name="ops")  # a system entry
    AuditEntry.objects.all().delete()
    first = audit_entry(actor_name="alice", source="ui", object_repr="alpha rule")
    AuditEntry.objects.filter(pk=first.pk).update(timestamp=timezone.now() - timedelta(days=3))
    audit_entry(actor_name="bob", source="api", action="delete", object_repr="beta rule")
    audit_entry(actor_name="bob", source="admin", app_label="registries", model="instance", object_repr="hub")

    def names(query):
        return re.findall(r"<br>(alpha rule|beta rule|hub)</td>", html(client.get(f"/audit/?{query}")))

    assert names("") == ["hub", "beta rule", "alpha rule"]
    assert names("sort=timestamp") == ["alpha rule", "beta rule", "hub"]
    assert names("actor=BOB") == ["hub", "beta rule"]
    assert names("source=api") == ["beta rule"]
    assert names("action=delete") == ["beta rule"]
    assert names("object_type=registries.instance") == ["hub"]
    assert names("q=rule") == ["beta rule", "alpha rule"]
    today = timezone.localdate().isoformat()
    assert names(f"date_from={today}") == ["hub", "beta rule"]
    assert names(f"date_to={(timezone.localdate() - timedelta(days=1)).isoformat()}") == ["alpha rule"]
    assert "No changes match these filters" in html(client.get("/audit/?actor=nobody"))
    bad = html(client.get("/audit/?date_from=yesterday&source=bogus"))
    assert "Enter a valid date." in bad

    for index in range(60):
        audit_entry(object_repr=f"bulk {index}")
    first_page = html(client.get("/audit/?q=bulk"))
    assert "Page 1 of 2 · 60 total" in first_page and "bulk 59" in first_page and "bulk 0<" not in first_page
    second = html(client.get("/audit/?q=bulk&page=2"))
    assert "bulk 0<" in second and 'href="?q=bulk&amp;page=1"' in second


def test_audit_page_empty_state(client_as):
    client = client_as(Role.VIEWER)
    AuditEntry.objects.all().delete()
    assert "No changes recorded yet" in html(client.get("/audit/"))


def test_audit_entries_are_read_only_in_admin(make_user):
    from django.contrib.auth.models import User

    audit_entry()
    root = User.objects.create_superuser("root", password="x-long-password-1")
    client = Client()
    client.force_login(root)
    entry = AuditEntry.objects.first()
    listing = html(client.get("/admin/core/auditentry/?source__exact=system&q=releases"))
    assert "releases" in listing
    assert client.get("/admin/core/auditentry/add/").status_code == 403
    assert client.post(f"/admin/core/auditentry/{entry.pk}/delete/", {"post": "yes"}).status_code == 403
    client.post(f"/admin/core/auditentry/{entry.pk}/change/", {"actor_name": "forged"})
    entry.refresh_from_db()
    assert entry.actor_name == "system"


def test_every_model_of_ours_is_in_admin_with_filters_and_search():
    from django.apps import apps
    from django.contrib import admin

    for app in ("core", "registries", "rules", "pipeline", "clusters"):
        for model in apps.get_app_config(app).get_models():
            model_admin = admin.site._registry.get(model)
            assert model_admin is not None, model._meta.label
            assert model_admin.list_filter and model_admin.search_fields, model._meta.label


def test_worker_heartbeats_are_read_only_in_admin():
    from django.contrib.auth.models import User

    record_heartbeat("celery@box-1")
    client = Client()
    client.force_login(User.objects.create_superuser("root", password="x-long-password-1"))
    assert "celery@box-1" in html(client.get("/admin/core/workerheartbeat/?q=box-1"))
    assert client.get("/admin/core/workerheartbeat/add/").status_code == 403


def test_audit_creation_lists_only_the_fields_given_a_value():
    entry = audit_entry(action="create", changes={
        "id": {"old": None, "new": 4}, "name": {"old": None, "new": "hub"},
        "description": {"old": None, "new": ""}, "ca_bundle": {"old": None, "new": None},
        "verify_tls": {"old": None, "new": True},
    })
    assert entry.change_rows() == [("name", "—", "hub"), ("verify_tls", "—", "yes")]


def test_texts_a_new_user_tripped_on(client_as):
    """Issue 9: the 403 page advises by role; the acceleration panel says earlier images are converted
    too; a time is never followed by a second full stop."""
    viewer = client_as(Role.VIEWER)
    refused = viewer.get("/rules/new/")
    text = refused.content.decode()
    assert refused.status_code == 403 and "This needs the operator role." in text
    assert "Viewers can look at everything but change nothing. To do this, ask an administrator to add you to the " \
           "operator group" in text
    assert "to the viewer group" not in text
    nobody = client_as(Role.NONE).get("/").content.decode()
    assert "Ask an administrator to add you to the viewer group (to look)" in nobody

    instance = Instance.objects.create(name="main", url="https://registry.example.com", acceleration_enabled=True,
                                       acceleration_changed_at=timezone.now())
    admin = client_as(Role.ADMIN)
    panel = admin.get(f"/instances/{instance.pk}/acceleration/?enabled=true").content.decode()
    assert "Images pushed before now are converted too: the periodic reconciler finds the tags" in panel
    assert "not converted until they are pushed again" not in panel
    detail = admin.get(f"/instances/{instance.pk}/").content.decode()
    assert re.search(r"since <time datetime=\"[^\"]+\" title=\"[^\"]+\">\d{4}-\d\d-\d\d \d\d:\d\d</time>\. ", detail)
    assert "a.m.." not in detail and "p.m.." not in detail
