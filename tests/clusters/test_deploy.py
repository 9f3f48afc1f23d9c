"""Deploys: twins from the conversion jobs, the plan (YAML, warnings, original offered), the applied Deployment."""

import base64
import json
from datetime import timedelta

import kubernetes_validate
import pytest
import yaml
from django.utils import timezone

from clusters.actions.deploy import (
    PREVIEW_TTL,
    DeployPlan,
    DeployRefused,
    TwinLookup,
    accelerated_images,
    accelerated_twin,
    confirm_deploy,
    deploy_objects,
    plan_deploy,
    preview_deploy,
    run_deploy,
)
from clusters.actions.sync import sync_nodes
from clusters.choices import DeployStatus, SuiteStatus
from clusters.models import DeployRequest, Suite
from converter.reference import parse_reference
from core.models import AuditEntry
from core.roles import Role
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


def test_deploy_yaml_has_no_anchors_or_aliases(kube_emulator, register, instance, converted):
    converted(instance, "team/shop", "1.0")
    text = plan(register(kube_emulator), instance, f"{SHOP}:1.0").yaml
    assert "&id" not in text and "*id" not in text
    deployment = next(doc for doc in yaml.safe_load_all(text) if doc["kind"] == "Deployment")
    assert deployment["metadata"]["labels"] == deployment["spec"]["template"]["metadata"]["labels"]


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


def deploy_through(cluster, instance, image: str, user, namespace: str = "web", name: str = "shop",
                   replicas: int = 1, **options) -> DeployRequest:
    """Preview, confirm and run a deploy as the page and the API do (the task's body runs inline)."""
    planned = plan_deploy(cluster, instance, namespace, name, replicas, parse_reference(image), **options)
    preview = preview_deploy(planned, user)
    confirm_deploy(preview.pk, user, planned.digest)
    return run_deploy(preview.pk)


def stored(emulator, plural: str, name: str, namespace: str) -> dict:
    """What a client wrote (metadata and spec; the status is the emulated controller's)."""
    obj = emulator.get_object(plural, name, namespace)
    return {"metadata": obj["metadata"], "spec": obj["spec"]}


def foreign_deployment(namespace: str, name: str, image: str) -> dict:
    """A workload someone else runs, with the common app.kubernetes.io/name selector."""
    labels = {"app.kubernetes.io/name": name}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "labels": labels},
            "spec": {"replicas": 2, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [{"name": name, "image": image}]}}}}


def test_deploy_objects_validate_strictly_and_are_marked_as_the_deploys():
    instance = Instance(pk=7, name="tcr", url="https://registry.example.com", username="u", password="p")
    for pinned in (True, False):
        objects = deploy_objects(instance, "web", "shop", 2, f"{SHOP}:1.0-apparate", pinned)
        assert [o["kind"] for o in objects] == ["Secret", "Deployment"]
        for obj in objects:
            kubernetes_validate.validate(obj, "1.33.0", strict=True)
            assert obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "apparate"
            assert obj["metadata"]["annotations"] == {"apparate.io/owner": "deploy"}


