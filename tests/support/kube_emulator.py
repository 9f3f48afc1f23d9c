"""A small, faithful Kubernetes API server emulator for tests (pytest plugin).

A threaded HTTP/1.1 server speaking the JSON REST API the official client uses: /version;
nodes (list with labelSelector, limit/continue, get, JSON merge patch with resourceVersion
preconditions → 409); namespaces; pods; secrets; configmaps; serviceaccounts; roles,
clusterroles and their bindings; daemonsets and deployments (create, replace with optimistic
concurrency, delete, status kept by tiny controllers: a DaemonSet's pods per matching node, a
Deployment's pods scheduled onto fitting nodes or left Pending with kube-scheduler's condition
message); pods listed by label selector; SelfSubjectAccessReview. Bearer tokens
are checked. Faults can be injected: RBAC denials for chosen verbs/objects (403), an expired
token (401), transient answers (429/5xx) for the next N matching requests, raw answers of any
size or encoding (`answer_next`), nodes whose agent pod never gets ready, and `stop()` for an
unreachable server.

It refuses what kube-apiserver refuses, with the same status, reason, message and details:
- creating a namespaced object in a namespace that does not exist: 404 NotFound for the namespace;
- creating an object that exists: 409 AlreadyExists;
- replacing (PUT) with a stale `metadata.resourceVersion`: 409 Conflict;
- changing an immutable field, on replace or patch: 422 Invalid with a cause per field
  (a Deployment's or DaemonSet's `spec.selector`, a Secret's `type`, the data of a Secret or
  ConfigMap marked `immutable`, a (Cluster)RoleBinding's `roleRef`).
A PUT without `metadata.resourceVersion` is refused with 422 Invalid ("must be specified for an
update"). kube-apiserver gives that answer for kinds whose strategy forbids unconditional updates
(custom resources, for one); the built-in kinds emulated here would accept it and overwrite
whatever is stored. The emulator is stricter on purpose: a client that replaces without reading
what it replaces is caught here, and a client that passes here also works against a real server.

With `tls=True` it serves HTTPS from its own CA and also accepts client certificates signed by it
(`ca_pem`, `client_cert_pem`, `client_key_pem`), as kubeconfigs from kubeadm or kind use them.

Fixtures: `kube_emulator` (one running emulator) and `kube_emulator_factory(tls=...)` (as many as needed).
"""

import contextlib
import copy
import hashlib
import ipaddress
import json
import os
import re
import ssl
import tempfile
import threading
import uuid
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

