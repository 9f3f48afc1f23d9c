"""The Kubernetes API as the agent's pod sees it: the in-cluster address and service-account token.

Standard library only (urllib), so the agent image needs no Kubernetes client. The address is
`https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT` (kubelet sets both in every pod); the
token and CA are read from the service-account directory (`APPARATE_SERVICEACCOUNT_DIR`, default
`/var/run/secrets/kubernetes.io/serviceaccount`). The token is read again for every request:
projected tokens are rotated by kubelet while the pod runs.

Calls answer decoded JSON, or raise `ApiError` with the HTTP status (0 when the server could not
be reached) and the server's message.
"""

from __future__ import annotations

import json
import os
import ssl
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

SERVICEACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
MAX_ANSWER_BYTES = 16 << 20  # a Node or a page of pods is far smaller


class ApiError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(f"{status or 'unreachable'}: {message}")
        self.status, self.message = status, message

    @property
    def not_found(self) -> bool:
        return self.status == 404


@dataclass(frozen=True)
class KubeApi:
    server: str
    serviceaccount_dir: Path
    timeout: float = 10.0

    def __post_init__(self):
        if not self.server.startswith(("https://", "http://")):
            raise ValueError(f"{self.server!r} is not an http(s) address")

    @classmethod
    def in_cluster(cls, environ: dict[str, str] | None = None) -> KubeApi | None:
        """The API server of the pod's cluster; None outside a pod (no KUBERNETES_SERVICE_HOST)."""
        environ = os.environ if environ is None else environ
        host = environ.get("KUBERNETES_SERVICE_HOST")
        if not host:
            return None
        host = f"[{host}]" if ":" in host else host
        port = environ.get("KUBERNETES_SERVICE_PORT", "443")
        directory = Path(environ.get("APPARATE_SERVICEACCOUNT_DIR", SERVICEACCOUNT_DIR))
        return cls(f"https://{host}:{port}", directory)

    def _context(self) -> ssl.SSLContext | None:
        if not self.server.startswith("https://"):
            return None
        return ssl.create_default_context(cafile=str(self.serviceaccount_dir / "ca.crt"))

    def request(self, method: str, path: str, body: dict | None = None, query: dict | None = None,
                content_type: str = "application/json") -> dict:
        url = self.server + path + (f"?{urllib.parse.urlencode(query)}" if query else "")
        try:
            token = (self.serviceaccount_dir / "token").read_text().strip()
        except OSError as error:
            raise ApiError(0, f"the service-account token cannot be read: {error}") from error
        data = json.dumps(body).encode() if body is not None else None
        # The address is http(s), checked in __post_init__.
        request = urllib.request.Request(url, data=data, method=method, headers={  # noqa: S310
            "Authorization": f"Bearer {token}", "Accept": "application/json", "Content-Type": content_type})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout, context=self._context()) as answer:  # noqa: S310
                raw = answer.read(MAX_ANSWER_BYTES + 1)
        except urllib.error.HTTPError as error:
            raise ApiError(error.code, _message(error.read(64 << 10)) or error.reason) from None
        except (urllib.error.URLError, OSError) as error:
            raise ApiError(0, f"{self.server} cannot be reached: {getattr(error, 'reason', error)}") from None
        if len(raw) > MAX_ANSWER_BYTES:
            raise ApiError(0, f"{method} {path}: the answer is larger than {MAX_ANSWER_BYTES} bytes")
        try:
            return json.loads(raw) if raw else {}
        except ValueError:
            raise ApiError(0, f"{method} {path}: the answer is not JSON") from None

    def get(self, path: str) -> dict:
        return self.request("GET", path)

    def merge_patch(self, path: str, patch: dict) -> dict:
        return self.request("PATCH", path, patch, content_type="application/merge-patch+json")

    def list(self, path: str, label_selector: str = "") -> list[dict]:
        """Every item of a collection, following `continue` pages."""
        items: list[dict] = []
        token = ""
        while True:
            query = {"limit": "500", **({"labelSelector": label_selector} if label_selector else {}),
                     **({"continue": token} if token else {})}
            answer = self.request("GET", path, query=query)
            items.extend(answer.get("items") or [])
            token = (answer.get("metadata") or {}).get("continue") or ""
            if not token:
                return items


def _message(body: bytes) -> str:
    try:
        return str(json.loads(body).get("message", ""))
    except (ValueError, AttributeError):
        return body.decode(errors="replace")[:200]
