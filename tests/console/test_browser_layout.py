"""What a new user tripped on (issue 9), in Debian's chromium at 1280×800: every list page fits its
width (no table wider than its container, no sideways scrolling of the page), label job rows update
live, the validation box of the rule form, copy buttons (the clipboard's content), the cluster form
showing the chosen method's fields, stale errors going away, and toasts that cover no button."""

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from clusters.choices import AuthMethod, Compatibility, JobStatus, LabelResultStatus
from clusters.models import Cluster, LabelJob, LabelResult, Node
from core.roles import Role
from pipeline.choices import JobStatus as ConversionStatus
from pipeline.choices import PushOutcome, PushReason, PushSource
from pipeline.models import ConversionJob, PushEvent, RegistryTag
from registries.models import Instance
from rules.models import Rule
from tests.support.browser import login
from tests.support.users import PASSWORD

pytestmark = pytest.mark.browser

WIDTH, HEIGHT = 1280, 800
LONG = "x" * 180  # one unbroken word, as a digest, a pattern or a registry's message can be
DIGEST = "sha256:" + "0123456789abcdef" * 4
LIST_PAGES = ["/", "/instances/", "/instances/events/", "/instances/images/", "/rules/", "/rules/jobs/",
              "/clusters/", "/clusters/nodes/", "/clusters/jobs/", "/audit/"]

OVERFLOW = """() => {
  const page = document.documentElement;
  const tables = [...document.querySelectorAll('main table')].map(table => {
    const box = table.parentElement;
    return {id: table.id || table.className, width: Math.round(table.getBoundingClientRect().width),
            room: Math.round(box.clientWidth)};
  });
  const ids = [...document.querySelectorAll('[id]')].map(element => element.id);
  const duplicates = [...new Set(ids.filter((id, index) => ids.indexOf(id) !== index))];
  return {pageWidth: page.scrollWidth, viewport: window.innerWidth, tables: tables, duplicates: duplicates};
}"""


def crowded_console() -> Instance:
    """Every list page with rows whose values are long: addresses, digests, reasons, patterns."""
    instance = Instance.objects.create(name="registry-with-a-rather-long-name", url=f"https://{'r' * 60}.example.com",
                                       description=LONG, acceleration_enabled=True)
    rule = Rule.objects.create(instance=instance, name="rule-" + "n" * 60, namespace="team",
                               repository_pattern="(" + "|".join(["service-" + "a" * 20] * 8) + ")",
                               tag_pattern="v" + "[0-9]" * 40, description=LONG)
    for number in range(3):
        job = ConversionJob.objects.create(
            instance=instance, namespace="team", repository=f"{'deep/' * 8}app-{number}",
            source_tag=f"release-{number}-" + "x" * 110,
            source_digest=DIGEST, status=ConversionStatus.FAILED, reason="The registry answered: " + LONG,
            rule=rule, finished_at=timezone.now())
        PushEvent.objects.create(
            instance=instance, source=PushSource.DISTRIBUTION, actor="ci-" + LONG, namespace="team",
            repository=job.repository, tag=job.source_tag, digest=DIGEST, outcome=PushOutcome.SKIPPED,
            reason=PushReason.NO_RULE_MATCHED, reason_detail="No enabled rule matched: " + LONG + " " + LONG)
        RegistryTag.objects.create(instance=instance, namespace="team", repository=job.repository,
                                   tag=job.source_tag, digest=DIGEST, size=123456789)
    cluster = Cluster.objects.create(name="cluster-" + "c" * 50, server=f"https://{'k' * 80}.example.com:6443",
                                     token="t", auth_method=AuthMethod.TOKEN, description=LONG)
    node = Node.objects.create(cluster=cluster, name="node-" + "n" * 60, os_image="Ubuntu " + LONG,
                               kernel_version="6.1." + "k" * 100, compatibility=Compatibility.INCOMPATIBLE,
                               reasons=["Container runtime " + LONG + " is not supported"])
    job = LabelJob.objects.create(selection="selector " + LONG, status=JobStatus.FAILED, total=1, failed=1)
    LabelResult.objects.create(job=job, cluster=cluster, node=node, node_name=node.name,
                               status=LabelResultStatus.DENIED, message=LONG)
    return instance


def test_every_list_page_fits_1280_pixels(page, live_server, make_user):
    instance = crowded_console()
    cluster = Cluster.objects.get()
    make_user(Role.ADMIN, "alice")
    page.set_viewport_size({"width": WIDTH, "height": HEIGHT})
    login(page, live_server.url, "alice", PASSWORD)
    detail_pages = [f"/instances/{instance.pk}/", f"/rules/{Rule.objects.get().pk}/", f"/clusters/{cluster.pk}/",
                    f"/rules/jobs/{ConversionJob.objects.first().pk}/", f"/clusters/jobs/{LabelJob.objects.get().pk}/"]
    for path in LIST_PAGES + detail_pages:
        page.goto(live_server.url + path)
        found = page.evaluate(OVERFLOW)
        assert found["pageWidth"] <= found["viewport"], (path, found)
        for table in found["tables"]:
            assert table["width"] <= table["room"], (path, table)
        assert found["duplicates"] == [], path
        if path in ("/instances/events/", "/rules/jobs/", "/clusters/nodes/", "/clusters/jobs/"):
            assert found["tables"], path  # the crowded rows are there to be measured


