"""Pages and REST API: roles, forms with errors, htmx polling, and viewers changing nothing."""

import base64
import io
import tarfile

import pytest
import yaml
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.urls import reverse
from django.utils.html import escape

from clusters.actions.deploy import refresh_rollout as refresh_deploy_rollout
from clusters.actions.deploy import run_deploy
from clusters.actions.labelling import run_label_job
from clusters.actions.suite import refresh_rollout, request_suite_operation, run_suite_operation
from clusters.actions.sync import run_sync, sync_nodes
from clusters.choices import DeployStatus, SuiteOperation, SuiteStatus
from clusters.models import Cluster, DeployRequest, LabelJob, Node, Suite
from core.models import AuditEntry
from core.roles import Role
from registries.models import Instance
from tests.clusters.conftest import add_fleet, alias_bomb

pytestmark = pytest.mark.django_db


def chart_values(archive: bytes) -> dict:
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as chart:
        return yaml.safe_load(chart.extractfile("apparate/values.yaml").read())


def kubeconfig_file(emulator, user=None) -> io.BytesIO:
    text = yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "emu",
        "clusters": [{"name": "c", "cluster": {"server": emulator.url}}],
        "users": [{"name": "u", "user": user or {"token": emulator.token}}],
        "contexts": [{"name": "emu", "context": {"cluster": "c", "user": "u"}}],
    })
    upload = io.BytesIO(text.encode())
    upload.name = "config"
    return upload


def test_admin_registers_cluster_from_kubeconfig_and_token_is_write_only(kube_emulator, client_as):
    client = client_as(Role.ADMIN)
    response = client.post(reverse("clusters:create"), {
        "name": "emu", "auth_method": "kubeconfig", "kubeconfig": kubeconfig_file(kube_emulator)})
    assert response.status_code == 302, response.content
    cluster = Cluster.objects.get(name="emu")
    assert cluster.server == kube_emulator.url and cluster.token == kube_emulator.token
    assert cluster.context_name == "emu"
    page = client.get(reverse("clusters:edit", args=[cluster.pk])).content.decode()
    assert kube_emulator.token not in page
    entry = AuditEntry.objects.get(model="cluster", action="create")
    assert kube_emulator.token not in str(entry.changes)

    # Editing without a token keeps the stored one.
    assert cluster.deploy_namespaces == ["default"] and 'value="default"' in page
    response = client.post(reverse("clusters:edit", args=[cluster.pk]), {
        "name": "emu", "auth_method": "token", "server": kube_emulator.url, "auto_label": "on",
        "deploy_namespaces": "default, web web,,shop"})
    assert response.status_code == 302
    cluster.refresh_from_db()
    assert cluster.token == kube_emulator.token and cluster.auto_label
    assert cluster.deploy_namespaces == ["default", "web", "shop"]
    response = client.post(reverse("clusters:edit", args=[cluster.pk]), {
        "name": "emu", "auth_method": "token", "server": kube_emulator.url, "deploy_namespaces": "web, Kube_System"})
    assert response.status_code == 200
    assert escape("'Kube_System' is not a namespace name") in response.content.decode()
    cluster.refresh_from_db()
    assert cluster.deploy_namespaces == ["default", "web", "shop"]


MOVED_TOKEN = ("The API server is on another host now: give the bearer token again (the stored credentials are "
               "never sent to a new host).")
MOVED_KUBECONFIG = ("The API server is on another host now: upload the kubeconfig again (the stored credentials are "
                    "never sent to a new host).")


def test_a_server_on_another_host_needs_the_credentials_again(kube_emulator, kube_emulator_factory, client_as):
    client = client_as(Role.ADMIN)
    client.post(reverse("clusters:create"), {"name": "emu", "auth_method": "token", "server": kube_emulator.url,
                                             "token": kube_emulator.token})
    cluster = Cluster.objects.get(name="emu")
    edit = reverse("clusters:edit", args=[cluster.pk])
    for server in ("https://evil.example:6443", kube_emulator.url.replace("http://", "https://"),
                   kube_emulator.url.rsplit(":", 1)[0] + ":1"):
        response = client.post(edit, {"name": "emu", "auth_method": "token", "server": server})
        assert response.status_code == 200 and escape(MOVED_TOKEN) in response.content.decode()
        cluster.refresh_from_db()
        assert cluster.server == kube_emulator.url and cluster.token == kube_emulator.token
    # Same host (a path behind a proxy): the stored token stays.
    response = client.post(edit, {"name": "emu", "auth_method": "token", "server": kube_emulator.url + "/"})
    assert response.status_code == 302
    other = kube_emulator_factory()
    response = client.post(edit, {"name": "emu", "auth_method": "token", "server": other.url, "token": other.token})
    assert response.status_code == 302
    cluster.refresh_from_db()
    assert (cluster.server, cluster.token) == (other.url, other.token)

    # Registered from a kubeconfig: a posted server without a new file is refused too.
    client.post(reverse("clusters:create"), {"name": "kc", "auth_method": "kubeconfig",
                                             "kubeconfig": kubeconfig_file(kube_emulator)})
    from_file = Cluster.objects.get(name="kc")
    response = client.post(reverse("clusters:edit", args=[from_file.pk]), {
        "name": "kc", "auth_method": "kubeconfig", "server": "https://evil.example:6443"})
    assert response.status_code == 200 and escape(MOVED_KUBECONFIG) in response.content.decode()
    response = client.post(reverse("clusters:edit", args=[from_file.pk]), {
        "name": "kc", "auth_method": "token", "server": "https://evil.example:6443"})
    assert response.status_code == 200 and escape(MOVED_TOKEN) in response.content.decode()
    from_file.refresh_from_db()
    assert from_file.server == kube_emulator.url and from_file.token == kube_emulator.token