def test_deploy_applies_secret_and_deployment_with_node_selector(kube_emulator, register, instance, admin_user,
                                                                 converted, django_capture_on_commit_callbacks):
    add_fleet(kube_emulator)
    kube_emulator.create("namespaces", "", {"metadata": {"name": "web"}})
    cluster = register(kube_emulator, deploy_namespaces=["default", "web"])
    kube_emulator.patch("nodes", "", "node-a", {"metadata": {"labels": {LABEL: "true"}}})
    sync_nodes(cluster)
    Suite.objects.create(cluster=cluster, instance=instance, status=SuiteStatus.READY)
    converted(instance, "team/shop", "1.0")
    planned = plan(cluster, instance, f"{SHOP}:1.0-apparate", replicas=3)
    assert planned.warnings == []
    preview = preview_deploy(planned, admin_user)
    assert preview.status == DeployStatus.PREVIEWED and preview.plan_digest == planned.digest
    assert preview.plan_yaml == planned.yaml and kube_emulator.names("deployments") == []
    assert not AuditEntry.objects.filter(model="deployrequest").exists()  # a preview changes nothing
    with django_capture_on_commit_callbacks() as callbacks:
        confirm_deploy(preview.pk, admin_user, planned.digest)
    assert len(callbacks) == 1 and DeployRequest.objects.get().status == DeployStatus.PENDING
    assert AuditEntry.objects.filter(model="deployrequest", object_id=str(preview.pk), action="create").exists()
    request = run_deploy(preview.pk)
    assert request.status == DeployStatus.SUCCEEDED, request.message
    assert request.message == f"Deployment web/shop applied with {SHOP}:1.0-apparate."
    assert request.image == f"{SHOP}:1.0-apparate" and request.accelerated and request.instance == instance
    deployment = kube_emulator.get_object("deployments", "shop", "web")
    pod = deployment["spec"]["template"]["spec"]
    secret_name = f"apparate-registry-credentials-{instance.pk}"
    assert pod["nodeSelector"] == {LABEL: "true"} and pod["imagePullSecrets"] == [{"name": secret_name}]
    assert pod["containers"][0]["image"] == f"{SHOP}:1.0-apparate"
    assert deployment["spec"]["replicas"] == 3
    assert kube_emulator.get_object("secrets", secret_name, "web") is not None
    # The task runs again (a redelivered message): nothing more happens.
    revision = kube_emulator.revision
    assert run_deploy(preview.pk).status == DeployStatus.SUCCEEDED and kube_emulator.revision == revision

    # Deploying again replaces our own Deployment (with the resourceVersion it read).
    again = deploy_through(cluster, instance, f"{SHOP}:1.0-apparate", admin_user)
    assert again.status == DeployStatus.SUCCEEDED, again.message
    assert kube_emulator.get_object("deployments", "shop", "web")["spec"]["replicas"] == 1
    puts = [r for r in kube_emulator.requests if r[0] == "PUT"]
    assert [p[1] for p in puts] == [f"/api/v1/namespaces/web/secrets/{secret_name}",
                                    "/apis/apps/v1/namespaces/web/deployments/shop"]


def test_deploy_refuses_to_replace_coredns_and_writes_no_secret(kube_emulator, register, instance, admin_user,
                                                                 api_as):
    """The reported attack: an operator deploys their image as kube-system/coredns."""
    kube_emulator.create("deployments", "kube-system", foreign_deployment("kube-system", "coredns",
                                                                          "registry.k8s.io/coredns/coredns:v1.11.1"))
    before = stored(kube_emulator, "deployments", "coredns", "kube-system")
    cluster = register(kube_emulator)
    operator = api_as(Role.OPERATOR)
    body = {"cluster": cluster.pk, "instance": instance.pk, "namespace": "kube-system", "name": "coredns",
            "image": f"{SHOP}:evil"}
    answer = operator.post("/api/v1/deploys/", body, format="json")
    assert answer.status_code == 400 and answer.json() == {"namespace": [
        "Deploys to prod may use only these namespaces: default. An admin can allow more on the cluster's settings."]}
    assert not DeployRequest.objects.exists()

    # Even where an admin allowed kube-system, the foreign Deployment is not the deploy's to replace.
    cluster.deploy_namespaces = ["default", "kube-system"]
    cluster.save()
    preview = operator.post("/api/v1/deploys/", body, format="json").json()
    confirmed = operator.post(f"/api/v1/deploys/{preview['id']}/confirm/", {"plan_digest": preview["plan_digest"]},
                              format="json")
    assert confirmed.status_code == 202 and confirmed.json()["status"] == "pending"
    deploy = run_deploy(preview["id"])
    assert deploy.status == DeployStatus.FAILED
    assert deploy.message == ("Deployment kube-system/coredns already exists and was not created by an apparate "
                              "deploy; nothing was changed. Choose another name.")
    assert stored(kube_emulator, "deployments", "coredns", "kube-system") == before
    assert kube_emulator.names("secrets", "kube-system") == []
    assert [m for m, _path, _type in kube_emulator.requests if m in {"POST", "PUT", "PATCH", "DELETE"}] == []


