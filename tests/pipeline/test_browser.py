"""Browser: an operator converts an image now (the page follows the operation to the job), watches the
job's progress bar reach done (htmx polling stops), then deletes the accelerated image from the
Images page (rows refreshed in the background); the original stays, the twin shows as deleted, and
Re-create brings it back."""

import re

import requests
from playwright.sync_api import expect

from core.roles import Role
from registries.models import Instance
from tests.support.browser import login
from tests.support.images import Platform, push_image
from tests.support.users import PASSWORD

OCI = "application/vnd.oci.image.manifest.v1+json"


def test_progress_bar_reaches_done_and_twin_is_deleted_alone(live_server, page, registry, celery_worker, make_user,
                                                             tmp_path):
    instance = Instance.objects.create(name="browser-reg", url=registry.url, acceleration_enabled=True)
    push_image(tmp_path, f"{registry.host}/team/app:1.0",
               [Platform(layers=[{"data/": None, "data/blob": bytes(range(256)) * 20_000}])])
    user = make_user(Role.OPERATOR)
    login(page, live_server.url, user.username, PASSWORD)

    page.goto(f"{live_server.url}/rules/jobs/")
    page.get_by_label("Instance").first.select_option(str(instance.pk))
    page.get_by_label("Image").fill("team/app:1.0")
    page.get_by_role("button", name="Convert now").click()
    expect(page).to_have_url(re.compile(r"/rules/jobs/\d+/$"))
    expect(page.locator("#job-status")).to_have_text("Succeeded", timeout=90_000)
    expect(page.locator("#job-bar")).to_have_attribute("value", "100")
    expect(page.locator("#job-percent")).to_have_text("100%")
    expect(page.locator("#job-progress")).not_to_have_attribute("hx-trigger", "every 1s")  # polling stopped
    expect(page.locator("dd", has_text="team/app:1.0-apparate")).to_be_visible()

    page.get_by_role("link", name="Images").click()
    expect(page.locator("#images-as-of")).to_be_visible(timeout=60_000)  # the first refresh reloads the page
    row = page.locator("tr[data-tag='1.0']")
    expect(row.get_by_text("Succeeded")).to_be_visible()
    row.get_by_role("link", name="Delete accelerated team/app:1.0-apparate").click()
    expect(page.get_by_role("heading", name="Delete this image?")).to_be_visible()
    page.get_by_role("button", name="Delete image").click()
    expect(page.get_by_text(re.compile(r"Deleted team/app@sha256:"))).to_be_visible()

    def status(tag):
        return requests.get(f"{registry.url}/v2/team/app/manifests/{tag}", headers={"Accept": OCI},
                            timeout=10).status_code

    assert status("1.0-apparate") == 404
    assert status("1.0") == 200
    deleted = page.locator("tr[data-tag='1.0']")
    expect(deleted.get_by_text("Deleted through the console", exact=True)).to_be_visible()
    deleted.get_by_role("button", name="Re-create team/app:1.0-apparate").click()
    expect(page).to_have_url(re.compile(r"/rules/jobs/\d+/$"), timeout=60_000)
    expect(page.locator("#job-status")).to_have_text("Succeeded", timeout=90_000)
    assert status("1.0-apparate") == 200
