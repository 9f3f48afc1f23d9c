"""End to end in chromium: register a cluster (tested and synced at once), see why a node is
incompatible, sync again, label two nodes, install the suite and watch its rollout until every
node's agent reports ready, see which nodes are ready to lazy-pull, then preview and deploy an image.
Syncs, label jobs, the install, the rollout watch and the deploy run in a real Celery worker process
(tests/support/worker.py) that reaches the emulator over HTTP; the agents' side of the API is
tests.clusters.conftest.EmulatedAgents."""

import re

import pytest
from playwright.sync_api import expect

from agent.status import Code, Status, fuse_missing
from core.roles import Role
from registries.models import Instance
from tests.clusters.conftest import add_fleet
from tests.support.browser import login
from tests.support.users import PASSWORD

LABEL = "cloud.tencent.com/apparate"


@pytest.mark.browser
def test_register_label_install_suite_and_deploy(page, live_server, kube_emulator, make_user, celery_worker,
                                                 converted, emulated_agents):
    add_fleet(kube_emulator)
    kube_emulator.rollout_step = 1  # one more agent pod gets ready per status read
    instance = Instance.objects.create(name="tcr", url="https://registry.example.com", username="robot",
                                       password="pw")
    converted(instance, "team/shop", "1.0")
    make_user(Role.ADMIN, "alice")
    login(page, live_server.url, "alice", PASSWORD)

    page.goto(f"{live_server.url}/clusters/")
    page.get_by_role("link", name="Register a cluster").first.click()
    page.locator("#id_name").fill("emulated")
    page.get_by_label("API server URL and bearer token").check()
    page.locator("#id_server").fill(kube_emulator.url)
    page.get_by_role("textbox", name="Bearer token").fill(kube_emulator.token)
    page.get_by_role("button", name="Register cluster").click()
    expect(page.get_by_role("heading", name="emulated")).to_be_visible()

    # Registering tested and synced the cluster in the worker; the page polled and reloaded the nodes.
    overview = page.locator("#cluster-overview")
    expect(overview).to_contain_text("4 nodes: 4 new, 0 changed, 0 removed.")
    expect(page.locator("#connection")).to_contain_text("Connected")
    docker_row = page.locator("tr[data-node=node-docker]")
    expect(docker_row.locator(".compatibility")).to_contain_text("Incompatible")
    expect(docker_row).to_contain_text("Container runtime docker is not supported")

    page.get_by_role("button", name="Test connection").click()
    expect(page.locator("#connection")).to_contain_text("Connected: Kubernetes v1.28.4")
    kube_emulator.add_node("node-late")
    page.get_by_role("button", name="Sync nodes").click()
    expect(overview).to_contain_text("5 nodes: 1 new, 0 changed, 0 removed.")
    expect(page.locator("tr[data-node=node-late]")).to_be_visible()

    page.get_by_label("Select node-a").check()
    page.get_by_label("Select node-b").check()
    page.locator("#label-form").get_by_role("button", name="Apply").click()
    dialog = page.locator("#confirm-dialog")  # what the label does on a node, said before it is applied
    expect(dialog).to_contain_text("installs the apparate agent there: it restarts containerd once (running "
                                   "containers keep running)")
    expect(dialog).to_contain_text("the node pulls accelerated images in full: slower, not broken")
    dialog.get_by_role("button", name="Apply").click()
    expect(page.locator("#job-progress")).to_contain_text("2 of 2 done")
    expect(page.locator("#job-progress")).to_contain_text("Succeeded")
    assert {n for n in kube_emulator.names("nodes") if LABEL in kube_emulator.node(n)["metadata"]["labels"]} == {
        "node-a", "node-b"}

    page.goto(f"{live_server.url}/clusters/")
    page.get_by_role("link", name="emulated").click()
    page.locator("#suite-form").get_by_label("Registry instance").select_option(label="tcr")
    page.locator("#suite-form").get_by_role("button", name="Run").click()
    dialog = page.locator("#confirm-dialog")  # the question names the chosen operation
    expect(dialog).to_contain_text("Install the acceleration suite on emulated?")
    dialog.get_by_role("button", name="Install").click()
    status = page.locator("#suite-status")
    emulated_agents.statuses["node-b"] = Status.failed(Code.FUSE_MISSING, fuse_missing("/dev/fuse"))
    with emulated_agents.running():
        expect(status).to_contain_text("1 of 2 ready", timeout=20_000)  # the live rollout shows progress
        expect(status.locator("tr", has_text="node-b")).to_contain_text("/dev/fuse is missing")
        del emulated_agents.statuses["node-b"]  # FUSE installed
        expect(status).to_contain_text("2 of 2 ready", timeout=20_000)
        expect(status).to_contain_text("Ready")
    assert kube_emulator.names("daemonsets", "apparate-system") == ["apparate-agent"]
    page.get_by_role("button", name="Sync nodes").click()
    expect(page.locator("tr[data-node=node-a] .lazy-pull")).to_contain_text("Ready to lazy-pull")
    expect(page.locator("tr[data-node=node-centos] .lazy-pull")).to_contain_text("not labelled")

    page.goto(f"{live_server.url}/clusters/")
    page.get_by_role("link", name="emulated").click()
    page.get_by_role("link", name="Deploy an image").click()
    page.locator("#id_name").fill("shop")
    page.get_by_label("Image").fill("registry.example.com/team/shop:1.0")
    page.get_by_role("button", name="Preview YAML").click()
    expect(page.locator("#plan-image")).to_contain_text("registry.example.com/team/shop:1.0-apparate")
    page.get_by_role("button", name="Deploy accelerated image").click()
    progress = page.locator("#deploy-progress")
    expect(progress).to_contain_text("Deployment default/shop applied with registry.example.com/team/shop:1.0-apparate")
    deployment = kube_emulator.get_object("deployments", "shop", "default")
    assert deployment["spec"]["template"]["spec"]["nodeSelector"] == {LABEL: "true"}
    # The worker reads the rollout and the page follows it live: the pod runs on a labelled node.
    expect(progress.locator("#rollout-summary")).to_contain_text("Complete 1 of 1 pod ready")
    expect(progress.locator("#rollout-pods tbody tr td").nth(1)).to_have_text(re.compile(r"node-[ab]"))