def test_api_server_on_another_host_needs_the_credentials_again(kube_emulator, register, api_as):
    admin = api_as(Role.ADMIN)
    cluster = register(kube_emulator)
    answer = admin.patch(f"/api/v1/clusters/{cluster.pk}/", {"server": "https://evil.example:6443"}, format="json")
    assert answer.status_code == 400 and answer.json() == {"token": [MOVED_TOKEN]}
    by_file = register(kube_emulator, name="kc", auth_method="kubeconfig")
    answer = admin.patch(f"/api/v1/clusters/{by_file.pk}/", {"server": "https://evil.example:6443"}, format="json")
    assert answer.status_code == 400 and answer.json() == {"kubeconfig": [MOVED_KUBECONFIG]}
    for row in (cluster, by_file):
        row.refresh_from_db()
        assert row.server == kube_emulator.url and row.token == kube_emulator.token
    answer = admin.patch(f"/api/v1/clusters/{cluster.pk}/", {"server": "https://evil.example:6443", "token": "new"},
                         format="json")
    assert answer.status_code == 200
    cluster.refresh_from_db()
    assert (cluster.server, cluster.token) == ("https://evil.example:6443", "new")


def test_bad_kubeconfig_rerenders_with_the_error(kube_emulator, client_as):
    client = client_as(Role.ADMIN)
    response = client.post(reverse("clusters:create"), {
        "name": "emu", "auth_method": "kubeconfig",
        "kubeconfig": kubeconfig_file(kube_emulator, {"exec": {"command": "gke-gcloud-auth-plugin"}})})
    assert response.status_code == 200
    assert "exec plugin" in response.content.decode() and not Cluster.objects.exists()
    response = client.post(reverse("clusters:create"), {"name": "emu", "auth_method": "token", "server": "nope"})
    assert response.status_code == 200 and "Use an https:// URL" in response.content.decode()
    assert "Give a bearer token" in response.content.decode()


def test_a_kubeconfig_alias_bomb_gets_a_short_field_error(client_as, api_as):
    bomb = alias_bomb()
    upload = io.BytesIO(bomb.encode())
    upload.name = "config"
    response = client_as(Role.ADMIN).post(reverse("clusters:create"), {
        "name": "bomb", "auth_method": "kubeconfig", "kubeconfig": upload})
    assert response.status_code == 200 and len(response.content) < 50_000
    assert "The kubeconfig uses a YAML alias (line 2)" in response.content.decode()
    answer = api_as(Role.ADMIN).post("/api/v1/clusters/", {"name": "bomb", "kubeconfig": bomb}, format="json")
    assert answer.status_code == 400 and len(answer.content) < 1000
    assert answer.json()["kubeconfig"][0].startswith("The kubeconfig uses a YAML alias (line 2)")
    assert not Cluster.objects.exists()


def test_operator_cannot_register_a_cluster(client_as, kube_emulator):
    response = client_as(Role.OPERATOR).post(reverse("clusters:create"), {
        "name": "emu", "auth_method": "token", "server": kube_emulator.url, "token": "x"})
    assert response.status_code == 403 and not Cluster.objects.exists()


def test_cluster_pages_show_counts_nodes_and_reasons(kube_emulator, register, client_as,
                                                     django_capture_on_commit_callbacks):
    add_fleet(kube_emulator)
    cluster = register(kube_emulator)
    client = client_as(Role.OPERATOR)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client.post(reverse("clusters:sync", args=[cluster.pk]))
    assert response.status_code == 302 and len(callbacks) == 1
    run_sync(cluster.pk)
    listing = client.get(reverse("clusters:list")).content.decode()
    assert '<td class="num">4</td>' in listing and '<td class="num">3</td>' in listing
    detail = client.get(reverse("clusters:detail", args=[cluster.pk])).content.decode()
    assert "node-docker" in detail and "Container runtime docker://20.10.7 is not supported" not in detail
    assert "Container runtime docker is not supported" in detail and "FUSE" in detail
    filtered = client.get(reverse("clusters:detail", args=[cluster.pk]), {"compatibility": "incompatible"},
                          HTTP_HX_REQUEST="true").content.decode()
    assert "node-docker" in filtered and "node-a" not in filtered
    tested = client.post(reverse("clusters:test", args=[cluster.pk]), HTTP_HX_REQUEST="true").content.decode()
    assert "Connected: Kubernetes v1.28.4" in tested