def test_deploy_refuses_a_foreign_default_web_with_a_name_selector(kube_emulator, register, instance, admin_user,
                                                                   converted):
    """With the app.kubernetes.io/name selector our Deployment would have, a replace would succeed: refused."""
    kube_emulator.create("deployments", "default", foreign_deployment("default", "web", "nginx:1.25"))
    before = stored(kube_emulator, "deployments", "web", "default")
    converted(instance, "team/shop", "1.0")
    deploy = deploy_through(register(kube_emulator), instance, f"{SHOP}:1.0", admin_user, namespace="default",
                            name="web")
    assert deploy.status == DeployStatus.FAILED and deploy.message.startswith(
        "Deployment default/web already exists and was not created by an apparate deploy; nothing was changed.")
    assert stored(kube_emulator, "deployments", "web", "default") == before
    assert kube_emulator.names("secrets", "default") == []


def test_a_foreign_secret_of_the_pull_secret_name_is_not_replaced(kube_emulator, register, instance, admin_user):
    secret_name = f"apparate-registry-credentials-{instance.pk}"
    kube_emulator.create("secrets", "default", {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                                                 "metadata": {"name": secret_name}, "data": {"token": "b3Vycw=="}})
    before = kube_emulator.get_object("secrets", secret_name, "default")
    deploy = deploy_through(register(kube_emulator), instance, f"{SHOP}:1.0", admin_user, namespace="default")
    assert deploy.status == DeployStatus.FAILED
    assert deploy.message == (f"Secret default/{secret_name} already exists and was not created by an apparate "
                              "deploy; nothing was changed. Choose another name.")
    assert kube_emulator.get_object("secrets", secret_name, "default") == before
    assert kube_emulator.names("deployments", "default") == []


def test_a_failed_deploy_removes_the_pull_secret_it_wrote(kube_emulator, register, instance, admin_user):
    cluster = register(kube_emulator)
    secret_name = f"apparate-registry-credentials-{instance.pk}"
    kube_emulator.deny("create", "deployments")
    deploy = deploy_through(cluster, instance, f"{SHOP}:1.0", admin_user, namespace="default")
    assert deploy.status == DeployStatus.FAILED and deploy.message.startswith("Deployment default/shop: Forbidden")
    assert kube_emulator.names("secrets", "default") == []
    assert kube_emulator.count("DELETE", f"/secrets/{secret_name}$") == 1

    # A pull Secret that an earlier deploy created stays: other workloads may use it.
    kube_emulator.denied.clear()
    assert deploy_through(cluster, instance, f"{SHOP}:1.0", admin_user, namespace="default").status == "succeeded"
    kube_emulator.deny("update", "deployments")
    deploy = deploy_through(cluster, instance, f"{SHOP}:1.0", admin_user, namespace="default")
    assert deploy.status == DeployStatus.FAILED and "Forbidden" in deploy.message
    assert kube_emulator.names("secrets", "default") == [secret_name]


def test_deploy_failures_are_reported(kube_emulator, register, instance, admin_user):
    cluster = register(kube_emulator, deploy_namespaces=["default", "missing", "web"])
    request = deploy_through(cluster, instance, f"{SHOP}:1.0", admin_user, namespace="missing")
    assert request.status == DeployStatus.FAILED
    assert request.message == 'Secret missing/apparate-registry-credentials-' \
                              f'{instance.pk}: Not found: namespaces "missing" not found'
    kube_emulator.stop()
    request = deploy_through(cluster, instance, f"{SHOP}:1.0", admin_user, namespace="web")
    assert request.status == DeployStatus.FAILED and request.message.startswith("Cannot reach")