def test_phone_width_has_no_sideways_page_scroll(page, live_server, make_user):
    crowded_console()
    make_user(Role.ADMIN, "alice")
    page.set_viewport_size({"width": 390, "height": 844})
    login(page, live_server.url, "alice", PASSWORD)
    for path in LIST_PAGES:
        page.goto(live_server.url + path)
        found = page.evaluate(OVERFLOW)
        assert found["pageWidth"] <= found["viewport"], (path, found)


def test_label_job_rows_update_live_without_a_click(page, live_server, make_user):
    cluster = Cluster.objects.create(name="prod", server="https://k.example.com:6443", token="t")
    job = LabelJob.objects.create(selection="2 checked node(s)", status=JobStatus.RUNNING, total=2)
    for name in ("node-a", "node-b"):
        LabelResult.objects.create(job=job, cluster=cluster, node_name=name)
    make_user(Role.VIEWER, "vera")
    login(page, live_server.url, "vera", PASSWORD)
    page.goto(f"{live_server.url}/clusters/jobs/{job.pk}/")
    rows = page.locator("#results tbody tr")
    expect(rows.filter(has_text="Pending")).to_have_count(2)

    LabelResult.objects.filter(job=job, node_name="node-a").update(status=LabelResultStatus.DONE, attempts=1)
    LabelJob.objects.filter(pk=job.pk).update(succeeded=1)
    expect(page.locator("tr[data-node=node-a]")).to_contain_text("Done")
    expect(page.locator("tr[data-node=node-b]")).to_contain_text("Pending")
    expect(page.locator("#job-progress")).to_contain_text("1 of 2 done")

    LabelResult.objects.filter(job=job, node_name="node-b").update(status=LabelResultStatus.REFUSED, attempts=1,
                                                                  message="Incompatible: no FUSE")
    LabelJob.objects.filter(pk=job.pk).update(failed=1, status=JobStatus.SUCCEEDED, finished_at=timezone.now())
    expect(page.locator("tr[data-node=node-b]")).to_contain_text("Refused (incompatible)")
    expect(page.locator("tr[data-node=node-b]")).to_contain_text("Incompatible: no FUSE")
    expect(page.locator("#job-live")).to_have_attribute("data-status", JobStatus.SUCCEEDED)
    expect(page.locator("#job-live")).not_to_have_attribute("hx-trigger", "every 1s")  # polling stopped
    expect(page.get_by_text("Show the final per-node results")).to_have_count(0)


def test_validation_box_in_the_new_rule_form(page, live_server, make_user):
    instance = Instance.objects.create(name="main", url="https://registry.example.com:5000", acceleration_enabled=True)
    make_user(Role.OPERATOR, "olga")
    login(page, live_server.url, "olga", PASSWORD)
    page.goto(f"{live_server.url}/rules/new/")
    expect(page.get_by_label("Instance")).to_have_value(str(instance.pk))  # the only choice, chosen
    page.get_by_label("Namespace").fill("team-a")
    page.get_by_label("Repository pattern").fill("app|web")
    page.get_by_label("Tag pattern").fill(r"v\d+")
    address = page.locator("#id_address")

    address.fill("team-a/app:v1")  # the short form: the instance's host is implied
    address.press("Enter")  # Enter in the box validates; it does not create the rule
    result = page.locator("#validation-result")
    expect(result).to_contain_text("Matched: registry.example.com:5000/team-a/app:v1 would be accelerated by this "
                                   "rule once saved.")
    assert not Rule.objects.exists()

    page.get_by_label("Tag pattern").fill("stable")  # not saved: the box tests what is typed
    page.get_by_role("button", name="Validate").click()
    expect(result).to_contain_text("Not matched")
    expect(page.locator('[data-criterion="tag"]')).to_contain_text("tag 'v1' does not fully match 'stable'")

    address.fill("")
    page.get_by_role("button", name="Validate").click()
    expect(page.locator("#address-errors")).to_have_text(
        "Enter an image address: namespace/repository:tag on registry.example.com:5000 (e.g. team/app:1.0), or the "
        "full address registry.example.com:5000/team/app:1.0.")
    expect(page.locator("#validation-result")).to_have_count(0)

    page.locator("#id_name").fill("apps")
    page.get_by_role("button", name="Create rule").click()
    expect(page.get_by_role("heading", name="Rule apps")).to_be_visible()
    assert Rule.objects.get().tag_pattern == "stable"