def test_labelling_from_the_page_and_job_progress_polling(kube_emulator, register, client_as,
                                                          django_capture_on_commit_callbacks):
    add_fleet(kube_emulator)
    cluster = register(kube_emulator)
    sync_nodes(cluster)
    client = client_as(Role.OPERATOR)
    ids = list(Node.objects.filter(name__in=["node-a", "node-docker"]).values_list("pk", flat=True))
    with django_capture_on_commit_callbacks() as callbacks:
        response = client.post(reverse("clusters:label"), {"operation": "label", "mode": "selected", "nodes": ids})
    job = LabelJob.objects.get()
    assert response.status_code == 302 and response.url == reverse("clusters:job", args=[job.pk])
    assert len(callbacks) == 1
    progress = client.get(reverse("clusters:job", args=[job.pk]), {"progress": 1}, HTTP_HX_REQUEST="true")
    assert progress.status_code == 200 and 'hx-trigger="every 1s"' in progress.content.decode()
    run_label_job(job.pk)
    done = client.get(reverse("clusters:job", args=[job.pk]), {"progress": 1}, HTTP_HX_REQUEST="true")
    assert done.status_code == 286 and "every 1s" not in done.content.decode()
    page = client.get(reverse("clusters:job", args=[job.pk])).content.decode()
    assert "Refused (incompatible)" in page and "Done" in page

    response = client.post(reverse("clusters:label"), {"operation": "label", "mode": "selector", "selector": "a b"})
    assert response.status_code == 302 and LabelJob.objects.count() == 1


def test_viewer_changes_nothing(kube_emulator, register, client_as, api_as, instance):
    add_fleet(kube_emulator)
    cluster = register(kube_emulator)
    sync_nodes(cluster)
    node = Node.objects.get(name="node-a")
    before = kube_emulator.revision
    web, api = client_as(Role.VIEWER), api_as(Role.VIEWER)
    audit_before = AuditEntry.objects.count()
    for url, data in [
        (reverse("clusters:create"), {"name": "x", "auth_method": "token", "server": "https://k", "token": "t"}),
        (reverse("clusters:edit", args=[cluster.pk]), {"name": "renamed"}),
        (reverse("clusters:delete", args=[cluster.pk]), {}),
        (reverse("clusters:test", args=[cluster.pk]), {}),
        (reverse("clusters:sync", args=[cluster.pk]), {}),
        (reverse("clusters:label"), {"operation": "label", "mode": "selected", "nodes": [node.pk]}),
        (reverse("clusters:suite", args=[cluster.pk]), {"operation": "install", "instance": instance.pk}),
        (reverse("clusters:deploy"), {"cluster": cluster.pk, "instance": instance.pk, "namespace": "default",
                                      "name": "x", "replicas": 1, "image": "registry.example.com/a:1", "confirm": 1}),
    ]:
        assert web.post(url, data).status_code == 403, url
    for method, url, data in [
        ("post", "/api/v1/clusters/", {"name": "x", "server": "https://k", "token": "t"}),
        ("patch", f"/api/v1/clusters/{cluster.pk}/", {"name": "renamed"}),
        ("delete", f"/api/v1/clusters/{cluster.pk}/", None),
        ("post", f"/api/v1/clusters/{cluster.pk}/sync/", None),
        ("post", f"/api/v1/clusters/{cluster.pk}/suite/", {"operation": "install", "instance": instance.pk}),
        ("post", "/api/v1/label-jobs/", {"nodes": [node.pk]}),
        ("post", "/api/v1/deploys/", {"cluster": cluster.pk, "instance": instance.pk, "namespace": "default",
                                      "name": "x", "image": "registry.example.com/a:1"}),
        ("post", "/api/v1/deploys/1/confirm/", {"plan_digest": "0" * 64}),
    ]:
        assert getattr(api, method)(url, data, format="json").status_code == 403, url
    assert web.get(reverse("clusters:helm-chart", args=[cluster.pk])).status_code == 403
    cluster.refresh_from_db()
    assert cluster.name == "prod" and Cluster.objects.count() == 1
    assert not LabelJob.objects.exists() and not Suite.objects.exists() and not DeployRequest.objects.exists()
    assert kube_emulator.revision == before and AuditEntry.objects.count() == audit_before
    assert web.get(reverse("clusters:detail", args=[cluster.pk])).status_code == 200
    assert api.get("/api/v1/nodes/").json()["count"] == 4
    assert api.get(f"/api/v1/clusters/{cluster.pk}/suite/").json() == {"status": "not_installed"}  # reads are open


