"""What the agent tells the cluster about its node, and how the cluster reads it (no I/O).

The agent writes its status into an annotation of its own Node, `apparate.io/agent-status`, as
compact JSON:

    {"ready": false, "code": "fuse_missing", "reason": "/dev/fuse is missing: ...",
     "containerd_version": "1.6.20", "checked_at": "2025-01-01T00:00:00Z",
     "revision": "<the pod template's apparate.io/config-hash>", "pod": "apparate-agent-x7k2p",
     "notes": []}

`revision` tells a report of the current agent (image and configuration) from one left by the
previous; `code` is an agent.status.Code. The console (node sync, suite rollout and uninstall) and
the Helm chart's pre-delete hook read it with `read_report`, and `awaiting_cleanup` says which
nodes have yet to confirm an uninstall. Pure: the console imports this module.

The ConfigMap's `mode` key asks the agents to uninstall: `mode: uninstall`.
"""

from __future__ import annotations

import json

ANNOTATION = "apparate.io/agent-status"
MODE_KEY = "mode"
UNINSTALL = "uninstall"
REMOVED = "removed"
READY = "ready"
# Annotations of one object share 256 KiB; a report stays far below, whatever the reasons say.
MAX_TEXT = 1000
MAX_NOTES = 5


def encode(status: dict, revision: str, pod: str) -> str:
    """The annotation's value for a status (agent.status.Status.as_dict())."""
    return json.dumps({
        "ready": bool(status.get("ready")), "code": str(status.get("code", "")),
        "reason": str(status.get("reason", ""))[:MAX_TEXT],
        "containerd_version": str(status.get("containerd_version", ""))[:64],
        "checked_at": str(status.get("checked_at", "")), "revision": revision, "pod": pod,
        "notes": [str(note)[:MAX_TEXT] for note in (status.get("notes") or [])[:MAX_NOTES]],
    }, separators=(",", ":"), sort_keys=True)


def read_report(node: dict) -> dict | None:
    """The agent's last report on a Node object; None when there is none or it cannot be read."""
    text = ((node.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION)
    if not isinstance(text, str):
        return None
    try:
        report = json.loads(text)
    except ValueError:
        return None
    if not isinstance(report, dict) or not isinstance(report.get("code"), str):
        return None
    notes = report.get("notes")
    return {"ready": report.get("ready") is True, "code": report["code"][:64],
            "reason": str(report.get("reason", ""))[:MAX_TEXT],
            "containerd_version": str(report.get("containerd_version", ""))[:64],
            "checked_at": str(report.get("checked_at", ""))[:32], "revision": str(report.get("revision", ""))[:128],
            "pod": str(report.get("pod", ""))[:253],
            "notes": [str(n)[:MAX_TEXT] for n in notes[:MAX_NOTES]] if isinstance(notes, list) else []}


def node_ready(node: dict) -> bool:
    conditions = (node.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _pod_running(pod: dict) -> bool:
    return (pod.get("status") or {}).get("phase") == "Running"


def awaiting_cleanup(nodes: list[dict], agent_pods: list[dict]) -> dict[str, str]:
    """Nodes that have not confirmed the uninstall yet, with why, by node name.

    A node is done when its agent reported `removed`, or when no agent ever reported there and
    none runs there now (nothing was set up). Otherwise it is waited for, with the reason shown.
    """
    pods = {(pod.get("spec") or {}).get("nodeName"): pod for pod in agent_pods}
    waiting = {}
    for node in nodes:
        name = (node.get("metadata") or {}).get("name", "")
        report, pod = read_report(node), pods.get(name)
        if report is not None and report["code"] == REMOVED:
            continue
        if report is None:
            if pod is not None and _pod_running(pod):
                waiting[name] = "the agent is running but has not reported yet"
            continue
        last = f"last report: {report['code']}" + (f" ({report['checked_at']})" if report["checked_at"] else "")
        if not node_ready(node):
            waiting[name] = f"the node is not Ready: its agent cleans up once the node is back ({last})"
        elif pod is None:
            waiting[name] = f"no agent runs on this node, and it did not confirm its cleanup ({last})"
        elif not _pod_running(pod):
            phase = (pod.get("status") or {}).get("phase", "Pending")
            waiting[name] = f"the agent pod is {phase} ({last})"
        else:  # still installed, or its cleanup failed (the reason then says why)
            why = f": {report['reason']}" if report["code"] != READY and report["reason"] else ""
            waiting[name] = f"the agent has not cleaned up yet ({last}{why})"
    return waiting
