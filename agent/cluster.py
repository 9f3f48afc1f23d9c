"""The agent's link to its cluster: reports its status on its Node, and learns whether to clean up.

`ClusterLink.from_env()` is built from what the DaemonSet sets (the downward API and the pod's
service account, see agent.kubeapi):

- `APPARATE_NODE_NAME` (spec.nodeName), `APPARATE_POD_NAME`, `APPARATE_NAMESPACE` (the pod's);
- `APPARATE_AGENT_REVISION`: the pod template's `apparate.io/config-hash`, copied into each report
  so the console can tell this agent's reports from a previous one's;
- `APPARATE_NODE_LABEL`: `key=value`, the label that places the agent on a node;
- `APPARATE_AGENT_CONFIGMAP` (default `apparate-agent-config`): its `mode` key says `uninstall`
  when the suite is being removed;
- `APPARATE_REPORT_INTERVAL` (seconds, default 300): an unchanged status is reported again this
  often, so the console can tell a silent agent from a quiet one.

It makes exactly three kinds of call, which the suite's RBAC allows and no more: get and patch
its own Node (the status annotation; the label on termination), and get its ConfigMap.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field

from . import report
from .kubeapi import ApiError, KubeApi
from .status import Status, now

log = logging.getLogger("agent")
CONFIG_MAP = "apparate-agent-config"


@dataclass
class ClusterLink:
    api: KubeApi
    node_name: str
    namespace: str
    label: tuple[str, str]
    pod: str = ""
    revision: str = ""
    config_map: str = CONFIG_MAP
    report_interval: float = 300.0
    _uninstall: bool = field(default=False, init=False)
    _reported: tuple[str, float] | None = field(default=None, init=False)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> ClusterLink | None:
        """None outside a cluster (no API server address or no node name): the agent then runs alone."""
        environ = os.environ if environ is None else environ
        api = KubeApi.in_cluster(environ)
        node_name = environ.get("APPARATE_NODE_NAME", "")
        if api is None or not node_name:
            return None
        key, _, value = environ.get("APPARATE_NODE_LABEL", "cloud.tencent.com/apparate=true").partition("=")
        return cls(api, node_name, environ.get("APPARATE_NAMESPACE", "apparate-system"), (key, value),
                   pod=environ.get("APPARATE_POD_NAME", ""), revision=environ.get("APPARATE_AGENT_REVISION", ""),
                   config_map=environ.get("APPARATE_AGENT_CONFIGMAP", CONFIG_MAP),
                   report_interval=float(environ.get("APPARATE_REPORT_INTERVAL", "300")))

    @property
    def _node_path(self) -> str:
        return f"/api/v1/nodes/{self.node_name}"

    @property
    def _config_map_path(self) -> str:
        return f"/api/v1/namespaces/{self.namespace}/configmaps/{self.config_map}"

    def _mode(self) -> str:
        return str((self.api.get(self._config_map_path).get("data") or {}).get(report.MODE_KEY, ""))

    def uninstall_requested(self) -> bool:
        """Whether the ConfigMap asks for an uninstall; when it cannot be read, the last answer."""
        try:
            self._uninstall = self._mode() == report.UNINSTALL
        except ApiError as error:
            log.warning("the suite's ConfigMap cannot be read (%s); keeping the last known mode", error)
        return self._uninstall

    def report(self, status: Status) -> None:
        """Patch the status annotation of the Node: when it changed, or every `report_interval` seconds."""
        content = report.encode({**status.as_dict(), "checked_at": ""}, self.revision, self.pod)
        if self._reported and self._reported[0] == content and \
                time.monotonic() - self._reported[1] < self.report_interval:
            return
        value = report.encode({**status.as_dict(), "checked_at": status.checked_at or now()}, self.revision, self.pod)
        try:
            self.api.merge_patch(self._node_path, {"metadata": {"annotations": {report.ANNOTATION: value}}})
        except ApiError as error:
            log.warning("the status could not be reported on node %s: %s", self.node_name, error)
            return
        self._reported = (content, time.monotonic())

    def should_clean_up(self) -> bool:
        """Asked on termination. True when the node leaves the suite: the uninstall was requested, the
        suite's ConfigMap is gone, or the node lost the label. False for a pod restart or an upgrade, and
        when the API cannot say (a node left lazy-pulling is not broken; a wrong cleanup would be)."""
        try:
            if self._mode() == report.UNINSTALL:
                log.info("termination: the suite is being uninstalled; cleaning the node up")
                return True
        except ApiError as error:
            if not error.not_found:
                log.warning("termination: the suite's ConfigMap cannot be read (%s); the node is left as it is",
                            error)
                return False
            log.info("termination: the suite's ConfigMap is gone; cleaning the node up")
            return True
        try:
            labels = (self.api.get(self._node_path).get("metadata") or {}).get("labels") or {}
        except ApiError as error:
            log.warning("termination: node %s cannot be read (%s); the node is left as it is", self.node_name, error)
            return False
        key, value = self.label
        if labels.get(key) != value:
            log.info("termination: node %s no longer carries %s=%s; cleaning the node up", self.node_name, key, value)
            return True
        log.info("termination: pod restart or upgrade; the snapshotter keeps running")
        return False


AGENT_SELECTOR = "app.kubernetes.io/name=apparate-agent"


def uninstall_suite(api: KubeApi, namespace: str, timeout: float, interval: float = 5.0,
                    config_map: str = CONFIG_MAP, say=log.info) -> dict[str, str]:
    """Ask every agent of the suite to clean its node up (`mode: uninstall` in the ConfigMap) and wait
    until each node confirmed (then their reports are taken off the Nodes); the nodes still awaited
    when `timeout` seconds have passed, with why.

    What the Helm chart's pre-delete hook runs (`python -m agent uninstall-suite`); the console does
    the same through its own Kubernetes client."""
    try:
        api.merge_patch(f"/api/v1/namespaces/{namespace}/configmaps/{config_map}",
                        {"data": {report.MODE_KEY: report.UNINSTALL}})
    except ApiError as error:
        if not error.not_found:
            raise
        say(f"the ConfigMap {namespace}/{config_map} is gone: agents clean up when they are stopped")
        return {}
    deadline = time.monotonic() + timeout
    while True:
        nodes = api.list("/api/v1/nodes")
        waiting = report.awaiting_cleanup(nodes, api.list(f"/api/v1/namespaces/{namespace}/pods", AGENT_SELECTOR))
        if not waiting:
            forget_reports(api, nodes)
            return waiting
        if time.monotonic() >= deadline:
            return waiting
        say(f"waiting for {len(waiting)} nodes to clean up: " + "; ".join(f"{n}: {why}" for n, why in
                                                                          sorted(waiting.items())[:10]))
        time.sleep(interval)


def forget_reports(api: KubeApi, nodes: list[dict]) -> None:
    """Take the agents' `removed` reports off the Nodes once every node confirmed: they are as they were."""
    for node in nodes:
        found = report.read_report(node)
        if found is not None and found["code"] == report.REMOVED:
            try:
                api.merge_patch(f"/api/v1/nodes/{node['metadata']['name']}",
                                {"metadata": {"annotations": {report.ANNOTATION: None}}})
            except ApiError as error:
                if not error.not_found:
                    raise