GROUPS = {
    ("", "v1"): {"namespaces": ("Namespace", False), "nodes": ("Node", False), "pods": ("Pod", True),
                 "secrets": ("Secret", True), "configmaps": ("ConfigMap", True),
                 "serviceaccounts": ("ServiceAccount", True)},
    ("rbac.authorization.k8s.io", "v1"): {"roles": ("Role", True), "rolebindings": ("RoleBinding", True),
                                         "clusterroles": ("ClusterRole", False),
                                         "clusterrolebindings": ("ClusterRoleBinding", False)},
    ("apps", "v1"): {"daemonsets": ("DaemonSet", True), "deployments": ("Deployment", True)},
}
VERBS = {"GET": "get", "POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


KINDS = {plural: kind for kinds in GROUPS.values() for plural, (kind, _namespaced) in kinds.items()}
PLURAL_GROUPS = {plural: group for (group, _version), kinds in GROUPS.items() for plural in kinds}


class ApiError(Exception):
    """A failure answered as a Kubernetes Status (code, reason, message and optional details)."""

    def __init__(self, code: int, reason: str, message: str, details: dict | None = None):
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details


def qualified_resource(plural: str) -> str:
    """`deployments.apps`, `secrets`: how kube-apiserver names a resource in messages."""
    group = PLURAL_GROUPS.get(plural, "")
    return f"{plural}.{group}" if group else plural


def resource_details(plural: str, name: str) -> dict:
    details = {"name": name, "kind": plural}
    if PLURAL_GROUPS.get(plural):
        details["group"] = PLURAL_GROUPS[plural]
    return details


def not_found(plural: str, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{qualified_resource(plural)} "{name}" not found', resource_details(plural, name))


def conflict(plural: str, name: str) -> ApiError:
    return ApiError(409, "Conflict", f'Operation cannot be fulfilled on {qualified_resource(plural)} "{name}": the '
                    "object has been modified; please apply your changes to the latest version and try again",
                    resource_details(plural, name))


def invalid(group_kind: str, group: str, kind: str, name: str, causes: list[dict]) -> ApiError:
    """422 Invalid as errors.NewInvalid builds it: one cause per field, the message joining them."""
    joined = ", ".join(f"{c['field']}: {c['message']}" for c in causes)
    joined = f"[{joined}]" if len(causes) > 1 else joined
    details = {"name": name, "kind": kind, "causes": causes}
    if group:
        details["group"] = group
    return ApiError(422, "Invalid", f'{group_kind} "{name}" is invalid: {joined}', details)


def field_cause(field: str, message: str, reason: str = "FieldValueInvalid") -> dict:
    return {"reason": reason, "message": message, "field": field}


def go_value(value) -> str:
    """A value as it appears after "Invalid value:" (strings quoted, objects as JSON)."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def immutable_changes(plural: str, current: dict, new: dict) -> list[dict]:
    """The causes kube-apiserver's update validation gives for immutable fields this update changes."""
    causes = []
    if plural in {"deployments", "daemonsets"}:
        old_selector = (current.get("spec") or {}).get("selector")
        new_selector = (new.get("spec") or {}).get("selector")
        if new_selector != old_selector:
            causes.append(field_cause("spec.selector", f"Invalid value: {go_value(new_selector)}: field is immutable"))
    if plural == "secrets" and new.get("type", "Opaque") != current.get("type", "Opaque"):
        causes.append(field_cause("type", f"Invalid value: {go_value(new.get('type', 'Opaque'))}: field is immutable"))
    if plural in {"secrets", "configmaps"} and current.get("immutable"):
        for data in ("data", "binaryData") if plural == "configmaps" else ("data",):
            if new.get(data) != current.get(data):
                causes.append(field_cause(data, "Forbidden: field is immutable when `immutable` is set",
                                          "FieldValueForbidden"))
        if not new.get("immutable"):
            causes.append(field_cause("immutable", "Forbidden: field is immutable when `immutable` is set",
                                      "FieldValueForbidden"))
    if plural in {"rolebindings", "clusterrolebindings"} and new.get("roleRef") != current.get("roleRef"):
        causes.append(field_cause("roleRef", f"Invalid value: {go_value(new.get('roleRef'))}: cannot change roleRef"))
    return causes


def merge_patch(target, patch):
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def selector_matches(selector: str, labels: dict) -> bool:
    for term in filter(None, (t.strip() for t in re.split(r",(?![^()]*\))", selector or ""))):
        if m := re.fullmatch(r"(\S+)\s+(in|notin)\s+\((.*)\)", term):
            values = {v.strip() for v in m[3].split(",")}
            inside = labels.get(m[1]) in values
            if (m[2] == "in") != inside:
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = re.split(r"==?", term, maxsplit=1)
            if labels.get(key) != value:
                return False
        elif term not in labels:
            return False
    return True


def _certificate(common_name: str, issuer_key, issuer_cert, is_ca: bool = False):
    """(key, certificate): a CA when `is_ca`, else a leaf signed by the issuer (with a 127.0.0.1 SAN)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    issuer = issuer_cert.subject if issuer_cert is not None else subject
    start = datetime.now(UTC) - timedelta(minutes=5)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(start)
               .not_valid_after(start + timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True))
    if not is_ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
    return key, builder.sign(issuer_key or key, hashes.SHA256())


def _pem(item) -> str:
    if isinstance(item, x509.Certificate):
        return item.public_bytes(serialization.Encoding.PEM).decode()
    return item.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()).decode()


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class KubeEmulator:
    """State and behaviour of one emulated cluster."""

    def __init__(self, token: str = "emulator-token", git_version: str = "v1.28.4"):  # noqa: S107
        self.token = token
        self.git_version = git_version
        self.lock = threading.RLock()
        self.objects: dict[tuple[str, str, str], dict] = {}  # (plural, namespace, name) -> object
        self.revision = 1000
        self.token_expired = False
        self.denied: list[tuple[str, str, str | None, str | None]] = []  # verb, plural, name, namespace
        self.faults: list[dict] = []
        self.raw_answers: list[dict] = []
        self.broken_agent_nodes: set[str] = set()
        self.rollout_step: int | None = None  # agent pods made ready per status read; None: all at once
        self.unpullable_images: set[str] = set()  # Deployment pods with these images stay in ImagePullBackOff
        self.requests: list[tuple[str, str, str]] = []
        self.server: ThreadingHTTPServer | None = None
        self.tls = False
        self.create("namespaces", "", {"metadata": {"name": "default"}})
        self.create("namespaces", "", {"metadata": {"name": "kube-system"}})

    # --- lifecycle -------------------------------------------------------------------------
    def start(self, tls: bool = False) -> "KubeEmulator":
        """Serve on a free loopback port; with `tls`, HTTPS with its own CA, also accepting client certificates."""
        emulator = self

        class Handler(EmulatorHandler):
            state = emulator

        self.server = EmulatorServer(("127.0.0.1", 0), Handler)
        self.tls = tls
        if tls:
            self._enable_tls()
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def _enable_tls(self) -> None:
        ca_key, ca_cert = _certificate("emulator CA", None, None, is_ca=True)
        server_key, server_cert = _certificate("127.0.0.1", ca_key, ca_cert)
        client_key, client_cert = _certificate("console-admin", ca_key, ca_cert)
        self.ca_pem, self.client_cert_pem, self.client_key_pem = _pem(ca_cert), _pem(client_cert), _pem(client_key)
        files = {"ca.crt": self.ca_pem, "server.crt": _pem(server_cert), "server.key": _pem(server_key)}
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        # The ssl module loads certificates from files only; they are removed once loaded.
        with tempfile.TemporaryDirectory(prefix="kube-emulator-") as directory:
            paths = {name: os.path.join(directory, name) for name in files}
            for name, text in files.items():
                with open(paths[name], "w") as handle:
                    handle.write(text)
            context.load_cert_chain(paths["server.crt"], paths["server.key"])
            context.load_verify_locations(paths["ca.crt"])
        context.verify_mode = ssl.CERT_OPTIONAL  # a client certificate signed by the CA authenticates
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    @property
    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.server.server_address[1]}"

    # --- test helpers ----------------------------------------------------------------------
    def add_node(self, name: str, kubelet: str = "v1.28.4", runtime: str = "containerd://1.7.2",
                 os_image: str = "Ubuntu 22.04.3 LTS", kernel: str = "5.15.0-91-generic",
                 arch: str = "amd64", labels: dict | None = None, ready: bool = True) -> dict:
        node = {
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                                                  "kubernetes.io/arch": arch, **(labels or {})}},
            "spec": {},
            "status": {
                "conditions": [{"type": "Ready", "status": "True" if ready else "False",
                                "reason": "KubeletReady" if ready else "KubeletNotReady"}],
                "nodeInfo": {"kubeletVersion": kubelet, "containerRuntimeVersion": runtime, "osImage": os_image,
                             "kernelVersion": kernel, "architecture": arch, "operatingSystem": "linux"},
            },
        }
        return self.create("nodes", "", node)

    def node(self, name: str) -> dict:
        with self.lock:
            return copy.deepcopy(self.objects[("nodes", "", name)])

    def touch_node(self, name: str) -> None:
        """Someone else changed the node: its resourceVersion moves on."""
        with self.lock:
            node = self.objects[("nodes", "", name)]
            node["metadata"]["annotations"] = {**node["metadata"].get("annotations", {}), "touched": str(self.revision)}
            self._bump(node)

    def get_object(self, plural: str, name: str, namespace: str = "") -> dict | None:
        with self.lock:
            found = self.objects.get((plural, namespace, name))
            return copy.deepcopy(found) if found else None

    def names(self, plural: str, namespace: str | None = None) -> list[str]:
        with self.lock:
            return sorted(n for (p, ns, n) in self.objects if p == plural and (namespace is None or ns == namespace))

    def deny(self, verb: str, plural: str, name: str | None = None, namespace: str | None = None) -> None:
        """RBAC: refuse `verb` on `plural` (optionally one object) with 403."""
        self.denied.append((verb, plural, name, namespace))

    def fail_next(self, method: str, path_pattern: str, status: int, times: int = 1) -> None:
        """Answer the next `times` requests matching method and path regex with `status`."""
        self.faults.append({"method": method, "pattern": re.compile(path_pattern), "status": status, "left": times})

    def answer_next(self, method: str, path_pattern: str, body: bytes, status: int = 200,
                    headers: dict | None = None, times: int = 1) -> None:
        """Answer the next `times` matching requests with these raw bytes and headers (a hostile server)."""
        self.raw_answers.append({"method": method, "pattern": re.compile(path_pattern), "status": status,
                                 "body": body, "headers": headers or {}, "left": times})

    def count(self, method: str, path_pattern: str) -> int:
        pattern = re.compile(path_pattern)
        return sum(1 for m, p, _ in self.requests if m == method and pattern.search(p))

    # --- storage ---------------------------------------------------------------------------
    def _bump(self, obj: dict) -> None:
        self.revision += 1
        obj["metadata"]["resourceVersion"] = str(self.revision)

    def create(self, plural: str, namespace: str, body: dict) -> dict:
        with self.lock:
            meta = body.setdefault("metadata", {})
            name = meta.get("name")
            if not name:
                raise ApiError(422, "Invalid", f"{plural}: metadata.name: Required value")
            if meta.get("namespace", namespace) != namespace:
                raise ApiError(400, "BadRequest",
                               "the namespace of the object does not match the namespace on the request")
            if namespace and ("namespaces", "", namespace) not in self.objects:
                raise not_found("namespaces", namespace)
            key = (plural, namespace, name)
            if key in self.objects:
                raise ApiError(409, "AlreadyExists", f'{qualified_resource(plural)} "{name}" already exists',
                               resource_details(plural, name))
            obj = copy.deepcopy(body)
            obj["metadata"].update(uid=str(uuid.uuid4()), creationTimestamp=now(), generation=1)
            if namespace:
                obj["metadata"]["namespace"] = namespace
            if plural != "nodes":  # status is written by controllers, not by clients
                obj.pop("status", None)
            if plural == "namespaces":
                obj["status"] = {"phase": "Active"}
            self._bump(obj)
            self.objects[key] = obj
            return copy.deepcopy(obj)

    def replace(self, plural: str, namespace: str, name: str, body: dict) -> dict:
        with self.lock:
            key = (plural, namespace, name)
            current = self.objects.get(key)
            if current is None:
                raise not_found(plural, name)
            wanted = (body.get("metadata") or {}).get("resourceVersion")
            if not wanted:
                # kube-apiserver's store: qualifiedKind is the group and the *resource*, and the
                # unset resourceVersion is the integer 0, printed as %#v.
                group = PLURAL_GROUPS.get(plural, "")
                raise invalid(qualified_resource(plural), group, plural, name, [field_cause(
                    "metadata.resourceVersion", "Invalid value: 0x0: must be specified for an update")])
            if wanted != current["metadata"]["resourceVersion"]:
                raise conflict(plural, name)
            self._check_immutable(plural, name, current, body)
            obj = copy.deepcopy(body)
            for kept in ("uid", "creationTimestamp", "generation"):
                obj["metadata"][kept] = current["metadata"][kept]
            if namespace:
                obj["metadata"]["namespace"] = namespace
            if "status" in current:
                obj["status"] = current["status"]
            if obj.get("spec") != current.get("spec"):
                obj["metadata"]["generation"] = current["metadata"]["generation"] + 1
            self._bump(obj)
            self.objects[key] = obj
            return copy.deepcopy(obj)

    def patch(self, plural: str, namespace: str, name: str, patch: dict) -> dict:
        with self.lock:
            key = (plural, namespace, name)
            current = self.objects.get(key)
            if current is None:
                raise not_found(plural, name)
            wanted = (patch.get("metadata") or {}).get("resourceVersion")
            if wanted and wanted != current["metadata"]["resourceVersion"]:
                raise conflict(plural, name)
            obj = merge_patch(current, patch)
            self._check_immutable(plural, name, current, obj)
            for kept in ("uid", "creationTimestamp", "name", "namespace"):
                if kept in current["metadata"]:
                    obj["metadata"][kept] = current["metadata"][kept]
            if obj != current:
                self._bump(obj)
            self.objects[key] = obj
            return copy.deepcopy(obj)

    @staticmethod
    def _check_immutable(plural: str, name: str, current: dict, new: dict) -> None:
        causes = immutable_changes(plural, current, new)
        if causes:
            group = PLURAL_GROUPS.get(plural, "")
            kind = KINDS[plural]
            raise invalid(f"{kind}.{group}" if group else kind, group, kind, name, causes)

    def delete(self, plural: str, namespace: str, name: str) -> dict:
        with self.lock:
            obj = self.objects.pop((plural, namespace, name), None)
            if obj is None:
                raise not_found(plural, name)
            if plural == "namespaces":
                for key in [k for k in self.objects if k[1] == name]:
                    del self.objects[key]
            if plural in {"daemonsets", "deployments"}:
                for key, pod in list(self.objects.items()):
                    owners = pod["metadata"].get("ownerReferences", [])
                    owned = any(o["uid"] == obj["metadata"]["uid"] for o in owners)
                    if key[0] == "pods" and key[1] == namespace and owned:
                        del self.objects[key]
            return {"kind": "Status", "apiVersion": "v1", "status": "Success", "details": {"name": name}}

    def list_objects(self, plural: str, namespace: str, selector: str, limit: int, offset: int) -> dict:
        with self.lock:
            self.reconcile()
            items = [copy.deepcopy(o) for (p, ns, _), o in sorted(self.objects.items())
                     if p == plural and (not namespace or ns == namespace)
                     and selector_matches(selector, o["metadata"].get("labels") or {})]
            page = items[offset:offset + limit] if limit else items[offset:]
            more = bool(limit) and offset + limit < len(items)
            return {"kind": "List", "apiVersion": "v1",
                    "metadata": {"resourceVersion": str(self.revision),
                                 "continue": str(offset + limit) if more else ""},
                    "items": page}

    # --- controllers -----------------------------------------------------------------------
    def reconcile(self) -> None:
        """DaemonSets get one pod per matching node (made ready `rollout_step` at a time)."""
        with self.lock:
            nodes = [o for (p, _, _), o in self.objects.items() if p == "nodes"]
            for (plural, namespace, name), ds in list(self.objects.items()):
                if plural == "daemonsets":
                    self._reconcile_daemonset(namespace, name, ds, nodes)
                elif plural == "deployments":
                    self._reconcile_deployment(namespace, name, ds, nodes)

    def _reconcile_deployment(self, namespace: str, name: str, deployment: dict, nodes: list[dict]) -> None:
        """Pods for a Deployment, scheduled as kube-scheduler would: onto a Ready node that carries every
        label of the nodeSelector (the least busy), else left Pending with the scheduler's condition.
        The ReplicaSet in between is not emulated: pods carry its name and `pod-template-hash` label,
        and name the Deployment's uid as owner so that deleting the Deployment removes them. A pod of
        an older template is replaced at once (no surge)."""
        template = deployment["spec"]["template"]
        replicas = deployment["spec"].get("replicas", 1)
        template_hash = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:10]
        owner = deployment["metadata"]["uid"]
        current = []
        for key, pod in sorted(self.objects.items()):
            if key[0] != "pods" or key[1] != namespace or not any(
                    ref["uid"] == owner for ref in pod["metadata"].get("ownerReferences", [])):
                continue
            if pod["metadata"]["labels"].get("pod-template-hash") != template_hash or len(current) >= replicas:
                del self.objects[key]
            else:
                current.append(pod)
        while len(current) < replicas:
            pod_name = f"{name}-{template_hash}-{uuid.uuid4().hex[:5]}"
            pod = {"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": pod_name, "namespace": namespace, "uid": str(uuid.uuid4()),
                                "creationTimestamp": now(),
                                "labels": {**template["metadata"].get("labels", {}),
                                           "pod-template-hash": template_hash},
                                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                                     "name": f"{name}-{template_hash}", "uid": owner,
                                                     "controller": True}]},
                   "spec": copy.deepcopy(template["spec"]),
                   "status": {"phase": "Pending"}}
            self._bump(pod)
            self.objects[("pods", namespace, pod_name)] = pod
            current.append(pod)
        for pod in current:
            if not pod["spec"].get("nodeName"):
                self._schedule(pod, nodes)
        ready = sum(1 for pod in current if pod["status"]["phase"] == "Running")
        deployment["status"] = {"observedGeneration": deployment["metadata"]["generation"], "replicas": len(current),
                                "updatedReplicas": len(current), "readyReplicas": ready, "availableReplicas": ready,
                                "unavailableReplicas": len(current) - ready}

    def _schedule(self, pod: dict, nodes: list[dict]) -> None:
        selector = pod["spec"].get("nodeSelector") or {}
        reasons: dict[str, int] = {}
        fitting = []
        for node in nodes:
            labels = node["metadata"].get("labels", {})
            ready = any(c["type"] == "Ready" and c["status"] == "True" for c in node["status"].get("conditions", []))
            if not all(labels.get(k) == v for k, v in selector.items()):
                reason = "node(s) didn't match Pod's node affinity/selector"
            elif not ready:
                reason = "node(s) had untolerated taint {node.kubernetes.io/not-ready: }"
            else:
                fitting.append(node["metadata"]["name"])
                continue
            reasons[reason] = reasons.get(reason, 0) + 1
        before = copy.deepcopy(pod["status"])
        if not fitting:
            total = len(nodes)
            message = "no nodes available to schedule pods" if not nodes else (
                f"0/{total} nodes are available: "
                + ", ".join(sorted(f"{count} {reason}" for reason, count in reasons.items()))
                + f". preemption: 0/{total} nodes are available: {total} Preemption is not helpful for scheduling..")
            pod["status"] = {"phase": "Pending", "conditions": [
                {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message}]}
        else:
            load = {name: 0 for name in fitting}
            for (plural, _, _), other in self.objects.items():
                if plural == "pods" and other["spec"].get("nodeName") in load:
                    load[other["spec"]["nodeName"]] += 1
            pod["spec"]["nodeName"] = min(fitting, key=lambda name: (load[name], name))
            containers = pod["spec"].get("containers", [])
            failing = [c for c in containers if c.get("image") in self.unpullable_images]
            if failing:
                image = failing[0]["image"]
                pod["status"] = {"phase": "Pending", "conditions": [
                    {"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "False",
                                                                 "reason": "ContainersNotReady"}],
                    "containerStatuses": [{"name": c["name"], "image": c["image"], "ready": False, "state": {
                        "waiting": {"reason": "ImagePullBackOff",
                                    "message": f'Back-off pulling image "{image}"'}}} for c in failing]}
            else:
                pod["status"] = {"phase": "Running", "conditions": [
                    {"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "True"}],
                    "containerStatuses": [{"name": c["name"], "image": c["image"], "ready": True,
                                           "state": {"running": {}}} for c in containers]}
        if pod["status"] != before:
            self._bump(pod)

    def _reconcile_daemonset(self, namespace: str, name: str, ds: dict, nodes: list[dict]) -> None:
        template = ds["spec"]["template"]
        selector = template["spec"].get("nodeSelector") or {}
        generation = ds["metadata"]["generation"]
        wanted = sorted(n["metadata"]["name"] for n in nodes
                        if all(n["metadata"].get("labels", {}).get(k) == v for k, v in selector.items()))
        pods = {o["spec"]["nodeName"]: (key, o) for key, o in self.objects.items()
                if key[0] == "pods" and key[1] == namespace
                and any(ref["uid"] == ds["metadata"]["uid"] for ref in o["metadata"].get("ownerReferences", []))}
        for node_name, (key, pod) in list(pods.items()):
            if node_name not in wanted or pod["metadata"]["annotations"]["generation"] != str(generation):
                del self.objects[key]
                del pods[node_name]
        budget = self.rollout_step
        for node_name in wanted:
            if node_name not in pods:
                pod_name = f"{name}-{uuid.uuid4().hex[:5]}"
                pod = {"apiVersion": "v1", "kind": "Pod",
                       "metadata": {"name": pod_name, "namespace": namespace, "uid": str(uuid.uuid4()),
                                    "labels": dict(template["metadata"].get("labels", {})),
                                    "annotations": {"generation": str(generation)},
                                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": name,
                                                         "uid": ds["metadata"]["uid"], "controller": True}]},
                       "spec": {"nodeName": node_name, **{k: v for k, v in template["spec"].items()
                                                          if k != "nodeSelector"}},
                       "status": {"phase": "Pending", "conditions": [{"type": "Ready", "status": "False"}]}}
                self._bump(pod)
                self.objects[("pods", namespace, pod_name)] = pod
                pods[node_name] = (("pods", namespace, pod_name), pod)
        for node_name in wanted:
            pod = pods[node_name][1]
            if pod["status"]["phase"] == "Running":
                continue
            if node_name in self.broken_agent_nodes:
                pod["status"] = {"phase": "Pending", "conditions": [{"type": "Ready", "status": "False"}],
                                 "containerStatuses": [{"name": "agent", "ready": False, "state": {
                                     "waiting": {"reason": "CrashLoopBackOff", "message": "fuse: device not found"}}}]}
                continue
            if budget is not None:
                if budget <= 0:
                    continue
                budget -= 1
            pod["status"] = {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}],
                             "containerStatuses": [{"name": "agent", "ready": True, "state": {"running": {}}}]}
        ready = sum(1 for n in wanted if pods[n][1]["status"]["phase"] == "Running")
        ds["status"] = {"observedGeneration": generation, "desiredNumberScheduled": len(wanted),
                        "currentNumberScheduled": len(wanted), "updatedNumberScheduled": len(wanted),
                        "numberReady": ready, "numberAvailable": ready,
                        "numberUnavailable": len(wanted) - ready, "numberMisscheduled": 0}

    # --- authorization ---------------------------------------------------------------------
    def is_denied(self, verb: str, plural: str, name: str | None, namespace: str | None) -> bool:
        return any(v == verb and p == plural and (n is None or n == name) and (ns is None or ns == namespace)
                   for v, p, n, ns in self.denied)


class EmulatorServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # many concurrent clients connect at once (the default backlog is 5)


class EmulatorHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: KubeEmulator

    def log_message(self, *args):  # keep test output quiet
        pass

    def _send(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _send_raw(self, code: int, data: bytes, headers: dict) -> None:
        self.send_response(code)
        headers = {"Content-Type": "application/json", "Content-Length": str(len(data)), **headers}
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # a bounded client stops reading
            self.wfile.write(data)

    def _status(self, error: ApiError) -> None:
        body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": error.message, "reason": error.reason, "code": error.code}
        if error.details:
            body["details"] = error.details
        self._send(error.code, body)

    def do_GET(self):
        self._handle("GET")

    def do_POST(self):
        self._handle("POST")

    def do_PUT(self):
        self._handle("PUT")

    def do_PATCH(self):
        self._handle("PATCH")

    def do_DELETE(self):
        self._handle("DELETE")

    def _handle(self, method: str) -> None:
        state = self.state
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        parts = urlsplit(self.path)
        content_type = (self.headers.get("Content-Type") or "").split(";")[0]
        with state.lock:
            state.requests.append((method, parts.path, content_type))
        try:
            self._dispatch(method, parts.path, parse_qs(parts.query), raw, content_type)
        except ApiError as error:
            self._status(error)

    def _dispatch(self, method, path, query, raw, content_type):
        state = self.state
        has_certificate = state.tls and bool(self.connection.getpeercert())
        if state.token_expired or not (has_certificate or self.headers.get("Authorization") == f"Bearer {state.token}"):
            raise ApiError(401, "Unauthorized", "Unauthorized")
        with state.lock:
            canned = next((a for a in state.raw_answers
                           if a["left"] > 0 and a["method"] == method and a["pattern"].search(path)), None)
            if canned is not None:
                canned["left"] -= 1
        if canned is not None:
            return self._send_raw(canned["status"], canned["body"], canned["headers"])
        with state.lock:
            for fault in state.faults:
                if fault["left"] > 0 and fault["method"] == method and fault["pattern"].search(path):
                    fault["left"] -= 1
                    reason = {429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable"}
                    raise ApiError(fault["status"], reason.get(fault["status"], "Error"), "injected fault")
        if path == "/version":
            major, minor = state.git_version.lstrip("v").split(".")[:2]
            return self._send(200, {"major": major, "minor": minor, "gitVersion": state.git_version,
                                    "platform": "linux/amd64"})
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            raise ApiError(400, "BadRequest", "the request body is not valid JSON") from None
        if path == "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews" and method == "POST":
            attributes = body["spec"]["resourceAttributes"]
            allowed = not state.is_denied(attributes["verb"], attributes["resource"], attributes.get("name"),
                                          attributes.get("namespace"))
            return self._send(201, {**body, "status": {"allowed": allowed}})
        segments = [s for s in path.split("/") if s]
        if segments[:1] == ["api"] and len(segments) >= 2:
            group, version, rest = "", segments[1], segments[2:]
        elif segments[:1] == ["apis"] and len(segments) >= 3:
            group, version, rest = segments[1], segments[2], segments[3:]
        else:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        kinds = GROUPS.get((group, version))
        if kinds is None or not rest:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        namespace = ""
        if rest[0] == "namespaces" and len(rest) >= 3:
            namespace, rest = rest[1], rest[2:]
        plural, name = rest[0], (rest[1] if len(rest) > 1 else None)
        if plural not in kinds or len(rest) > 2:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        kind, namespaced = kinds[plural]
        if namespace and not namespaced:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        verb = VERBS[method] if name or method == "POST" else "list"
        target = name or (body or {}).get("metadata", {}).get("name") if method == "POST" else name
        if state.is_denied(verb, plural, target, namespace or None):
            scope = f'in the namespace "{namespace}"' if namespace else "at the cluster scope"
            raise ApiError(403, "Forbidden", f'{plural} "{target or ""}" is forbidden: User '
                           f'"system:serviceaccount:apparate:console" cannot {verb} resource "{plural}" in API group '
                           f'"{group}" {scope}')
        api_version = f"{group}/{version}" if group else version
        if method == "GET" and name is None:
            limit = int(query.get("limit", ["0"])[0] or 0)
            offset = int(query.get("continue", ["0"])[0] or 0)
            answer = state.list_objects(plural, namespace, query.get("labelSelector", [""])[0], limit, offset)
            answer["kind"], answer["apiVersion"] = f"{kind}List", api_version
            for item in answer["items"]:
                item.setdefault("kind", kind)
                item.setdefault("apiVersion", api_version)
            return self._send(200, answer)
        if method == "GET":
            with state.lock:
                state.reconcile()
                obj = state.objects.get((plural, namespace, name))
                if obj is None:
                    raise not_found(plural, name)
                return self._send(200, {"kind": kind, "apiVersion": api_version, **copy.deepcopy(obj)})
        if method == "DELETE":
            return self._send(200, state.delete(plural, namespace, name))
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "the request body must be an object")
        if method == "POST":
            self._check_kind(body, kind, api_version)
            return self._send(201, state.create(plural, namespace, body))
        if method == "PUT":
            self._check_kind(body, kind, api_version)
            if body.get("metadata", {}).get("name") != name:
                raise ApiError(400, "BadRequest", "the name of the object does not match the name on the URL")
            return self._send(200, state.replace(plural, namespace, name, body))
        if content_type not in {"application/merge-patch+json", "application/strategic-merge-patch+json"}:
            raise ApiError(415, "UnsupportedMediaType",
                           f"the body of the request was in an unknown format: {content_type}")
        return self._send(200, state.patch(plural, namespace, name, body))

    @staticmethod
    def _check_kind(body: dict, kind: str, api_version: str) -> None:
        if body.get("kind") != kind or body.get("apiVersion") != api_version:
            raise ApiError(400, "BadRequest", f"expected {api_version} {kind}, got {body.get('apiVersion')} "
                           f"{body.get('kind')}")


@pytest.fixture
def kube_emulator_factory():
    started: list[KubeEmulator] = []

    def start(tls: bool = False, **kwargs) -> KubeEmulator:
        emulator = KubeEmulator(**kwargs).start(tls=tls)
        started.append(emulator)
        return emulator

    yield start
    for emulator in started:
        emulator.stop()


@pytest.fixture
def kube_emulator(kube_emulator_factory) -> KubeEmulator:
    return kube_emulator_factory()
