"""Kubernetes objects as plain dicts (no I/O): the acceleration suite and deployed workloads.

The suite is: Namespace, ServiceAccount, ClusterRole + ClusterRoleBinding and Role + RoleBinding
(what the node agent may do, see `agent_rbac`), the registry pull Secret
(kubernetes.io/dockerconfigjson), the agent's ConfigMap (`agent.json`) and the node agent
DaemonSet, scheduled only on nodes carrying the acceleration label. The Helm chart in
clusters/chart/ renders the same objects from its values (tests check both agree), plus a
pre-delete hook that asks the agents to clean their nodes up before the objects go.
"""

import base64
import hashlib
import json
from dataclasses import dataclass

AGENT = "apparate-agent"
PULL_SECRET = "apparate-registry-credentials"  # noqa: S105 (the Secret's name, not a password)
CONFIG_MAP = "apparate-agent-config"
MANAGED_BY = {"app.kubernetes.io/managed-by": "apparate"}
AGENT_LABELS = {"app.kubernetes.io/name": AGENT, "app.kubernetes.io/part-of": "apparate"}
AGENT_SELECTOR = f"app.kubernetes.io/name={AGENT}"
REVISION_ANNOTATION = "apparate.io/config-hash"
CONFIG_DIR = "/etc/apparate/agent"
# Long enough for a cleanup on termination: a containerd restart (the agent waits up to 60 s for it
# to answer), the snapshotter's stop and the removal of lazily pulled images.
TERMINATION_GRACE_SECONDS = 180


@dataclass(frozen=True)
class SuiteParams:
    namespace: str
    registry_host: str
    username: str
    password: str
    insecure_registry: bool
    image: str
    version: str
    label_key: str
    label_value: str
    registry_ca: str = ""  # PEM bundle of a private CA (https registries only)


def _meta(name: str, namespace: str = "", labels: dict | None = None) -> dict:
    meta: dict = {"name": name, "labels": {**AGENT_LABELS, **MANAGED_BY, **(labels or {})}}
    if namespace:
        meta["namespace"] = namespace
    return meta


def go_json(value) -> str:
    """JSON as Go's encoding/json (and so Helm's toJson) writes it: compact, HTML-escaped."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def dockerconfigjson(server: str, username: str, password: str) -> str:
    """A docker config.json with the registry's credentials; no entry for an anonymous registry."""
    if not (username or password):
        return go_json({"auths": {}})
    auth = base64.b64encode(f"{username}:{password}".encode()).decode()
    return go_json({"auths": {server: {"username": username, "password": password, "auth": auth}}})


def agent_json(params: SuiteParams) -> str:
    """The agent's `agent.json` (see agent.inputs): the registry, plain HTTP when the instance URL is
    http://, and its private CA when one is set."""
    registry = {"url": f"{'http' if params.insecure_registry else 'https'}://{params.registry_host}"}
    if params.registry_ca and not params.insecure_registry:
        registry = {"ca": params.registry_ca, **registry}
    return go_json({"no_background_fetch": False, "registries": [registry]})


def image_ref(params: SuiteParams) -> str:
    return f"{params.image}:{params.version}"


def config_hash(params: SuiteParams) -> str:
    """The agent's revision: changes with its image, configuration or credentials. It rolls the pods,
    and each agent copies it into its reports, so the console tells current reports from old ones."""
    text = agent_json(params) + dockerconfigjson(params.registry_host, params.username, params.password) \
        + image_ref(params)
    return hashlib.sha256(text.encode()).hexdigest()


