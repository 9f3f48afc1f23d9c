"""Deploys: twins from the conversion jobs, the plan (YAML, warnings, original offered), the applied Deployment."""

import base64
import json

import pytest

from clusters.actions.deploy import (
    DeployPlan,
    TwinLookup,
    accelerated_images,
    accelerated_twin,
    apply_deploy,
    plan_deploy,
)
from clusters.actions.sync import sync_nodes
from clusters.choices import DeployStatus, SuiteStatus
from clusters.models import Suite
from converter.reference import parse_reference
from core.models import AuditEntry
from pipeline import twins
from pipeline.choices import JobStatus
from registries.models import Instance
from tests.clusters.conftest import add_fleet

LABEL = "cloud.tencent.com/apparate"
SHOP = "registry.example.com/team/shop"
pytestmark = pytest.mark.django_db


def twin_of(instance, image: str) -> TwinLookup:
    return accelerated_twin(instance, parse_reference(image))


def plan(cluster, instance, image: str, replicas: int = 1, namespace: str = "web", **options) -> DeployPlan:
    return plan_deploy(cluster, instance, namespace, "shop", replicas, parse_reference(image), **options)


def test_accelerated_twin_answers_from_the_jobs_both_ways(instance, converted):
    never = twin_of(instance, f"{SHOP}:1.0")
    assert never.accelerated == "" and never.original == f"{SHOP}:1.0" and "never converted" in never.reason
    # A tag that merely looks accelerated is not a twin the console knows of.
    assert twin_of(instance, f"{SHOP}:2.0-apparate").accelerated == ""

    job = converted(instance, "team/shop", "1.0")
    assert twin_of(instance, f"{SHOP}:1.0") == TwinLookup(f"{SHOP}:1.0", f"{SHOP}:1.0-apparate")
    assert twin_of(instance, f"{SHOP}:1.0-apparate") == TwinLookup(f"{SHOP}:1.0", f"{SHOP}:1.0-apparate")
    assert twin_of(instance, f"{SHOP}@{job.source_digest}") == TwinLookup(
        f"{SHOP}@{job.source_digest}", f"{SHOP}@{job.result_digest}")
    assert twin_of(instance, f"{SHOP}@{job.result_digest}") == TwinLookup(
        f"{SHOP}@{job.source_digest}", f"{SHOP}@{job.result_digest}")
    # Same tag in another repository or another instance: no twin.
    assert twin_of(instance, "registry.example.com/team/cart:1.0").accelerated == ""
    other = Instance.objects.create(name="other", url="https://registry.example.com")
    assert twin_of(other, f"{SHOP}:1.0").accelerated == ""

    # A newer push of the tag that is still converting makes the old twin stale.
    newer = converted(instance, "team/shop", "1.0", status=JobStatus.QUEUED)
    stale = twin_of(instance, f"{SHOP}:1.0")
    assert stale.accelerated == "" and f"job #{newer.pk}) is queued" in stale.reason
    # The twin itself can still be deployed by name.
    assert twin_of(instance, f"{SHOP}:1.0-apparate").accelerated == f"{SHOP}:1.0-apparate"


def test_twin_tags_of_the_same_content_have_twins_too(instance, converted):
    job = converted(instance, "team/shop", "1.0")
    job.twin_tags = ["latest", "stable"]
    job.save()
    twins.record_present(job, "latest", job.result_digest)  # tagged; stable's twin is not there (yet)
    assert twin_of(instance, f"{SHOP}:latest") == TwinLookup(f"{SHOP}:latest", f"{SHOP}:latest-apparate")
    assert twin_of(instance, f"{SHOP}:latest-apparate") == TwinLookup(
        f"{SHOP}:latest", f"{SHOP}:latest-apparate")
    stable = twin_of(instance, f"{SHOP}:stable")
    assert stable.accelerated == "" and stable.reason == (
        f"{SHOP}:stable has no accelerated twin in the registry yet (job #{job.pk} converted its content).")


def test_accelerated_images_lists_current_twins_of_the_instance(instance, converted):
    converted(instance, "team/shop", "2.0")
    converted(instance, "team/shop", "1.0")
    converted(instance, "team/cart", "1.0", status=JobStatus.FAILED)
    converted(instance, "team/api", "1.0")
    converted(instance, "team/api", "1.0", status=JobStatus.RUNNING)  # newer push still converting
    converted(Instance.objects.create(name="other", url="https://other.example.com"), "team/shop", "3.0")
    images = accelerated_images(instance)
    assert [job.accelerated for job in images] == [f"{SHOP}:1.0-apparate", f"{SHOP}:2.0-apparate"]


