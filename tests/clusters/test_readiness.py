"""Whether a node is ready to lazy-pull, from its label and its agent's report: the rule, its
boundaries and exact reasons, and where the console shows it (node list, cluster page, deploy)."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from agent import report
from agent.status import Code, Status, fuse_missing
from clusters.actions.sync import lazy_pull_state, sync_nodes
from clusters.choices import LazyPull, SuiteOperation, SuiteStatus
from clusters.forms import LabelForm
from clusters.models import Node, Suite
from core.roles import Role

pytestmark = pytest.mark.django_db
LABEL = "cloud.tencent.com/apparate"
NOW = timezone.now().replace(microsecond=0)


def stamp(seconds_ago: float) -> str:
    return (NOW - timedelta(seconds=seconds_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")


def reported(code: Code, reason: str = "", seconds_ago: float = 10) -> dict:
    status = Status(code == Code.READY, code, reason, "1.6.20", checked_at=stamp(seconds_ago))
    return report.read_report({"metadata": {"annotations": {
        report.ANNOTATION: report.encode(status.as_dict(), "rev", "pod")}}})


def test_the_lazy_pull_state_of_a_node(settings):
    stale = settings.APPARATE_AGENT_REPORT_STALE_AFTER
    state = lambda *args: lazy_pull_state(*args, now=NOW)  # noqa: E731
    assert state(True, reported(Code.READY)) == (LazyPull.READY, "")
    assert state(True, reported(Code.READY, seconds_ago=stale)) == (LazyPull.READY, "")
    assert state(True, reported(Code.READY, seconds_ago=stale + 1)) == (
        LazyPull.PULLS_IN_FULL, f"no report from the agent since {stamp(stale + 1)}")
    assert state(True, reported(Code.READY, seconds_ago=stale + 1), "CrashLoopBackOff") == (
        LazyPull.PULLS_IN_FULL, f"agent not running: its pod is CrashLoopBackOff; no report from the agent since "
                                f"{stamp(stale + 1)}")
    assert state(True, reported(Code.FUSE_MISSING, fuse_missing("/dev/fuse"))) == (
        LazyPull.PULLS_IN_FULL, fuse_missing("/dev/fuse"))
    unsupported = "containerd 1.4.3 is not supported: the agent supports containerd >= 1.5 and < 3.0"
    assert state(True, reported(Code.CONTAINERD_UNSUPPORTED, unsupported)) == (LazyPull.PULLS_IN_FULL, unsupported)
    assert state(True, reported(Code.REMOVED)) == (LazyPull.PULLS_IN_FULL,
                                                   "the agent cleaned this node up (suite uninstall)")
    assert state(True, None) == (LazyPull.PULLS_IN_FULL, "agent not running yet")
    assert state(True, None, "ImagePullBackOff") == (LazyPull.PULLS_IN_FULL,
                                                     "agent not running yet: its pod is ImagePullBackOff")
    assert state(False, None) == (LazyPull.NOT_LABELLED, "")
    assert state(False, reported(Code.REMOVED)) == (LazyPull.NOT_LABELLED, "")
    assert state(False, reported(Code.READY)) == (
        LazyPull.NOT_LABELLED, "the label was removed; the agent has not confirmed that it cleaned the node up "
                               "(last report: ready)")


def test_sync_reads_the_reports_and_ignores_unreadable_ones(kube_emulator, register):
    ready = Status(True, Code.READY, "containerd uses the stargz snapshotter", "1.6.20", checked_at=stamp(5))
    kube_emulator.add_node("good", labels={LABEL: "true"}, runtime="containerd://1.6.20")
    kube_emulator.add_node("garbled", labels={LABEL: "true"})
    kube_emulator.add_node("plain")
    kube_emulator.patch("nodes", "", "good", {"metadata": {"annotations": {
        report.ANNOTATION: report.encode(ready.as_dict(), "rev", "apparate-agent-x")}}})
    kube_emulator.patch("nodes", "", "garbled", {"metadata": {"annotations": {report.ANNOTATION: "{not json"}}})
    cluster = register(kube_emulator)
    sync_nodes(cluster)
    nodes = {n.name: n for n in Node.objects.filter(cluster=cluster)}
    assert (nodes["good"].lazy_pull, nodes["good"].agent_ready) == (LazyPull.READY, True)
    assert nodes["good"].agent_report["pod"] == "apparate-agent-x"
    assert (nodes["garbled"].lazy_pull, nodes["garbled"].lazy_pull_reason) == (LazyPull.PULLS_IN_FULL,
                                                                               "agent not running yet")
    assert nodes["garbled"].agent_report == {}
    assert (nodes["plain"].lazy_pull, nodes["plain"].lazy_pull_reason) == (LazyPull.NOT_LABELLED, "")


@pytest.fixture
def fleet(kube_emulator, register):
    """One cluster: node-a ready, node-b without FUSE, node-c labelled with no agent yet, node-d unlabelled."""
    cluster = register(kube_emulator)
    states = {"node-a": (True, LazyPull.READY, ""), "node-b": (True, LazyPull.PULLS_IN_FULL, fuse_missing("/dev/fuse")),
              "node-c": (True, LazyPull.PULLS_IN_FULL, "agent not running yet"),
              "node-d": (False, LazyPull.NOT_LABELLED, "")}
    for name, (labelled, state, reason) in states.items():
        Node.objects.create(cluster=cluster, name=name, labelled=labelled, lazy_pull=state, lazy_pull_reason=reason,
                            agent_ready=state == LazyPull.READY, compatibility="compatible")
    return cluster


def row(html: str, node: str) -> str:
    start = html.index(f'data-node="{node}"')
    return html[start:html.index("</tr>", start)]


def test_the_node_list_says_which_labelled_nodes_lazy_pull_and_why_not(fleet, client_as):
    viewer = client_as(Role.VIEWER)
    html = viewer.get(reverse("clusters:nodes")).content.decode()
    assert "Ready to lazy-pull" in row(html, "node-a")
    assert "Pulls in full until the agent is ready" in row(html, "node-b")
    assert "/dev/fuse is missing: install fuse" in row(html, "node-b")
    assert "agent not running yet" in row(html, "node-c")
    assert "not labelled" in row(html, "node-d")
    assert "Ready to lazy-pull" not in row(html, "node-d") and "Pulls in full" not in row(html, "node-d")
    html = viewer.get(reverse("clusters:nodes"), {"labelled": "yes"}).content.decode()
    assert 'data-node="node-d"' not in html


def test_the_cluster_page_sums_readiness_and_explains_the_label(fleet, client_as):
    html = client_as(Role.OPERATOR).get(reverse("clusters:detail", args=[fleet.pk])).content.decode()
    assert "4 · 4 compatible · 3 labelled · 0 ready · 1 ready to lazy-pull" in html
    summary = html[html.index('id="lazy-pull-summary"'):]
    summary = summary[:summary.index("</div>")]
    assert "<strong>1 of 3</strong> labelled nodes ready to lazy-pull: <span class=\"mono\">node-a</span>" in summary
    assert "/dev/fuse is missing" in summary and "node-c</span>: agent not running yet" in summary
    assert f'data-confirm="{LabelForm.EFFECTS}"' in html.replace("&#x27;", "'")
    assert "it restarts containerd once (running containers keep running)" in html.replace("&#x27;", "'")
    assert "slower, not broken" in html


def test_the_cluster_page_names_the_nodes_an_uninstall_waits_for(fleet, client_as, instance):
    Suite.objects.create(cluster=fleet, instance=instance, operation=SuiteOperation.UNINSTALL,
                         status=SuiteStatus.CLEANING_NODES, cleanup_started_at=timezone.now(),
                         applied=[{"kind": "ConfigMap", "name": "apparate-agent-config", "namespace": "apparate-system",
                                   "apiVersion": "v1", "created": True}],
                         node_status=[{"node": "node-b", "ready": False,
                                       "reason": "the node is not Ready: its agent cleans up once the node is back"}])
    html = client_as(Role.VIEWER).get(reverse("clusters:suite-status", args=[fleet.pk]),
                                      HTTP_HX_REQUEST="true").content.decode()
    assert "Waiting for the nodes to clean up" in html and "1 node still to confirm" in html
    stragglers = html[html.index('id="stragglers"'):]
    assert "node-b" in stragglers and "the node is not Ready: its agent cleans up once the node is back" in stragglers


def test_the_deploy_preview_says_which_labelled_nodes_lazy_pull(fleet, client_as, instance, converted):
    converted(instance, "team/shop", "1.0")
    response = client_as(Role.OPERATOR).post(reverse("clusters:deploy"), {
        "cluster": fleet.pk, "instance": instance.pk, "namespace": "default", "name": "shop", "replicas": 1,
        "image": "registry.example.com/team/shop:1.0"})
    html = response.content.decode()
    assert "Deploys the accelerated image" in html
    summary = html[html.index('id="lazy-pull-summary"'):]
    assert "<strong>1 of 3</strong> labelled nodes ready to lazy-pull" in summary
    assert "pull accelerated images in full until their agent is ready (slower, not broken)" in summary