def namespace(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": dict(MANAGED_BY)}}


def pull_secret(namespace_name: str, server: str, username: str, password: str, name: str = PULL_SECRET) -> dict:
    encoded = base64.b64encode(dockerconfigjson(server, username, password).encode()).decode()
    return {
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
        "metadata": _meta(name, namespace_name), "data": {".dockerconfigjson": encoded},
    }


def workload_pull_secret_name(instance_id: int) -> str:
    """The pull Secret of deployed workloads, one per registry instance.

    Workloads from different instances (and the suite, which uses PULL_SECRET) can share a
    namespace without overwriting each other's credentials.
    """
    return f"{PULL_SECRET}-{instance_id}"


def agent_rbac(namespace_name: str) -> list[dict]:
    """What the agent may do, and no more.

    - nodes get: on termination it reads its own Node's labels, to tell a removed label (clean
      up) from a pod restart or an upgrade (leave the node lazy-pulling);
    - nodes patch: it writes its status annotation (apparate.io/agent-status) on its own Node.
      RBAC cannot narrow either to "the pod's own node" (resourceNames are fixed when the role is
      written); the agent only ever names its own node;
    - its ConfigMap, get (one name): it polls the `mode` key that asks for an uninstall.
      Its configuration and credentials come as a mounted volume, so it reads no Secret.
    """
    binding_subjects = [{"kind": "ServiceAccount", "name": AGENT, "namespace": namespace_name}]
    return [
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": _meta(AGENT),
         "rules": [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "patch"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": _meta(AGENT),
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": AGENT},
         "subjects": binding_subjects},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": _meta(AGENT, namespace_name),
         "rules": [{"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [CONFIG_MAP],
                    "verbs": ["get"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": _meta(AGENT, namespace_name),
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": AGENT},
         "subjects": binding_subjects},
    ]


def agent_config_map(params: SuiteParams) -> dict:
    """`agent.json` for the agents; the console adds `mode: uninstall` when it removes the suite."""
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(CONFIG_MAP, params.namespace),
            "data": {"agent.json": agent_json(params)}}


def suite_objects(params: SuiteParams) -> list[dict]:
    """Every object of the suite, in the order they are applied (uninstall reverses it)."""
    ns = params.namespace
    return [
        namespace(ns),
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(AGENT, ns)},
        *agent_rbac(ns),
        pull_secret(ns, params.registry_host, params.username, params.password),
        agent_config_map(params),
        daemonset(params),
    ]


def _field_env(name: str, path: str) -> dict:
    return {"name": name, "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": path}}}


