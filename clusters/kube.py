"""The one module that talks to Kubernetes, through the official `kubernetes` client.

`KubeSession(connection)` opens an ApiClient for a cluster's server and credentials (CA and
client certificate go to private temporary files, as the client's own kubeconfig loader does,
and are removed when the session closes). Objects go in and come out as plain dicts. Every
failure is raised as `KubeError` with a `kind` a person can act on: unreachable, tls,
unauthorized, forbidden, not_found, conflict, transient (429/5xx), invalid, error.

Nothing an API server sends is trusted for size: every answer is streamed and cut off at a limit
in decoded bytes (a gzip bomb stops as early as a plain flood), error bodies are read only as far
as their message needs, listings stop after a number of pages, objects and bytes, and redirects
are not followed (the credentials stay with the cluster's server).
"""

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, fields
from urllib.parse import urlencode

import urllib3
from django.conf import settings
from kubernetes import client

# kind -> (API prefix, plural, namespaced)
RESOURCES = {
    "Namespace": ("/api/v1", "namespaces", False),
    "Node": ("/api/v1", "nodes", False),
    "Pod": ("/api/v1", "pods", True),
    "Secret": ("/api/v1", "secrets", True),
    "ConfigMap": ("/api/v1", "configmaps", True),
    "ServiceAccount": ("/api/v1", "serviceaccounts", True),
    "ClusterRole": ("/apis/rbac.authorization.k8s.io/v1", "clusterroles", False),
    "ClusterRoleBinding": ("/apis/rbac.authorization.k8s.io/v1", "clusterrolebindings", False),
    "Role": ("/apis/rbac.authorization.k8s.io/v1", "roles", True),
    "RoleBinding": ("/apis/rbac.authorization.k8s.io/v1", "rolebindings", True),
    "DaemonSet": ("/apis/apps/v1", "daemonsets", True),
    "Deployment": ("/apis/apps/v1", "deployments", True),
}
FIELD_MANAGER = "apparate"

MIB = 1024 * 1024
MAX_RESPONSE_BYTES = 16 * MIB  # one answer, decoded (a page of 500 real nodes is about 8 MiB)
MAX_ERROR_BYTES = 64 * 1024  # an error's Status: only its message is used
MAX_MESSAGE_CHARS = 500  # of a Kubernetes message repeated in ours
MAX_LIST_BYTES = 64 * MIB  # every page of one listing together
MAX_LIST_PAGES = 100
MAX_LIST_ITEMS = 20000  # Kubernetes supports 5000 nodes per cluster
READ_CHUNK = 64 * 1024


class KubeError(Exception):
    """A Kubernetes call that failed, with a kind and a message a person can act on."""

    def __init__(self, message: str, kind: str = "error", status: int | None = None):
        super().__init__(message)
        self.message = message
        self.kind = kind
        self.status = status

    @property
    def retryable(self) -> bool:
        return self.kind in {"conflict", "transient", "unreachable"}


@dataclass(frozen=True)
class Connection:
    """Where a cluster's API server is and how to authenticate to it."""

    server: str
    ca_data: str = ""
    insecure_skip_tls_verify: bool = False
    tls_server_name: str = ""
    token: str = ""
    client_certificate: str = ""
    client_key: str = ""

    @classmethod
    def of(cls, cluster) -> "Connection":
        return cls(**{name: getattr(cluster, name) for name in CONNECTION_FIELDS})

    def apply_to(self, cluster) -> None:
        """Copy these settings onto a Cluster (whose fields have the same names)."""
        for name in CONNECTION_FIELDS:
            setattr(cluster, name, getattr(self, name))


CONNECTION_FIELDS = tuple(f.name for f in fields(Connection))


def ref(obj: dict) -> str:
    """'Kind namespace/name' (or 'Kind name') of a manifest, for messages."""
    meta = obj.get("metadata", {})
    where = f"{meta['namespace']}/" if meta.get("namespace") else ""
    return f"{obj.get('kind')} {where}{meta.get('name')}"