def test_confirming_needs_the_same_user_the_same_plan_and_a_fresh_preview(kube_emulator, register, instance,
                                                                          admin_user, converted, make_user):
    cluster = register(kube_emulator)
    converted(instance, "team/shop", "1.0")
    planned = plan(cluster, instance, f"{SHOP}:1.0", namespace="default")
    preview = preview_deploy(planned, admin_user)
    other = make_user(Role.OPERATOR, "mallory")
    original = plan(cluster, instance, f"{SHOP}:1.0", namespace="default", use_original=True)
    refusals = [
        ("nope", admin_user, planned.digest, "There is no such preview: preview the deploy first."),
        (preview.pk, other, planned.digest,
         "Only the user who previewed a deploy can confirm it: preview it yourself."),
        (preview.pk, admin_user, original.digest,
         "The deploy changed since its preview (its fields, or the image's twin): review the new preview and "
         "confirm that one."),
    ]
    for deploy_id, user, digest, message in refusals:
        with pytest.raises(DeployRefused) as refused:
            confirm_deploy(deploy_id, user, digest)
        assert str(refused.value) == message
    cluster.deploy_namespaces = ["web"]
    cluster.save()
    with pytest.raises(DeployRefused, match="may use only these namespaces: web"):
        confirm_deploy(preview.pk, admin_user, planned.digest)
    cluster.deploy_namespaces = ["default"]
    cluster.save()
    DeployRequest.objects.filter(pk=preview.pk).update(created_at=timezone.now() - PREVIEW_TTL - timedelta(seconds=1))
    with pytest.raises(DeployRefused, match="older than 15 minutes"):
        confirm_deploy(preview.pk, admin_user, planned.digest)
    assert DeployRequest.objects.get(pk=preview.pk).status == DeployStatus.PREVIEWED
    assert kube_emulator.names("deployments") == []
    # The stale preview is removed when someone previews again.
    fresh = preview_deploy(planned, admin_user)
    assert list(DeployRequest.objects.values_list("pk", flat=True)) == [fresh.pk]
    confirm_deploy(fresh.pk, admin_user, planned.digest)
    with pytest.raises(DeployRefused, match=f"Deploy #{fresh.pk} was already confirmed"):
        confirm_deploy(fresh.pk, admin_user, planned.digest)


def test_the_worker_applies_the_preview_not_what_changed_since(kube_emulator, register, instance, admin_user,
                                                                converted, settings):
    cluster = register(kube_emulator)
    converted(instance, "team/shop", "1.0")
    planned = plan(cluster, instance, f"{SHOP}:1.0", namespace="default")
    preview = preview_deploy(planned, admin_user)
    confirm_deploy(preview.pk, admin_user, planned.digest)
    # A newer push of 1.0 is converting: the twin is stale now, but what was confirmed is applied.
    converted(instance, "team/shop", "1.0", status=JobStatus.RUNNING)
    assert run_deploy(preview.pk).status == DeployStatus.SUCCEEDED
    image = kube_emulator.get_object("deployments", "shop", "default")["spec"]["template"]["spec"]["containers"]
    assert image[0]["image"] == f"{SHOP}:1.0-apparate"

    # If the objects would differ from the preview (here: the node label setting), nothing is applied.
    planned = plan(cluster, instance, f"{SHOP}:1.0-apparate", namespace="default", replicas=2)
    preview = preview_deploy(planned, admin_user)
    confirm_deploy(preview.pk, admin_user, planned.digest)
    settings.APPARATE_NODE_LABEL_KEY = "example.com/other"
    deploy = run_deploy(preview.pk)
    assert deploy.status == DeployStatus.FAILED and deploy.message.startswith(
        "What the deploy would apply is no longer what was previewed")
    assert kube_emulator.get_object("deployments", "shop", "default")["spec"]["replicas"] == 1

    # A namespace the admin disallowed after the confirmation is not deployed into either.
    settings.APPARATE_NODE_LABEL_KEY = LABEL
    planned = plan(cluster, instance, f"{SHOP}:1.0", namespace="default")
    preview = preview_deploy(planned, admin_user)
    confirm_deploy(preview.pk, admin_user, planned.digest)
    cluster.deploy_namespaces = []
    cluster.save()
    deploy = run_deploy(preview.pk)
    assert deploy.status == DeployStatus.FAILED and deploy.message == (
        "Deploys to prod may use only these namespaces: none. An admin can allow more on the cluster's settings.")