def test_api_registers_labels_installs_and_deploys(kube_emulator, api_as, instance, converted,
                                                   django_capture_on_commit_callbacks, emulated_agents):
    add_fleet(kube_emulator)
    kube_emulator.create("namespaces", "", {"metadata": {"name": "web"}})
    admin, operator = api_as(Role.ADMIN), api_as(Role.OPERATOR)
    response = operator.post("/api/v1/clusters/", {"name": "emu", "server": kube_emulator.url, "token": "t"},
                             format="json")
    assert response.status_code == 403
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = admin.post("/api/v1/clusters/", {"name": "emu", "server": kube_emulator.url,
                                                    "token": kube_emulator.token}, format="json")
    assert response.status_code == 201 and "token" not in response.json() and response.json()["has_token"]
    assert response.json()["sync_status"] == "queued" and len(callbacks) == 1  # test and sync, in a worker
    cluster_id = response.json()["id"]
    bad = admin.post("/api/v1/clusters/", {"name": "bad", "kubeconfig": "{oops"}, format="json")
    assert bad.status_code == 400 and "not valid YAML" in str(bad.json()["kubeconfig"])

    assert operator.post(f"/api/v1/clusters/{cluster_id}/test-connection/").json()["ok"]
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        queued = operator.post(f"/api/v1/clusters/{cluster_id}/sync/")
    assert queued.status_code == 202 and queued.json()["sync_status"] == "queued"
    assert callbacks == []  # the sync queued at registration has not run yet: not queued twice
    assert run_sync(cluster_id, test_first=True) == "4 nodes: 4 new, 0 changed, 0 removed."
    synced = operator.get(f"/api/v1/clusters/{cluster_id}/").json()
    assert (synced["sync_status"], synced["sync_message"]) == ("idle", "4 nodes: 4 new, 0 changed, 0 removed.")
    assert synced["connection_status"] == "ok" and synced["server_version"] == "v1.28.4"
    listing = operator.get("/api/v1/clusters/").json()["results"][0]
    assert (listing["node_count"], listing["compatible_count"], listing["labelled_count"]) == (4, 3, 0)
    incompatible = operator.get("/api/v1/nodes/", {"compatibility": "incompatible"}).json()["results"]
    assert [n["name"] for n in incompatible] == ["node-docker"] and incompatible[0]["reasons"]

    with django_capture_on_commit_callbacks(execute=False):
        job = operator.post("/api/v1/label-jobs/", {"all_compatible": True, "clusters": [cluster_id]}, format="json")
    assert job.status_code == 202 and job.json()["total"] == 3
    run_label_job(job.json()["id"])
    results = operator.get(f"/api/v1/label-jobs/{job.json()['id']}/results/").json()["results"]
    assert {r["status"] for r in results} == {"done"}
    assert operator.post("/api/v1/label-jobs/", {"nodes": [1], "selector": "a"}, format="json").status_code == 400

    with django_capture_on_commit_callbacks(execute=False):
        suite = operator.post(f"/api/v1/clusters/{cluster_id}/suite/",
                              {"operation": SuiteOperation.INSTALL, "instance": instance.pk}, format="json")
    assert suite.status_code == 202 and suite.json()["status"] == "pending"
    run_suite_operation(suite.json()["id"])
    assert operator.get(f"/api/v1/suites/{suite.json()['id']}/").json()["status"] == SuiteStatus.ROLLING_OUT
    refresh_rollout(Suite.objects.get())
    emulated_agents.tick()  # the agents report their nodes ready
    refresh_rollout(Suite.objects.get())
    assert operator.get(f"/api/v1/clusters/{cluster_id}/suite/").json()["ready"] == 3
    ready = operator.get("/api/v1/nodes/", {"lazy_pull": "ready"}).json()["results"]
    assert {(n["name"], n["lazy_pull_reason"], n["agent_ready"]) for n in ready} == {
        ("node-a", "", True), ("node-b", "", True), ("node-centos", "", True)}

    chart = operator.get(f"/api/v1/clusters/{cluster_id}/helm-chart/")
    values = chart_values(chart.content)
    assert values["imagePullSecretsCrs"]["dockerPassword"] == ""  # operators don't get the password
    chart = admin.get(f"/api/v1/clusters/{cluster_id}/helm-chart/")
    values = chart_values(chart.content)
    assert values["imagePullSecretsCrs"]["dockerPassword"] == "s3cret&<pass>"

    converted(instance, "team/shop", "1.0")
    offered = operator.get("/api/v1/deploys/images/", {"instance": instance.pk})
    assert [i["image"] for i in offered.json()] == ["registry.example.com/team/shop:1.0-apparate"]
    assert offered.json()[0]["original"] == "registry.example.com/team/shop:1.0"
    assert operator.get("/api/v1/deploys/images/").status_code == 400
    body = {"cluster": cluster_id, "instance": instance.pk, "namespace": "web", "name": "shop", "replicas": 2,
            "image": "registry.example.com/team/shop:1.0"}
    assert operator.post("/api/v1/deploys/", body, format="json").json()["namespace"] == [
        "Deploys to emu may use only these namespaces: default. An admin can allow more on the cluster's settings."]
    answer = operator.patch(f"/api/v1/clusters/{cluster_id}/", {"deploy_namespaces": ["default", "web"]},
                            format="json")
    assert answer.status_code == 403  # only admins change what operators may do
    answer = admin.patch(f"/api/v1/clusters/{cluster_id}/", {"deploy_namespaces": ["default", "web"]}, format="json")
    assert answer.status_code == 200 and answer.json()["deploy_namespaces"] == ["default", "web"]
    bad = admin.patch(f"/api/v1/clusters/{cluster_id}/", {"deploy_namespaces": ["Kube System"]}, format="json")
    assert bad.status_code == 400 and "'Kube System' is not a namespace name" in bad.json()["deploy_namespaces"][0]

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        preview = operator.post("/api/v1/deploys/", body, format="json")
    assert preview.status_code == 201 and callbacks == [] and kube_emulator.names("deployments", "web") == []
    preview = preview.json()
    assert preview["status"] == "previewed" and preview["warnings"] == [] and "nodeSelector" in preview["yaml"]
    assert preview["image"] == preview["accelerated_image"] == "registry.example.com/team/shop:1.0-apparate"
    assert preview["original_image"] == "registry.example.com/team/shop:1.0" and len(preview["plan_digest"]) == 64
    confirm = f"/api/v1/deploys/{preview['id']}/confirm/"
    assert operator.post(confirm, {}, format="json").status_code == 400
    wrong = operator.post(confirm, {"plan_digest": "0" * 64}, format="json")
    assert wrong.status_code == 409 and wrong.json()["detail"].startswith("The deploy changed since its preview")
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        created = operator.post(confirm, {"plan_digest": preview["plan_digest"]}, format="json")
    assert created.status_code == 202 and created.json()["status"] == "pending" and len(callbacks) == 1
    assert created.json()["image"] == "registry.example.com/team/shop:1.0-apparate" and created.json()["accelerated"]
    run_deploy(preview["id"])
    watched = operator.get(f"/api/v1/deploys/{preview['id']}/").json()
    assert watched["status"] == "succeeded" and watched["message"].startswith("Deployment web/shop applied")
    assert kube_emulator.get_object("deployments", "shop", "web")["spec"]["replicas"] == 2
    again = operator.post(confirm, {"plan_digest": preview["plan_digest"]}, format="json")
    assert again.status_code == 409 and "already confirmed" in again.json()["detail"]
    wrong = operator.post("/api/v1/deploys/", {**body, "image": "docker.io/library/nginx:1"}, format="json")
    assert wrong.status_code == 400 and "instance's registry" in str(wrong.json()["image"])
    malformed = operator.post("/api/v1/deploys/", {**body, "image": "registry.example.com/team/shop:-bad"},
                              format="json")
    assert malformed.status_code == 400 and "not a valid tag" in str(malformed.json()["image"])
    assert DeployRequest.objects.count() == 1