class KubeSession:
    """An open connection to one cluster; use as a context manager. Thread-safe for calls."""

    def __init__(self, connection: Connection, timeout: float | None = None, pool_size: int = 4):
        self.connection = connection
        self.timeout = timeout if timeout is not None else settings.APPARATE_KUBE_TIMEOUT
        self._dir = tempfile.mkdtemp(prefix="apparate-kube-")
        configuration = client.Configuration(host=connection.server.rstrip("/"))
        configuration.verify_ssl = not connection.insecure_skip_tls_verify
        configuration.retries = False  # our callers decide what to retry
        configuration.connection_pool_maxsize = max(pool_size, 1)
        configuration.proxy = None
        if connection.tls_server_name:
            configuration.tls_server_name = connection.tls_server_name
        if connection.ca_data:
            configuration.ssl_ca_cert = self._private_file("ca.crt", connection.ca_data)
        if connection.client_certificate:
            configuration.cert_file = self._private_file("client.crt", connection.client_certificate)
            configuration.key_file = self._private_file("client.key", connection.client_key)
        if connection.token:
            configuration.api_key = {"authorization": connection.token}
            configuration.api_key_prefix = {"authorization": "Bearer"}
        self.api = client.ApiClient(configuration)
        # The client's own call path reads whole bodies (an error body in full, before any check), so
        # requests go through its configured urllib3 pool (TLS, CA, client certificate, server name)
        # with preload_content=False, and every body is read here in bounded chunks.
        self._pool = self.api.rest_client.pool_manager

    def _private_file(self, name: str, content: str) -> str:
        path = os.path.join(self._dir, name)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(content)
        return path

    def close(self) -> None:
        self.api.close()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> "KubeSession":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # --- transport -------------------------------------------------------------------------
    def request(self, method: str, path: str, body=None, query: list | None = None,
                content_type: str = "application/json") -> dict:
        """One API call; the decoded JSON answer, or KubeError."""
        return self._call(method, path, body, query, content_type)[0]

    def _call(self, method: str, path: str, body=None, query: list | None = None,
              content_type: str = "application/json") -> tuple[dict, int]:
        """One API call: (decoded JSON answer, its size in decoded bytes)."""
        headers = {"Accept": "application/json", "Accept-Encoding": "gzip", "Content-Type": content_type}
        self.api.update_params_for_auth(headers, [], ["BearerToken"])
        url = self.api.configuration.host + path + (f"?{urlencode(query)}" if query else "")
        data = json.dumps(body).encode() if body is not None else None
        try:
            response = self._pool.request(method, url, body=data, headers=headers, preload_content=False,
                                          redirect=False, retries=False, timeout=urllib3.Timeout(total=self.timeout))
        except urllib3.exceptions.SSLError as error:
            raise KubeError(self._tls_message(_reason(error)), "tls") from None
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise KubeError(f"Cannot reach {self.connection.server}: {_reason(error)}.", "unreachable") from None
        complete = False
        try:
            if 300 <= response.status < 400:
                raise KubeError(f"{self.connection.server} answered {method} {path} with a redirect "
                                f"({response.status}), which the console does not follow.", "error", response.status)
            if not 200 <= response.status < 300:
                message, complete = self._error_message(response)
                raise _api_error(response.status, message, method, path)
            raw = self._read(response, MAX_RESPONSE_BYTES, f"in answer to {method} {path}")
            complete = True
        finally:
            if not complete:  # unread bytes would be taken for the next answer on this connection
                response.close()
            response.release_conn()
        try:
            answer = json.loads(raw)
        except (ValueError, RecursionError):
            answer = None
        if not isinstance(answer, dict):
            raise self._not_kubernetes()
        return answer, len(raw)

    def _read(self, response, limit: int, what: str) -> bytes:
        """The whole body, decoded, or KubeError once it passes `limit` bytes or the call's timeout."""
        chunks, size = [], 0
        deadline = time.monotonic() + self.timeout
        try:
            while chunk := response.read(READ_CHUNK, decode_content=True):
                size += len(chunk)
                if size > limit:
                    raise KubeError(f"{self.connection.server} sent more than {_size(limit)} {what}; "
                                    "the console reads no more than that.", "error")
                if time.monotonic() > deadline:
                    raise KubeError(f"{self.connection.server} took more than {self.timeout:g} s to send its "
                                    f"answer {what}.", "unreachable")
                chunks.append(chunk)
        except urllib3.exceptions.DecodeError:
            raise self._not_kubernetes() from None
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise KubeError(f"Cannot reach {self.connection.server}: {_reason(error)}.", "unreachable") from None
        return b"".join(chunks)

    def _error_message(self, response) -> tuple[str, bool]:
        """(the shortened `message` of an error's Status, whether the body was read to its end).

        A body too large to read gives a note instead of its message.
        """
        try:
            raw = self._read(response, MAX_ERROR_BYTES, "")
        except KubeError as error:
            too_large = error.kind == "error" and "sent more than" in error.message
            return (f"its error body was larger than {_size(MAX_ERROR_BYTES)}" if too_large else ""), False
        try:
            message = json.loads(raw).get("message", "")
        except (ValueError, RecursionError, AttributeError):
            message = ""
        message = str(message or response.reason or "")
        return (message if len(message) <= MAX_MESSAGE_CHARS else message[:MAX_MESSAGE_CHARS] + "…"), True

    def _not_kubernetes(self) -> "KubeError":
        return KubeError(f"{self.connection.server} did not answer like a Kubernetes API server.", "error")

    def _tls_message(self, detail: str) -> str:
        return (f"TLS verification of {self.connection.server} failed ({detail.strip()[:200]}). "
                "Check the CA certificate (or the server name it was issued for).")

    # --- verbs -----------------------------------------------------------------------------
    def version(self) -> dict:
        return self.request("GET", "/version")

    def list(self, kind: str, namespace: str = "", label_selector: str = "", page_size: int = 500) -> list[dict]:
        """Every object of a kind (following `continue` pages, within the listing limits)."""
        items: list[dict] = []
        token, size = "", 0
        for _page in range(MAX_LIST_PAGES):
            query = [("limit", page_size)]
            if label_selector:
                query.append(("labelSelector", label_selector))
            if token:
                query.append(("continue", token))
            answer, page_bytes = self._call("GET", _collection(kind, namespace), query=query)
            page = answer.get("items") or []
            if not isinstance(page, list):
                raise self._not_kubernetes()
            items.extend(page)
            size += page_bytes
            if len(items) > MAX_LIST_ITEMS:
                raise KubeError(f"{self.connection.server} listed more than {MAX_LIST_ITEMS} {kind} objects; "
                                "the console stops there.", "error")
            if size > MAX_LIST_BYTES:
                raise KubeError(f"{self.connection.server} sent more than {_size(MAX_LIST_BYTES)} listing {kind}; "
                                "the console stops there.", "error")
            token = (answer.get("metadata") or {}).get("continue") or ""
            if not token:
                return items
        raise KubeError(f"{self.connection.server} listed more than {MAX_LIST_PAGES} pages of {kind}; "
                        "the console stops there.", "error")

    def get(self, kind: str, name: str, namespace: str = "") -> dict:
        return self.request("GET", f"{_collection(kind, namespace)}/{name}")

    def get_or_none(self, kind: str, name: str, namespace: str = "") -> dict | None:
        try:
            return self.get(kind, name, namespace)
        except KubeError as error:
            if error.kind == "not_found":
                return None
            raise

    def merge_patch(self, kind: str, name: str, patch: dict, namespace: str = "") -> dict:
        return self.request(
            "PATCH", f"{_collection(kind, namespace)}/{name}", body=patch,
            query=[("fieldManager", FIELD_MANAGER)], content_type="application/merge-patch+json",
        )

    def patch_node_labels(self, name: str, labels: dict, resource_version: str = "") -> dict:
        """Merge-patch a node's labels (None removes one); with a resourceVersion, 409 if stale."""
        metadata: dict = {"labels": labels}
        if resource_version:
            metadata["resourceVersion"] = resource_version
        return self.merge_patch("Node", name, {"metadata": metadata})

    def create(self, obj: dict) -> dict:
        """Create an object; KubeError `conflict` (409 AlreadyExists) if one of that name exists."""
        namespace = obj["metadata"].get("namespace", "")
        return self.request("POST", _collection(obj["kind"], namespace), body=obj,
                            query=[("fieldManager", FIELD_MANAGER)])

    def replace(self, obj: dict, resource_version: str) -> dict:
        """Replace the object last read at `resource_version`; KubeError `conflict` if it changed since."""
        meta = obj["metadata"]
        body = {**obj, "metadata": {**meta, "resourceVersion": resource_version}}
        return self.request("PUT", f"{_collection(obj['kind'], meta.get('namespace', ''))}/{meta['name']}",
                            body=body, query=[("fieldManager", FIELD_MANAGER)])

    def apply(self, obj: dict) -> tuple[dict, bool]:
        """Create or replace an object; (stored object, True if it was created)."""
        meta = obj["metadata"]
        existing = self.get_or_none(obj["kind"], meta["name"], meta.get("namespace", ""))
        if existing is None:
            try:
                return self.create(obj), True
            except KubeError as error:
                if error.kind != "conflict":  # 409 AlreadyExists: created meanwhile, replace it
                    raise
                existing = self.get(obj["kind"], meta["name"], meta.get("namespace", ""))
        return self.replace(obj, existing["metadata"]["resourceVersion"]), False

    def delete(self, kind: str, name: str, namespace: str = "") -> bool:
        """Delete an object (background propagation); False if it was already gone."""
        try:
            self.request("DELETE", f"{_collection(kind, namespace)}/{name}",
                         body={"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"})
        except KubeError as error:
            if error.kind == "not_found":
                return False
            raise
        return True

    def can_i(self, verb: str, kind: str, namespace: str = "") -> bool:
        """SelfSubjectAccessReview: may these credentials `verb` objects of `kind`?"""
        prefix, plural, namespaced = RESOURCES[kind]
        group = "" if prefix == "/api/v1" else prefix.split("/")[2]
        attributes = {"verb": verb, "group": group, "resource": plural}
        if namespaced and namespace:
            attributes["namespace"] = namespace
        review = {
            "apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": attributes},
        }
        answer = self.request("POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", body=review)
        return bool((answer.get("status") or {}).get("allowed"))