def daemonset(params: SuiteParams) -> dict:
    """The node agent (`python -m agent run`, see agent/): privileged in the host's PID namespace with
    the host's `/` at /host, so it can install the snapshotter as a host service and restart containerd."""
    return {
        "apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": _meta(AGENT, params.namespace),
        "spec": {
            "selector": {"matchLabels": dict(AGENT_LABELS)},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
            "template": {
                "metadata": {
                    "labels": dict(AGENT_LABELS),
                    "annotations": {REVISION_ANNOTATION: config_hash(params)},
                },
                "spec": {
                    "serviceAccountName": AGENT,
                    "hostPID": True,
                    "nodeSelector": {params.label_key: params.label_value},
                    "tolerations": [{"operator": "Exists"}],
                    "imagePullSecrets": [{"name": PULL_SECRET}],
                    "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
                    "containers": [{
                        "name": "agent",
                        "image": image_ref(params),
                        "imagePullPolicy": "IfNotPresent",
                        "args": ["run"],
                        "env": [
                            {"name": "APPARATE_HOST_ROOT", "value": "/host"},
                            {"name": "APPARATE_AGENT_CONFIG_DIR", "value": CONFIG_DIR},
                            {"name": "APPARATE_AGENT_CONFIGMAP", "value": CONFIG_MAP},
                            {"name": "APPARATE_NODE_LABEL", "value": f"{params.label_key}={params.label_value}"},
                            _field_env("APPARATE_NODE_NAME", "spec.nodeName"),
                            _field_env("APPARATE_POD_NAME", "metadata.name"),
                            _field_env("APPARATE_NAMESPACE", "metadata.namespace"),
                            _field_env("APPARATE_AGENT_REVISION", f"metadata.annotations['{REVISION_ANNOTATION}']"),
                        ],
                        "securityContext": {"privileged": True},
                        "readinessProbe": {
                            "exec": {"command": ["python", "-m", "agent", "status"]},
                            "initialDelaySeconds": 5, "periodSeconds": 10, "timeoutSeconds": 10,
                        },
                        "resources": {"requests": {"cpu": "20m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
                        "volumeMounts": [
                            {"name": "host", "mountPath": "/host", "mountPropagation": "HostToContainer"},
                            {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
                        ],
                    }],
                    "volumes": [
                        {"name": "host", "hostPath": {"path": "/", "type": "Directory"}},
                        {"name": "config", "projected": {"sources": [
                            {"configMap": {"name": CONFIG_MAP, "items": [{"key": "agent.json", "path": "agent.json"}]}},
                            {"secret": {"name": PULL_SECRET,
                                        "items": [{"key": ".dockerconfigjson", "path": "dockerconfig.json"}]}},
                        ]}},
                    ],
                },
            },
        },
    }


UNINSTALLER = "apparate-agent-uninstall"
HOOK_DELETE_POLICY = "before-hook-creation,hook-succeeded"


def uninstall_hook_objects(params: SuiteParams, timeout_seconds: int) -> list[dict]:
    """The Helm chart's pre-delete hook (the console does the same itself): a Job running
    `python -m agent uninstall-suite`, which sets `mode: uninstall` in the agents' ConfigMap and waits
    until every node confirmed its cleanup, with its own account and the rights for exactly that."""
    ns = params.namespace
    labels = {"app.kubernetes.io/name": UNINSTALLER, "app.kubernetes.io/part-of": "apparate", **MANAGED_BY}

    def meta(namespaced: bool, weight: str) -> dict:
        return {"name": UNINSTALLER, **({"namespace": ns} if namespaced else {}), "labels": dict(labels),
                "annotations": {"helm.sh/hook": "pre-delete", "helm.sh/hook-weight": weight,
                                "helm.sh/hook-delete-policy": HOOK_DELETE_POLICY}}

    subjects = [{"kind": "ServiceAccount", "name": UNINSTALLER, "namespace": ns}]
    rbac = "rbac.authorization.k8s.io/v1"
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta(True, "-5")},
        {"apiVersion": rbac, "kind": "ClusterRole", "metadata": meta(False, "-5"),
         "rules": [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["list", "patch"]}]},
        {"apiVersion": rbac, "kind": "ClusterRoleBinding", "metadata": meta(False, "-5"),
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": UNINSTALLER},
         "subjects": subjects},
        {"apiVersion": rbac, "kind": "Role", "metadata": meta(True, "-5"),
         "rules": [{"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [CONFIG_MAP], "verbs": ["patch"]},
                   {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}]},
        {"apiVersion": rbac, "kind": "RoleBinding", "metadata": meta(True, "-5"),
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": UNINSTALLER},
         "subjects": subjects},
        {"apiVersion": "batch/v1", "kind": "Job", "metadata": meta(True, "0"), "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"labels": {k: v for k, v in labels.items() if k not in MANAGED_BY}},
                "spec": {
                    "serviceAccountName": UNINSTALLER, "restartPolicy": "Never",
                    "imagePullSecrets": [{"name": PULL_SECRET}],
                    "containers": [{
                        "name": "uninstall", "image": image_ref(params), "imagePullPolicy": "IfNotPresent",
                        "args": ["uninstall-suite", "--timeout", str(timeout_seconds)],
                        "env": [_field_env("APPARATE_NAMESPACE", "metadata.namespace")],
                        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "128Mi"}},
                    }],
                },
            },
        }},
    ]


def deployment(namespace_name: str, name: str, replicas: int, image: str, node_selector: dict | None,
               pull_secret_name: str | None) -> dict:
    """A Deployment of one container; nodeSelector pins it to labelled nodes when given."""
    labels = {"app.kubernetes.io/name": name, **MANAGED_BY}
    pod_spec: dict = {"containers": [{"name": name[:63], "image": image}]}
    if node_selector:
        pod_spec["nodeSelector"] = dict(node_selector)
    if pull_secret_name:
        pod_spec["imagePullSecrets"] = [{"name": pull_secret_name}]
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace_name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app.kubernetes.io/name": name}},
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        },
    }