def test_deploy_page_offers_accelerated_images_previews_then_applies(kube_emulator, register, client_as, instance,
                                                                    converted):
    add_fleet(kube_emulator)
    kube_emulator.create("namespaces", "", {"metadata": {"name": "web"}})
    cluster = register(kube_emulator, deploy_namespaces=["default", "web"])
    converted(instance, "team/shop", "1.0")
    converted(instance, "team/cart", "2.0", status="failed")
    client = client_as(Role.OPERATOR)
    page = client.get(reverse("clusters:deploy"), {"cluster": cluster.pk}).content.decode()
    assert '<option value="registry.example.com/team/shop:1.0-apparate">' in page
    assert "team/cart" not in page and 'list="id_image-choices"' in page
    empty = Instance.objects.create(name="empty", url="https://empty.example.com")
    refreshed = client.get(reverse("clusters:deploy"), {"instance": empty.pk}, HTTP_HX_REQUEST="true")
    assert "empty has no accelerated image yet" in refreshed.content.decode()
    assert "shop:1.0-apparate" not in refreshed.content.decode()

    form = {"cluster": cluster.pk, "instance": instance.pk, "namespace": "web", "name": "shop", "replicas": 1,
            "image": "registry.example.com/team/shop:1.0-apparate"}
    preview = client.post(reverse("clusters:deploy"), form).content.decode()
    accelerated = DeployRequest.objects.get()
    assert accelerated.status == DeployStatus.PREVIEWED and accelerated.accelerated
    assert f'name="preview" value="{accelerated.pk}"' in preview
    assert "No node of this cluster carries the acceleration label" in preview
    assert "Use the original image instead" in preview and "cloud.tencent.com/apparate" in preview
    assert kube_emulator.get_object("deployments", "shop", "web") is None

    # The reported bypass: after previewing the twin, deploy the original (no nodeSelector) with that preview.
    bypass = client.post(reverse("clusters:deploy"), {**form, "preview": accelerated.pk, "use_original": "on",
                                                      "confirm": "1"})
    text = bypass.content.decode()
    assert bypass.status_code == 200 and "The deploy changed since its preview" in text
    assert DeployRequest.objects.get(pk=accelerated.pk).status == DeployStatus.PREVIEWED
    assert kube_emulator.names("deployments") == [] and kube_emulator.names("secrets", "web") == []
    original = DeployRequest.objects.exclude(pk=accelerated.pk).get()  # the new preview is shown instead
    assert not original.accelerated and f'name="preview" value="{original.pk}"' in text
    assert "Deploys the original image" in text and "nodeSelector" not in original.plan_yaml
    # No preview at all: refused too.
    unpreviewed = client.post(reverse("clusters:deploy"), {**form, "confirm": "1"})
    assert "There is no such preview" in unpreviewed.content.decode()

    confirmed = client.post(reverse("clusters:deploy"), {**form, "preview": original.pk, "use_original": "on",
                                                         "confirm": "1"})
    assert confirmed.status_code == 302 and confirmed.url == reverse("clusters:deploy-detail", args=[original.pk])
    watching = client.get(confirmed.url, {"progress": 1}, HTTP_HX_REQUEST="true")
    assert watching.status_code == 200 and 'hx-trigger="every 1s"' in watching.content.decode()
    run_deploy(original.pk)
    applied = client.get(confirmed.url, {"progress": 1}, HTTP_HX_REQUEST="true")  # now its rollout is watched
    assert applied.status_code == 200 and "Reading the Deployment's pods…" in applied.content.decode()
    refresh_deploy_rollout(original.pk)  # what the watching worker does: the pods run, the rollout is complete
    done = client.get(confirmed.url, {"progress": 1}, HTTP_HX_REQUEST="true")
    assert done.status_code == 286 and "Deployment web/shop applied with registry.example.com/team/shop:1.0" in \
        done.content.decode() and "every 1s" not in done.content.decode()
    assert "1 of 1 pod ready" in done.content.decode()
    deployment = kube_emulator.get_object("deployments", "shop", "web")
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.example.com/team/shop:1.0"
    assert "nodeSelector" not in deployment["spec"]["template"]["spec"]
    detail = client.get(reverse("clusters:detail", args=[cluster.pk])).content.decode()
    assert reverse("clusters:deploy-detail", args=[original.pk]) in detail
    assert reverse("clusters:deploy-detail", args=[accelerated.pk]) not in detail  # previews are not deploys

    typed = client.post(reverse("clusters:deploy"), {**form, "image": "registry.example.com/team/cart:2.0"})
    assert "has no current accelerated twin" in typed.content.decode()
    assert "Use the original image instead" not in typed.content.decode()
    elsewhere = client.post(reverse("clusters:deploy"), {**form, "namespace": "kube-system"})
    assert "may use only these namespaces: default, web" in elsewhere.content.decode()
    bad = client.post(reverse("clusters:deploy"), {**form, "name": "Bad Name", "replicas": 0,
                                                   "image": "registry.example.com/Team/shop"})
    text = bad.content.decode()
    assert bad.status_code == 200 and "Ensure this value is greater than or equal to 1" in text
    assert "not a valid repository path component" in text
    assert DeployRequest.objects.exclude(status=DeployStatus.PREVIEWED).count() == 1


