"""Kubernetes objects as plain dicts (no I/O): the acceleration suite and deployed workloads.

The suite is: Namespace, ServiceAccount, ClusterRole + ClusterRoleBinding, the registry pull
Secret (kubernetes.io/dockerconfigjson), the snapshotter ConfigMap and the node agent DaemonSet,
scheduled only on nodes carrying the acceleration label. The Helm chart in clusters/chart/
renders the same objects from its values (tests check both agree).
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
STATE_DIR = "/var/lib/containerd-stargz-grpc"
SOCKET_DIR = "/run/containerd-stargz-grpc"


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
    auth = base64.b64encode(f"{username}:{password}".encode()).decode()
    return go_json({"auths": {server: {"username": username, "password": password, "auth": auth}}})


def snapshotter_config(registry_host: str, insecure: bool) -> str:
    """stargz-snapshotter's config.toml: CRI keychain plus a resolver entry for the registry."""
    return (
        "# Managed by apparate: lazy pulling of eStargz images.\n"
        "[cri_keychain]\n"
        "enable_keychain = true\n"
        'image_service_path = "/run/containerd/containerd.sock"\n'
        "\n"
        f'[[resolver.host."{registry_host}".mirrors]]\n'
        f'host = "{registry_host}"\n'
        f"insecure = {'true' if insecure else 'false'}\n"
    )


def config_hash(params: SuiteParams) -> str:
    """Changes whenever the agent's configuration or credentials change, to roll the pods."""
    text = snapshotter_config(params.registry_host, params.insecure_registry) + dockerconfigjson(
        params.registry_host, params.username, params.password
    )
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


def suite_objects(params: SuiteParams) -> list[dict]:
    """Every object of the suite, in the order they are applied (uninstall reverses it)."""
    ns = params.namespace
    return [
        namespace(ns),
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(AGENT, ns)},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": _meta(AGENT),
            # The CRI keychain needs nothing; these let the agent resolve pull secrets of pods it serves.
            "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list", "watch"]}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": _meta(AGENT),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": AGENT},
            "subjects": [{"kind": "ServiceAccount", "name": AGENT, "namespace": ns}],
        },
        pull_secret(ns, params.registry_host, params.username, params.password),
        {
            "apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(CONFIG_MAP, ns),
            "data": {"config.toml": snapshotter_config(params.registry_host, params.insecure_registry)},
        },
        daemonset(params),
    ]


def daemonset(params: SuiteParams) -> dict:
    def host_path(name: str, path: str, kind: str) -> dict:
        return {"name": name, "hostPath": {"path": path, "type": kind}}

    return {
        "apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": _meta(AGENT, params.namespace),
        "spec": {
            "selector": {"matchLabels": dict(AGENT_LABELS)},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
            "template": {
                "metadata": {
                    "labels": dict(AGENT_LABELS),
                    "annotations": {"apparate.io/config-hash": config_hash(params)},
                },
                "spec": {
                    "serviceAccountName": AGENT,
                    "nodeSelector": {params.label_key: params.label_value},
                    "tolerations": [{"operator": "Exists"}],
                    "containers": [{
                        "name": "agent",
                        "image": f"{params.image}:{params.version}",
                        "imagePullPolicy": "IfNotPresent",
                        "command": [
                            "containerd-stargz-grpc", "--log-level=info",
                            f"--address={SOCKET_DIR}/containerd-stargz-grpc.sock",
                            "--config=/etc/containerd-stargz-grpc/config.toml",
                        ],
                        "env": [{"name": "DOCKER_CONFIG", "value": "/etc/apparate/docker"}],
                        "securityContext": {"privileged": True},
                        "readinessProbe": {
                            "exec": {"command": ["test", "-S", f"{SOCKET_DIR}/containerd-stargz-grpc.sock"]},
                            "periodSeconds": 5,
                        },
                        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "1Gi"}},
                        "volumeMounts": [
                            {"name": "config", "mountPath": "/etc/containerd-stargz-grpc", "readOnly": True},
                            {"name": "registry-credentials", "mountPath": "/etc/apparate/docker", "readOnly": True},
                            {"name": "state", "mountPath": STATE_DIR, "mountPropagation": "Bidirectional"},
                            {"name": "socket", "mountPath": SOCKET_DIR},
                            {"name": "containerd", "mountPath": "/run/containerd"},
                            {"name": "fuse", "mountPath": "/dev/fuse"},
                        ],
                    }],
                    "volumes": [
                        {"name": "config", "configMap": {"name": CONFIG_MAP}},
                        {"name": "registry-credentials", "secret": {
                            "secretName": PULL_SECRET, "items": [{"key": ".dockerconfigjson", "path": "config.json"}],
                        }},
                        host_path("state", STATE_DIR, "DirectoryOrCreate"),
                        host_path("socket", SOCKET_DIR, "DirectoryOrCreate"),
                        host_path("containerd", "/run/containerd", "Directory"),
                        host_path("fuse", "/dev/fuse", "CharDevice"),
                    ],
                },
            },
        },
    }


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