def test_copy_buttons_put_the_value_on_the_clipboard(page, live_server, make_user):
    instance = Instance.objects.create(name="main", url="https://registry.example.com")
    job = ConversionJob.objects.create(instance=instance, namespace="team", repository="app", source_tag="1.0",
                                       source_digest=DIGEST, status=ConversionStatus.QUEUED)
    make_user(Role.VIEWER, "vera")
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    login(page, live_server.url, "vera", PASSWORD)
    page.goto(f"{live_server.url}/rules/jobs/{job.pk}/")
    page.get_by_role("button", name="Copy source address").click()
    expect(page.get_by_role("button", name="Copy source address")).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == "registry.example.com/team/app:1.0"
    page.get_by_role("button", name="Copy source digest").click()
    assert page.evaluate("navigator.clipboard.readText()") == DIGEST

    digest = page.locator(".digest", has=page.get_by_role("button", name="Copy source digest"))
    expect(digest.locator("summary")).to_have_text("sha256:0123456789ab…")
    expect(digest.locator(".full")).to_be_hidden()
    digest.locator("summary").click()  # the full digest, readable without hovering
    expect(digest.locator(".full")).to_have_text(DIGEST)

    page.goto(f"{live_server.url}/instances/{instance.pk}/")
    page.locator("#webhook .code-block", has=page.locator("#webhook-url")).get_by_role("button", name="Copy").click()
    assert page.evaluate("navigator.clipboard.readText()") == f"{live_server.url}/webhooks/registry/{instance.pk}/"


def test_cluster_form_shows_the_chosen_methods_fields_and_drops_stale_errors(page, live_server, make_user):
    make_user(Role.ADMIN, "alice")
    login(page, live_server.url, "alice", PASSWORD)
    page.goto(f"{live_server.url}/clusters/new/")
    token_fields = ["#field-server", "#field-ca_data", "#field-insecure_skip_tls_verify", "#field-token"]
    for selector in token_fields:
        expect(page.locator(selector)).to_be_visible()
    expect(page.locator("#field-kubeconfig")).to_be_hidden()
    page.get_by_label("Kubeconfig", exact=True).check()
    expect(page.locator("#field-kubeconfig")).to_be_visible()
    expect(page.locator("#field-context")).to_be_visible()
    for selector in token_fields:
        expect(page.locator(selector)).to_be_hidden()
    page.get_by_label("API server URL and bearer token").check()
    expect(page.locator("#field-server")).to_be_visible()

    page.get_by_role("button", name="Register cluster").click()  # nothing filled in: errors
    name_errors = page.locator("#field-name .errorlist")
    expect(name_errors).to_have_text("This field is required.")
    expect(page.locator("#field-kubeconfig")).to_be_hidden()  # still the chosen method's fields after the swap
    page.locator("#id_name").fill("prod")
    expect(name_errors).to_have_count(0)  # filled in: the stale error goes
    expect(page.locator("#field-server .errorlist")).to_be_visible()  # the others stay until fixed


def test_toasts_cover_no_button_and_wrap_long_texts(page, live_server, make_user):
    instance = Instance.objects.create(name="main", url="https://registry.example.com", acceleration_enabled=True)
    rule = Rule.objects.create(instance=instance, name="r" * 40, namespace="team")
    make_user(Role.OPERATOR, "olga")
    page.set_viewport_size({"width": WIDTH, "height": HEIGHT})
    login(page, live_server.url, "olga", PASSWORD)
    page.goto(f"{live_server.url}/rules/{rule.pk}/edit/")
    page.get_by_label("Description").fill("changed")
    page.get_by_role("button", name="Save changes").click()
    toast = page.locator(".toast").first
    expect(toast).to_contain_text("saved")
    toast_box = toast.bounding_box()
    for name in ("Edit", "Delete"):
        button = page.locator(".page-header").get_by_role("link", name=name).bounding_box()
        overlaps = not (button["x"] >= toast_box["x"] + toast_box["width"] or toast_box["x"] >= button["x"] +
                        button["width"] or button["y"] >= toast_box["y"] + toast_box["height"] or
                        toast_box["y"] >= button["y"] + button["height"])
        assert not overlaps, (name, button, toast_box)
    page.evaluate("""() => document.dispatchEvent(new CustomEvent('showMessage',
        {detail: {level: 'info', text: 'Deleted team/app@sha256:' + '0123456789abcdef'.repeat(4)}}))""")
    long_toast = page.locator(".toast", has_text="Deleted team/app@")
    assert long_toast.bounding_box()["width"] <= WIDTH
    assert page.evaluate("document.documentElement.scrollWidth") <= WIDTH