def test_suite_status_polls_until_terminal(kube_emulator, register, client_as, instance, admin_user, emulated_agents):
    add_fleet(kube_emulator)
    kube_emulator.patch("nodes", "", "node-a", {"metadata": {"labels": {"cloud.tencent.com/apparate": "true"}}})
    cluster = register(kube_emulator)
    client = client_as(Role.VIEWER)
    assert client.get(reverse("clusters:suite-status", args=[cluster.pk])).status_code == 286
    suite = request_suite_operation(cluster, SuiteOperation.INSTALL, admin_user, instance=instance)
    run_suite_operation(suite.pk)
    polling = client.get(reverse("clusters:suite-status", args=[cluster.pk]), HTTP_HX_REQUEST="true")
    assert polling.status_code == 200 and "every 1s" in polling.content.decode()
    refresh_rollout(Suite.objects.get())
    emulated_agents.tick()
    refresh_rollout(Suite.objects.get())
    done = client.get(reverse("clusters:suite-status", args=[cluster.pk]), HTTP_HX_REQUEST="true")
    assert done.status_code == 286 and "1 of 1 ready" in done.content.decode()


def test_suite_version_must_be_an_image_tag(kube_emulator, register, client_as, api_as, instance):
    cluster = register(kube_emulator)
    hostile = "0.15.1\nmaintainers: [{name: evil}]"
    message = ("'0.15.1\nmaintainers: [{name: evil}]' is not a valid image tag (letters, digits, '_', '.', '-'; "
               "at most 128 characters; not starting with '.' or '-').")
    answer = api_as(Role.OPERATOR).post(f"/api/v1/clusters/{cluster.pk}/suite/", {
        "operation": "install", "instance": instance.pk, "version": hostile}, format="json")
    assert answer.status_code == 400 and answer.json() == {"version": [message]}
    page = client_as(Role.OPERATOR).post(reverse("clusters:suite", args=[cluster.pk]), {
        "operation": "install", "instance": instance.pk, "version": hostile}, follow=True)
    assert escape(message) in page.content.decode()
    assert not Suite.objects.exists()
    with pytest.raises(ValidationError) as error:
        Suite(cluster=cluster, instance=instance, version=hostile).full_clean()
    assert error.value.message_dict == {"version": [message]}


def test_secrets_never_in_api_answers(kube_emulator, register, api_as):
    cluster = register(kube_emulator)
    body = api_as(Role.ADMIN).get(f"/api/v1/clusters/{cluster.pk}/").content.decode()
    assert kube_emulator.token not in body
    assert base64.b64encode(kube_emulator.token.encode()).decode() not in body


def test_labelling_across_clusters_from_the_node_list(kube_emulator_factory, register, client_as):
    first, second = kube_emulator_factory(), kube_emulator_factory()
    add_fleet(first)
    second.add_node("other-a", labels={"zone": "z1"})
    second.add_node("other-b", labels={"zone": "z2"})
    for emulator, name in [(first, "one"), (second, "two")]:
        sync_nodes(register(emulator, name=name))
    client = client_as(Role.OPERATOR)
    page = client.get(reverse("clusters:nodes")).content.decode()
    assert "other-a" in page and "node-docker" in page
    response = client.post(reverse("clusters:label"), {"operation": "label", "mode": "all_compatible"})
    job = LabelJob.objects.get()
    assert response.status_code == 302 and job.total == 5
    run_label_job(job.pk)
    assert "cloud.tencent.com/apparate" in second.node("other-b")["metadata"]["labels"]
    client.post(reverse("clusters:label"), {"operation": "unlabel", "mode": "selector", "selector": "zone=z1"})
    unlabel = LabelJob.objects.exclude(pk=job.pk).get()
    assert unlabel.total == 1
    run_label_job(unlabel.pk)
    assert "cloud.tencent.com/apparate" not in second.node("other-a")["metadata"]["labels"]