def _collection(kind: str, namespace: str = "") -> str:
    prefix, plural, namespaced = RESOURCES[kind]
    if namespaced and namespace:
        return f"{prefix}/namespaces/{namespace}/{plural}"
    return f"{prefix}/{plural}"


def _reason(error: BaseException) -> str:
    inner = getattr(error, "reason", None) or error
    text = str(inner)
    if "Connection refused" in text or "Errno 111" in text:
        return "connection refused"
    if "timed out" in text.lower():
        return "timed out"
    if "Name or service not known" in text or "nodename nor servname" in text:
        return "host name not found"
    return text.split(": ", 1)[-1][:200]


def _size(limit: int) -> str:
    return f"{limit // MIB} MiB" if limit >= MIB else f"{limit // 1024} KiB"


def _api_error(status: int, message: str, method: str, path: str) -> KubeError:
    if status == 401:
        return KubeError("The cluster refused the credentials (401 Unauthorized): the token or certificate "
                         "has expired or been revoked. Update the cluster's credentials.", "unauthorized", status)
    if status == 403:
        return KubeError(f"Forbidden by Kubernetes RBAC: {message}", "forbidden", status)
    if status == 404:
        return KubeError(f"Not found: {message or path}", "not_found", status)
    if status == 409:
        return KubeError(f"Conflict: {message}", "conflict", status)
    if status == 429 or status >= 500:
        return KubeError(f"The API server answered {status} ({message or 'try again later'}).", "transient", status)
    if status in {400, 422}:
        return KubeError(f"The API server rejected the object: {message}", "invalid", status)
    return KubeError(f"{method} {path} failed with {status}: {message}", "error", status)


def session_for(cluster, pool_size: int = 4) -> "KubeSession":
    """A session on a registered cluster (a clusters.models.Cluster) with its stored credentials."""
    return KubeSession(Connection.of(cluster), pool_size=pool_size)