def test_plan_deploys_the_twin_and_offers_the_original(kube_emulator, register, instance, converted):
    cluster = register(kube_emulator)
    converted(instance, "team/shop", "1.0")
    for image in (f"{SHOP}:1.0-apparate", f"{SHOP}:1.0"):  # either side of the pair picks the twin
        planned = plan(cluster, instance, image, replicas=2)
        assert planned.accelerated and planned.image == f"{SHOP}:1.0-apparate"
        assert planned.original_image == f"{SHOP}:1.0"
    assert any("No node" in w for w in planned.warnings) and any("suite is not ready" in w for w in planned.warnings)
    assert f"{LABEL}: 'true'" in planned.yaml and "<hidden>" in planned.yaml and "s3cret" not in planned.yaml

    original = plan(cluster, instance, f"{SHOP}:1.0-apparate", use_original=True)
    assert original.image == f"{SHOP}:1.0" and not original.accelerated and LABEL not in original.yaml

    untwinned = plan(cluster, instance, f"{SHOP}:2.0")
    assert not untwinned.accelerated and untwinned.image == f"{SHOP}:2.0" and LABEL not in untwinned.yaml
    assert any("has no accelerated twin" in w and "full pull" in w for w in untwinned.warnings)


def test_pull_secret_carries_the_chosen_instance_credentials(kube_emulator, register, instance, converted):
    cluster = register(kube_emulator)
    other = Instance.objects.create(name="mirror", url="http://10.0.0.5:5000", username="bot", password="pw2")
    secrets = {}
    for chosen, image in ((instance, f"{SHOP}:1.0"), (other, "10.0.0.5:5000/team/shop:1.0")):
        objects = plan(cluster, chosen, image).objects
        secret = next(o for o in objects if o["kind"] == "Secret")
        pod = next(o for o in objects if o["kind"] == "Deployment")["spec"]["template"]["spec"]
        assert pod["imagePullSecrets"] == [{"name": secret["metadata"]["name"]}]
        config = json.loads(base64.b64decode(secret["data"][".dockerconfigjson"]))
        secrets[secret["metadata"]["name"]] = config["auths"]
    # One Secret per instance, so workloads of both can share a namespace.
    def auths(host, username, password):
        auth = base64.b64encode(f"{username}:{password}".encode()).decode()
        return {host: {"username": username, "password": password, "auth": auth}}

    assert secrets == {
        f"apparate-registry-credentials-{instance.pk}": auths("registry.example.com", "robot", "s3cret&<pass>"),
        f"apparate-registry-credentials-{other.pk}": auths("10.0.0.5:5000", "bot", "pw2"),
    }
    anonymous = Instance.objects.create(name="public", url="https://public.example.com")
    objects = plan(cluster, anonymous, "public.example.com/team/shop:1.0").objects
    assert [o["kind"] for o in objects] == ["Deployment"]
    assert "imagePullSecrets" not in objects[0]["spec"]["template"]["spec"]


def test_deploy_applies_secret_and_deployment_with_node_selector(kube_emulator, register, instance, admin_user,
                                                                 converted):
    add_fleet(kube_emulator)
    kube_emulator.create("namespaces", "", {"metadata": {"name": "web"}})
    cluster = register(kube_emulator)
    kube_emulator.patch("nodes", "", "node-a", {"metadata": {"labels": {LABEL: "true"}}})
    sync_nodes(cluster)
    Suite.objects.create(cluster=cluster, instance=instance, status=SuiteStatus.READY)
    converted(instance, "team/shop", "1.0")
    planned = plan(cluster, instance, f"{SHOP}:1.0-apparate", replicas=3)
    assert planned.warnings == []
    request = apply_deploy(planned, admin_user)
    assert request.status == DeployStatus.SUCCEEDED, request.message
    assert request.image == f"{SHOP}:1.0-apparate" and request.accelerated and request.instance == instance
    deployment = kube_emulator.get_object("deployments", "shop", "web")
    pod = deployment["spec"]["template"]["spec"]
    secret_name = f"apparate-registry-credentials-{instance.pk}"
    assert pod["nodeSelector"] == {LABEL: "true"} and pod["imagePullSecrets"] == [{"name": secret_name}]
    assert pod["containers"][0]["image"] == f"{SHOP}:1.0-apparate"
    assert deployment["spec"]["replicas"] == 3
    assert kube_emulator.get_object("secrets", secret_name, "web") is not None
    assert AuditEntry.objects.filter(model="deployrequest", object_id=str(request.pk)).exists()

    # Deploying again replaces the Deployment (idempotent).
    again = apply_deploy(plan(cluster, instance, f"{SHOP}:1.0-apparate"), admin_user)
    assert again.status == DeployStatus.SUCCEEDED
    assert kube_emulator.get_object("deployments", "shop", "web")["spec"]["replicas"] == 1


def test_deploy_failures_are_reported(kube_emulator, register, instance, admin_user):
    cluster = register(kube_emulator)
    request = apply_deploy(plan(cluster, instance, f"{SHOP}:1.0", namespace="missing"), admin_user)
    assert request.status == DeployStatus.FAILED and 'namespaces "missing" not found' in request.message
    kube_emulator.create("namespaces", "", {"metadata": {"name": "web"}})
    kube_emulator.deny("create", "deployments")
    request = apply_deploy(plan(cluster, instance, f"{SHOP}:1.0"), admin_user)
    assert request.status == DeployStatus.FAILED and request.message.startswith("Deployment web/shop: Forbidden")