def test_admin_removes_a_cluster_and_admin_site_lists_every_model(kube_emulator, register, client_as):
    add_fleet(kube_emulator)
    cluster = register(kube_emulator)
    sync_nodes(cluster)
    client = client_as(Role.ADMIN)
    User.objects.filter(username="web-admin").update(is_staff=True, is_superuser=True)  # Django admin needs staff
    for model in ["cluster", "node", "labeljob", "labelresult", "suite", "deployrequest"]:
        response = client.get(f"/admin/clusters/{model}/", {"q": "node"})
        assert response.status_code == 200, model
    page = client.get(f"/admin/clusters/cluster/{cluster.pk}/change/").content.decode()
    assert kube_emulator.token not in page
    assert client.get(reverse("clusters:delete", args=[cluster.pk])).status_code == 200
    response = client.post(reverse("clusters:delete", args=[cluster.pk]))
    assert response.status_code == 302 and not Cluster.objects.exists() and not Node.objects.exists()
    assert kube_emulator.names("nodes")  # nothing changed in the cluster itself


def test_sync_runs_in_a_worker_and_the_page_polls_it(kube_emulator, register, client_as,
                                                     django_capture_on_commit_callbacks):
    add_fleet(kube_emulator)
    cluster = register(kube_emulator, auto_label=True)
    client = client_as(Role.OPERATOR)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        queued = client.post(reverse("clusters:sync", args=[cluster.pk]), HTTP_HX_REQUEST="true")
        again = client.post(reverse("clusters:sync", args=[cluster.pk]), HTTP_HX_REQUEST="true")
    assert len(callbacks) == 1  # a sync already queued is not queued twice
    assert kube_emulator.count("GET", "^/api/v1/nodes$") == 0  # the request did not sync
    for response in (queued, again):
        text = response.content.decode()
        assert response.status_code == 200 and 'id="cluster-overview"' in text and 'hx-trigger="every 1s"' in text
        assert "Sync queued" in text
    status_url = reverse("clusters:sync-status", args=[cluster.pk])
    polling = client_as(Role.VIEWER).get(status_url, HTTP_HX_REQUEST="true")
    assert polling.status_code == 200 and "HX-Trigger" not in polling.headers

    message = run_sync(cluster.pk)
    job = LabelJob.objects.get()
    assert message == f"4 nodes: 4 new, 0 changed, 0 removed. The auto-label policy started label job #{job.pk}."
    done = client.get(status_url, HTTP_HX_REQUEST="true")
    assert done.status_code == 286 and done.headers["HX-Trigger"] == '{"nodes-synced": {}}'
    text = done.content.decode()
    assert "every 1s" not in text and message in text and "4 · 3 compatible" in text
    nodes = client.get(reverse("clusters:detail", args=[cluster.pk]), HTTP_HX_REQUEST="true").content.decode()
    assert 'hx-trigger="nodes-synced from:body"' in nodes and "node-docker" in nodes

    kube_emulator.token_expired = True
    assert "expired" in run_sync(cluster.pk)
    cluster.refresh_from_db()
    assert cluster.sync_status == "idle" and cluster.connection_status == "unauthorized"
    page = client.post(reverse("clusters:sync", args=[cluster.pk]))  # without htmx: back to the page
    assert page.status_code == 302 and page.url == reverse("clusters:detail", args=[cluster.pk])


def test_registering_a_cluster_tests_and_syncs_it_in_a_worker(kube_emulator, client_as,
                                                              django_capture_on_commit_callbacks):
    add_fleet(kube_emulator)
    client = client_as(Role.ADMIN)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client.post(reverse("clusters:create"), {
            "name": "emu", "auth_method": "token", "server": kube_emulator.url, "token": kube_emulator.token})
    cluster = Cluster.objects.get()
    assert response.status_code == 302 and len(callbacks) == 1 and cluster.sync_status == "queued"
    assert kube_emulator.requests == []  # nothing was called from the request
    detail = client.get(reverse("clusters:detail", args=[cluster.pk])).content.decode()
    assert "Sync queued" in detail and 'hx-trigger="every 1s"' in detail
    run_sync(cluster.pk, test_first=True)
    cluster.refresh_from_db()
    assert (cluster.connection_status, cluster.server_version, cluster.sync_status) == ("ok", "v1.28.4", "idle")
    assert cluster.last_synced_at is not None and cluster.nodes.count() == 4

    # An edit that changes no connection setting queues nothing; a new token does.
    edit = reverse("clusters:edit", args=[cluster.pk])
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        client.post(edit, {"name": "emu", "auth_method": "token", "server": kube_emulator.url,
                           "description": "prod", "deploy_namespaces": "default"})
    assert callbacks == []
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        client.post(edit, {"name": "emu", "auth_method": "token", "server": kube_emulator.url, "token": "rotated",
                           "deploy_namespaces": "default"})
    assert len(callbacks) == 1
    # A failing connection test is what the sync reports; no node list is read then.
    listed = kube_emulator.count("GET", "^/api/v1/nodes$")
    assert "expired" in run_sync(cluster.pk, test_first=True)
    assert kube_emulator.count("GET", "^/api/v1/nodes$") == listed


