"""A streaming HTTP proxy in front of a registry that counts the bytes it serves per blob.

Lazy pulling is measured here: containerd and the snapshotter pull through the proxy, and
`blob_bytes()` tells how many bytes of each blob went out (Range requests included). Responses
are streamed, not buffered, so `rate` (bytes per second, optional) can throttle the link like a
slow network. The Host header is kept, so the registry's Location headers point back at the proxy.

Unlike tests/support/faulty_proxy.py (whole bodies, faults injected per path), this one exists to
count and pace bytes.
"""

from __future__ import annotations

import http.client
import re
import threading
import time
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest

from tests.support.faulty_proxy import HOP_HEADERS

_BLOB = re.compile(r"/v2/.+/blobs/(sha256:[0-9a-f]{64})$")
_CHUNK = 64 * 1024


class CountingProxy:
    def __init__(self, upstream_url: str, host: str = "127.0.0.1", rate: float | None = None):
        upstream = urlsplit(upstream_url)
        self.upstream = (upstream.hostname, upstream.port or 80)
        self.rate = rate
        self._lock = threading.Lock()
        self._blob_bytes: dict[str, int] = defaultdict(int)
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Range header)
        handler = type("Handler", (_Handler,), {"proxy": self})
        self.server = ThreadingHTTPServer((host, 0), handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def blob_bytes(self) -> dict[str, int]:
        """Bytes of response bodies served so far, per blob digest."""
        with self._lock:
            return dict(self._blob_bytes)

    def reset(self) -> None:
        with self._lock:
            self._blob_bytes.clear()
            self.requests.clear()

    def _count(self, digest: str, amount: int) -> None:
        with self._lock:
            self._blob_bytes[digest] += amount

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _Handler(BaseHTTPRequestHandler):
    proxy: CountingProxy
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def _handle(self) -> None:
        proxy = self.proxy
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        path = urlsplit(self.path).path
        with proxy._lock:
            proxy.requests.append((self.command, path, self.headers.get("Range")))
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_HEADERS}
        upstream = http.client.HTTPConnection(*proxy.upstream, timeout=60)
        try:
            upstream.request(self.command, self.path, body=body or None, headers=headers)
            response = upstream.getresponse()
            self.send_response(response.status)
            for name, value in response.getheaders():
                if name.lower() not in HOP_HEADERS:
                    self.send_header(name, value)
            if response.getheader("Content-Length") is None and self.command != "HEAD":
                self.send_header("Connection", "close")  # the end of the body is the end of the connection
                self.close_connection = True
            self.end_headers()
            if self.command == "HEAD":
                return
            blob = _BLOB.search(path)
            started, sent = time.monotonic(), 0
            while chunk := response.read(_CHUNK):
                self.wfile.write(chunk)
                sent += len(chunk)
                if blob:
                    proxy._count(blob.group(1), len(chunk))
                if proxy.rate:
                    ahead = sent / proxy.rate - (time.monotonic() - started)
                    if ahead > 0:
                        time.sleep(ahead)
        finally:
            upstream.close()

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _handle


@pytest.fixture
def counting_proxy():
    started: list[CountingProxy] = []

    def start(upstream_url: str, **options) -> CountingProxy:
        proxy = CountingProxy(upstream_url, **options)
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        proxy.stop()
