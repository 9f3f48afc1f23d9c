"""After a deploy: its rollout on the deploy page, read by a worker through clusters/kube.py from the
API emulator (pods listed by the Deployment's selector, scheduled like kube-scheduler would or left
Pending with its condition message), with the reason for Pending said plainly, live while not complete."""

import re
from datetime import timedelta

import pytest
from django.utils import timezone

from clusters.actions.deploy import refresh_rollout
from clusters.choices import RolloutState
from clusters.kube import session_for
from clusters.models import DeployRequest
from core.roles import Role
from tests.clusters.test_deploy import SHOP, deploy_through

LABEL = "cloud.tencent.com/apparate"
pytestmark = pytest.mark.django_db
UNSCHEDULABLE = ("0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector. preemption: 0/3 "
                 "nodes are available: 3 Preemption is not helpful for scheduling..")
NO_LABELLED_NODE = ("No node can take it: the pod runs only on nodes labelled cloud.tencent.com/apparate=true, and no "
                    "ready node carries that label. Label nodes for acceleration on the Nodes page.")


@pytest.fixture
def cluster(kube_emulator, register):
    for name in ("node-a", "node-b", "node-c"):
        kube_emulator.add_node(name)
    kube_emulator.create("namespaces", "", {"metadata": {"name": "web"}})
    return register(kube_emulator, deploy_namespaces=["web"])


def deployed(cluster, instance, converted, user, django_capture_on_commit_callbacks, **options) -> DeployRequest:
    converted(instance, "team/shop", "1.0")
    with django_capture_on_commit_callbacks() as callbacks:
        deploy = deploy_through(cluster, instance, f"{SHOP}:1.0", user, replicas=2, **options)
    assert deploy.status == "succeeded", deploy.message
    assert len(callbacks) == 2  # the apply, then the watch of its rollout
    deploy.refresh_from_db()
    assert deploy.rollout_watch_since is not None and deploy.rollout_watched
    return deploy


def test_emulator_schedules_deployment_pods_like_kube_scheduler(kube_emulator, cluster):
    labels = {"app.kubernetes.io/name": "web"}
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "web"},
                  "spec": {"replicas": 2, "selector": {"matchLabels": labels}, "template": {
                      "metadata": {"labels": labels},
                      "spec": {"nodeSelector": {LABEL: "true"}, "containers": [{"name": "web", "image": "nginx"}]}}}}
    with session_for(cluster) as session:
        session.create(deployment)
        session.create({**deployment, "metadata": {"name": "other", "namespace": "web"}, "spec": {
            **deployment["spec"], "selector": {"matchLabels": {"app": "other"}},
            "template": {"metadata": {"labels": {"app": "other"}}, "spec": {
                "containers": [{"name": "other", "image": "nginx"}]}}}})
        pods = session.list("Pod", "web", label_selector="app.kubernetes.io/name=web")
        assert len(pods) == 2 and {p["metadata"]["ownerReferences"][0]["kind"] for p in pods} == {"ReplicaSet"}
        for pod in pods:
            assert pod["status"]["phase"] == "Pending" and "nodeName" not in pod["spec"]
            assert pod["status"]["conditions"] == [{"type": "PodScheduled", "status": "False",
                                                    "reason": "Unschedulable", "message": UNSCHEDULABLE}]
        other = session.list("Pod", "web", label_selector="app=other")  # no selector: placed on the least busy
        assert sorted(p["spec"]["nodeName"] for p in other) == ["node-a", "node-b"]
        assert session.get("Deployment", "web", "web")["status"]["readyReplicas"] == 0

        kube_emulator.patch("nodes", "", "node-c", {"metadata": {"labels": {LABEL: "true"}}})
        pods = session.list("Pod", "web", label_selector="app.kubernetes.io/name=web")
        assert [(p["spec"]["nodeName"], p["status"]["phase"]) for p in pods] == [("node-c", "Running")] * 2
        assert session.get("Deployment", "web", "web")["status"]["readyReplicas"] == 2
        session.delete("Deployment", "web", "web")
        assert session.list("Pod", "web", label_selector="app.kubernetes.io/name=web") == []


