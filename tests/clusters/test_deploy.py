"""Deploys: the plan (YAML, warnings, original image offered) and the applied Deployment."""

import pytest

from clusters import actions
from clusters.choices import DeployStatus, SuiteStatus
from clusters.models import Suite
from console.models import AuditEntry
from tests.clusters.conftest import add_fleet

LABEL = "cloud.tencent.com/apparate"
pytestmark = pytest.mark.django_db


def test_accelerated_twin_recognises_the_suffix():
    assert actions.accelerated_twin("reg.example.com:5000/team/app:1.0-apparate") == (
        True, "reg.example.com:5000/team/app:1.0")
    assert actions.accelerated_twin("reg.example.com:5000/team/app:1.0") == (False, "reg.example.com:5000/team/app:1.0")
    assert actions.accelerated_twin("reg.example.com:5000/team/app") == (False, "reg.example.com:5000/team/app")


def test_plan_warns_and_offers_the_original_image(kube_emulator, register, instance):
    cluster = register(kube_emulator)
    plan = actions.plan_deploy(cluster, instance, "web", "shop", 2, "registry.example.com/team/shop:1.0-apparate")
    assert plan.accelerated and plan.original_image == "registry.example.com/team/shop:1.0"
    assert any("No node" in w for w in plan.warnings) and any("suite is not ready" in w for w in plan.warnings)
    assert f"{LABEL}: 'true'" in plan.yaml and "<hidden>" in plan.yaml and "s3cret" not in plan.yaml

    original = actions.plan_deploy(cluster, instance, "web", "shop", 2, "registry.example.com/team/shop:1.0-apparate",
                                   use_original=True)
    assert original.image == "registry.example.com/team/shop:1.0" and LABEL not in original.yaml

    untwinned = actions.plan_deploy(cluster, instance, "web", "shop", 1, "registry.example.com/team/shop:1.0")
    assert any("no accelerated twin" in w for w in untwinned.warnings) and not untwinned.accelerated


def test_deploy_applies_secret_and_deployment_with_node_selector(kube_emulator, register, instance, admin_user):
    add_fleet(kube_emulator)
    kube_emulator.create("namespaces", "", {"metadata": {"name": "web"}})
    cluster = register(kube_emulator)
    kube_emulator.patch("nodes", "", "node-a", {"metadata": {"labels": {LABEL: "true"}}})
    actions.sync_nodes(cluster)
    Suite.objects.create(cluster=cluster, instance=instance, status=SuiteStatus.READY)
    plan = actions.plan_deploy(cluster, instance, "web", "shop", 3, "registry.example.com/team/shop:1.0-apparate")
    assert plan.warnings == []
    request = actions.deploy(plan, admin_user)
    assert request.status == DeployStatus.SUCCEEDED, request.message
    deployment = kube_emulator.get_object("deployments", "shop", "web")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {LABEL: "true"} and pod["imagePullSecrets"] == [
        {"name": "apparate-registry-credentials"}]
    assert pod["containers"][0]["image"] == "registry.example.com/team/shop:1.0-apparate"
    assert deployment["spec"]["replicas"] == 3
    assert kube_emulator.get_object("secrets", "apparate-registry-credentials", "web") is not None
    assert AuditEntry.objects.filter(model="deployrequest", object_id=str(request.pk)).exists()

    # Deploying again replaces the Deployment (idempotent).
    again = actions.deploy(actions.plan_deploy(cluster, instance, "web", "shop", 1,
                                               "registry.example.com/team/shop:1.0-apparate"), admin_user)
    assert again.status == DeployStatus.SUCCEEDED
    assert kube_emulator.get_object("deployments", "shop", "web")["spec"]["replicas"] == 1


def test_deploy_failures_are_reported(kube_emulator, register, instance, admin_user):
    cluster = register(kube_emulator)
    request = actions.deploy(actions.plan_deploy(cluster, instance, "missing", "shop", 1,
                                                 "registry.example.com/team/shop:1.0"), admin_user)
    assert request.status == DeployStatus.FAILED and 'namespaces "missing" not found' in request.message
    kube_emulator.create("namespaces", "", {"metadata": {"name": "web"}})
    kube_emulator.deny("create", "deployments")
    request = actions.deploy(actions.plan_deploy(cluster, instance, "web", "shop", 1,
                                                 "registry.example.com/team/shop:1.0"), admin_user)
    assert request.status == DeployStatus.FAILED and request.message.startswith("Deployment web/shop: Forbidden")
