"""What the security review found strong, kept so: one module talks to Kubernetes and never through
`kubernetes.config`; the cluster pages' writes need CSRF; whatever a cluster says is escaped; no
deploy answer carries the registry password."""

import ast
from pathlib import Path

import pytest
from django.test import Client
from django.urls import reverse
from django.utils.html import escape

from clusters.actions.deploy import confirm_deploy, plan_deploy, preview_deploy, run_deploy
from clusters.actions.sync import run_sync
from clusters.models import DeployRequest
from converter.reference import parse_reference
from core.roles import Role

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ["core", "registries", "rules", "pipeline", "clusters", "console", "converter", "agent"]
SCRIPT = "<script>alert('k8s')</script>"
pytestmark = pytest.mark.django_db


def kubernetes_imports(path: Path) -> list[str]:
    """Every module of the `kubernetes` package imported by `path`, as `kubernetes.x` or `kubernetes.x.y`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names if alias.name.split(".")[0] == "kubernetes"]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "kubernetes":
            found += [f"{node.module}.{alias.name}" for alias in node.names]
    return found


def test_only_clusters_kube_imports_the_client_and_never_its_config_loader():
    imports = {str(path.relative_to(ROOT)): kubernetes_imports(path)
               for package in PACKAGES for path in (ROOT / package).rglob("*.py")}
    assert {path: names for path, names in imports.items() if names} == {"clusters/kube.py": ["kubernetes.client"]}
    # The client's kubeconfig loader would run exec plugins and read files: not even by attribute.
    assert "config" not in {node.attr for node in ast.walk(ast.parse((ROOT / "clusters/kube.py").read_text()))
                            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                            and node.value.id == "kubernetes"}


def test_cluster_writes_need_the_csrf_token(kube_emulator, register, make_user, instance,
                                            django_capture_on_commit_callbacks):
    cluster = register(kube_emulator)
    client = Client(enforce_csrf_checks=True)
    client.force_login(make_user(Role.ADMIN, "csrf-admin"))
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        for url, data in [
            (reverse("clusters:sync", args=[cluster.pk]), {}),
            (reverse("clusters:deploy"), {"cluster": cluster.pk, "instance": instance.pk, "namespace": "default",
                                          "name": "shop", "replicas": 1,
                                          "image": "registry.example.com/team/shop:1.0"}),
            (reverse("clusters:edit", args=[cluster.pk]), {"name": "renamed", "auth_method": "token",
                                                          "server": kube_emulator.url}),
        ]:
            assert client.post(url, data).status_code == 403, url
    cluster.refresh_from_db()
    assert callbacks == [] and cluster.name == "prod" and cluster.sync_status == "idle"
    assert not DeployRequest.objects.exists()


def test_what_a_cluster_says_is_escaped_and_the_password_never_shown(kube_emulator, register, client_as, api_as,
                                                                     instance, admin_user):
    cluster = register(kube_emulator)
    viewer = client_as(Role.VIEWER)
    kube_emulator.answer_next("GET", "^/api/v1/nodes$", b'{"kind": "Status", "message": "' +
                              SCRIPT.encode() + b'", "code": 500}', status=500)
    assert SCRIPT in run_sync(cluster.pk)
    page = viewer.get(reverse("clusters:detail", args=[cluster.pk])).content.decode()
    assert SCRIPT not in page and escape(SCRIPT) in page

    planned = plan_deploy(cluster, instance, "default", "shop", 1, parse_reference("registry.example.com/a/b:1"))
    preview = preview_deploy(planned, admin_user)
    confirm_deploy(preview.pk, admin_user, planned.digest)
    kube_emulator.answer_next("POST", "/deployments$", b'{"kind": "Status", "message": "' + SCRIPT.encode() +
                              b'", "code": 422}', status=422)
    deploy = run_deploy(preview.pk)
    assert SCRIPT in deploy.message
    detail = viewer.get(reverse("clusters:deploy-detail", args=[deploy.pk])).content.decode()
    assert SCRIPT not in detail and escape(SCRIPT) in detail
    assert instance.password not in detail and escape(instance.password) not in detail
    assert escape(".dockerconfigjson: <hidden>") in detail
    answer = api_as(Role.OPERATOR).post("/api/v1/deploys/", {
        "cluster": cluster.pk, "instance": instance.pk, "namespace": "default", "name": "shop",
        "image": "registry.example.com/a/b:1"}, format="json")
    assert answer.status_code == 201 and instance.password not in answer.content.decode()
    listing = api_as(Role.VIEWER).get("/api/v1/deploys/").content.decode()
    assert instance.password not in listing