def test_pending_pods_say_no_node_carries_the_label_until_one_does(kube_emulator, cluster, instance, converted,
                                                                  admin_user, client_as,
                                                                  django_capture_on_commit_callbacks):
    deploy = deployed(cluster, instance, converted, admin_user, django_capture_on_commit_callbacks)
    viewer = client_as(Role.VIEWER)
    reading = viewer.get(f"/clusters/deploys/{deploy.pk}/").content.decode()
    assert "Reading the Deployment's pods…" in reading and 'hx-trigger="every 1s"' in reading

    deploy = refresh_rollout(deploy.pk)
    assert deploy.rollout["state"] == RolloutState.PROGRESSING
    assert (deploy.rollout["wanted"], deploy.rollout["ready"]) == (2, 0)
    assert [(pod["node"], pod["phase"], pod["ready"], pod["reason"], pod["detail"]) for pod in deploy.rollout["pods"]] \
        == [("", "Pending", False, NO_LABELLED_NODE, UNSCHEDULABLE)] * 2
    polled = viewer.get(f"/clusters/deploys/{deploy.pk}/?progress=1", HTTP_HX_REQUEST="true")
    html = polled.content.decode()
    assert polled.status_code == 200  # still rolling out: the page keeps polling
    assert re.sub(r"<[^>]+>|\s+", " ", re.search(r'<p id="rollout-summary">(.*?)</p>', html, re.S)[1]).split() == \
        ["Rolling", "out", "0", "of", "2", "pods", "ready", "(read", "just", "now", ")"]
    assert html.count(f'<span class="rollout-reason">{NO_LABELLED_NODE}</span> <a href="/clusters/nodes/?cluster='
                      f'{cluster.pk}">Go to the nodes</a>') == 2
    assert html.count(UNSCHEDULABLE.replace("'", "&#x27;")) == 2

    kube_emulator.patch("nodes", "", "node-b", {"metadata": {"labels": {LABEL: "true"}}})
    deploy = refresh_rollout(deploy.pk)
    assert deploy.rollout["state"] == RolloutState.COMPLETE and not deploy.rollout_watched
    assert [(pod["node"], pod["ready"], pod["reason"]) for pod in deploy.rollout["pods"]] == [("node-b", True, "")] * 2
    done = viewer.get(f"/clusters/deploys/{deploy.pk}/?progress=1", HTTP_HX_REQUEST="true")
    assert done.status_code == 286  # complete: polling stops
    assert done.content.decode().count('<span class="badge badge-green">Ready</span>') == 2
    assert refresh_rollout(deploy.pk) is None  # nothing more to watch


def test_a_rollout_not_complete_in_time_stops_and_can_be_checked_again(kube_emulator, cluster, instance, converted,
                                                                       admin_user, client_as, settings,
                                                                       django_capture_on_commit_callbacks):
    kube_emulator.unpullable_images.add(f"{SHOP}:1.0")
    deploy = deployed(cluster, instance, converted, admin_user, django_capture_on_commit_callbacks, use_original=True)
    settings.APPARATE_DEPLOY_ROLLOUT_WATCH = 0
    deploy = refresh_rollout(deploy.pk)
    assert deploy.rollout["state"] == RolloutState.STALLED and not deploy.rollout_watched
    assert [(pod["node"] != "", pod["reason"], pod["detail"]) for pod in deploy.rollout["pods"]] == [
        (True, "Its container is waiting: ImagePullBackOff.", f'Back-off pulling image "{SHOP}:1.0"')] * 2
    viewer = client_as(Role.VIEWER)
    page = viewer.get(f"/clusters/deploys/{deploy.pk}/").content.decode()
    assert "The console stopped reading the rollout: it was not complete after 0 seconds." in page
    assert "Check again" not in page and 'hx-trigger="every 1s"' not in page  # viewers cannot restart it
    operator = client_as(Role.OPERATOR)
    assert "Check again" in operator.get(f"/clusters/deploys/{deploy.pk}/").content.decode()
    settings.APPARATE_DEPLOY_ROLLOUT_WATCH = 300
    with django_capture_on_commit_callbacks() as callbacks:
        answer = operator.post(f"/clusters/deploys/{deploy.pk}/rollout/")
    assert answer.status_code == 302 and len(callbacks) == 1
    deploy.refresh_from_db()
    assert deploy.rollout["state"] == RolloutState.PROGRESSING and deploy.rollout_watched
    kube_emulator.unpullable_images.clear()
    kube_emulator.delete("deployments", "web", "shop")
    assert refresh_rollout(deploy.pk).rollout == {"state": RolloutState.GONE, "pods": [], "wanted": 2, "ready": 0}
    assert viewer.post(f"/clusters/deploys/{deploy.pk}/rollout/").status_code == 403


def test_an_unreachable_cluster_is_noted_and_read_again(kube_emulator, cluster, instance, converted, admin_user,
                                                        client_as, django_capture_on_commit_callbacks):
    deploy = deployed(cluster, instance, converted, admin_user, django_capture_on_commit_callbacks)
    kube_emulator.stop()
    deploy = refresh_rollout(deploy.pk)
    assert deploy.rollout["state"] == RolloutState.PROGRESSING and deploy.rollout_watched
    assert deploy.rollout["error"].startswith(f"Cannot reach {cluster.server}: connection refused")
    # the worker watching it died: past the watch's time (and its grace) the page stops and offers Check again
    DeployRequest.objects.filter(pk=deploy.pk).update(rollout_watch_since=timezone.now() - timedelta(seconds=331))
    deploy.refresh_from_db()
    assert not deploy.rollout_watched and refresh_rollout(deploy.pk) is None
    operator = client_as(Role.OPERATOR)
    polled = operator.get(f"/clusters/deploys/{deploy.pk}/?progress=1", HTTP_HX_REQUEST="true")
    assert polled.status_code == 286
    assert '<p class="muted small-text" id="rollout-stopped">The console stopped reading the rollout.</p>' in \
        polled.content.decode() and "Check again" in polled.content.decode()