# --- Live pages, the suite panel and the cluster form (issue 9) ------------------------------------

def test_label_job_rows_update_with_the_progress(kube_emulator, register, client_as):
    add_fleet(kube_emulator)
    cluster = register(kube_emulator)
    sync_nodes(cluster)
    client = client_as(Role.OPERATOR)
    ids = list(Node.objects.filter(name__in=["node-a", "node-b"]).values_list("pk", flat=True))
    client.post(reverse("clusters:label"), {"operation": "label", "mode": "selected", "nodes": ids})
    job = LabelJob.objects.get()
    live = client.get(reverse("clusters:job", args=[job.pk]), {"progress": 1}, HTTP_HX_REQUEST="true")
    text = live.content.decode()
    assert text.lstrip().startswith('<div id="job-live"') and 'hx-trigger="every 1s"' in text
    assert text.count('data-status="pending"><td>') == 2  # the rows come with every poll
    run_label_job(job.pk)
    done = client.get(reverse("clusters:job", args=[job.pk]), {"progress": 1, "status": "done"},
                      HTTP_HX_REQUEST="true")
    assert done.status_code == 286 and "every 1s" not in done.content.decode()
    assert done.content.decode().count('data-status="done"><td>') == 2 and "Show the final per-node results" not in \
        done.content.decode()


def test_suite_panel_offers_what_the_state_allows(kube_emulator, register, client_as, instance, admin_user,
                                                  emulated_agents):
    add_fleet(kube_emulator)
    cluster = register(kube_emulator)
    client = client_as(Role.OPERATOR)
    page = client.get(reverse("clusters:detail", args=[cluster.pk])).content.decode()
    assert page.count('id="id_instance"') == 1 and 'id="helm-instance"' in page  # no duplicate ids
    assert 'data-confirm="Install the acceleration suite on prod?' in page and 'value="uninstall"' not in page
    assert '<option value="' + str(instance.pk) + '" selected>tcr</option>' in page  # the only instance: chosen
    assert "---------" not in page
    assert ("helm install apparate apparate-1.0.0.tgz --namespace apparate-system --create-namespace \\\n"
            "  --set-string image.repository=") in page
    assert "--set-string imagePullSecretsCrs.dockerServer=registry.example.com" in page
    assert "dockerPassword=&#x27;&lt;registry password&gt;&#x27;" in page  # operators fill it in
    assert instance.password not in page and "s3cret" not in page

    suite = request_suite_operation(cluster, SuiteOperation.INSTALL, admin_user, instance=instance)
    busy = client.get(reverse("clusters:suite-status", args=[cluster.pk]), HTTP_HX_REQUEST="true").content.decode()
    assert 'id="suite-actions" hx-swap-oob="true"' in busy and 'id="suite-busy"' in busy
    run_suite_operation(suite.pk)
    refresh_rollout(Suite.objects.get())
    emulated_agents.tick()
    refresh_rollout(Suite.objects.get())
    done = client.get(reverse("clusters:suite-status", args=[cluster.pk]), HTTP_HX_REQUEST="true")
    text = done.content.decode()
    assert done.status_code == 286 and 'id="suite-actions" hx-swap-oob="true"' in text
    assert 'data-confirm="Uninstall the acceleration suite from prod?' in text and 'value="install"' not in text
    assert "Namespace apparate-system</strong>: did not exist: the install creates it" in text
    assert "will be created" not in text


def test_cluster_form_marks_each_methods_fields(client_as):
    page = client_as(Role.ADMIN).get(reverse("clusters:create")).content.decode()
    assert 'id="field-kubeconfig" data-shown-when="auth_method=kubeconfig"' in page
    assert 'id="field-context" data-shown-when="auth_method=kubeconfig"' in page
    for name in ("server", "ca_data", "insecure_skip_tls_verify", "token"):
        assert f'id="field-{name}" data-shown-when="auth_method=token"' in page
    assert 'id="field-name">' in page


def test_label_job_list_refreshes_while_a_job_runs(client_as, db):
    job = LabelJob.objects.create(selection="2 checked node(s)", total=2)
    client = client_as(Role.VIEWER)
    page = client.get(reverse("clusters:jobs")).content.decode()
    assert 'hx-get="/clusters/jobs/?partial=rows"' in page and 'hx-trigger="every 2s"' in page
    rows = client.get(reverse("clusters:jobs"), {"partial": "rows"}, HTTP_HX_REQUEST="true")
    assert rows.status_code == 200 and rows.content.decode().lstrip().startswith('<tbody id="label-job-rows"')
    LabelJob.objects.filter(pk=job.pk).update(status="succeeded", succeeded=2)
    done = client.get(reverse("clusters:jobs"), {"partial": "rows"}, HTTP_HX_REQUEST="true")
    assert done.status_code == 286 and 'data-status="succeeded"' in done.content.decode()
    assert "every 2s" not in client.get(reverse("clusters:jobs")).content.decode()
