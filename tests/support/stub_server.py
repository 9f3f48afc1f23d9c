"""Scripted HTTP(S) servers on loopback that play a hostile or broken registry, for the registry
client's tests.

`StubServer(respond, address="127.0.0.1", tls=None)` listens on a free port of `address` (any
127.x.y.z loopback address, so a test can run "another host") and answers each request with
`respond(request)`, which returns `(status, headers, body)`. A `bytes` body is sent with its
Content-Length; any other iterable of bytes is sent piece by piece with no Content-Length and the
connection closed at the end, so the client cannot learn the size up front. Every request is
recorded (method, path, query, headers), so a test can assert what each host received, the
`Authorization` header included.

With `tls=(certfile, keyfile)` it serves HTTPS (see `faulty_proxy.self_signed_certificate`).

`StaticServer(routes)` is the simple case: canned `(status, headers, body)` per path, for a blob
whose bytes do not match its digest, a body cut short, a schema 1 manifest, or some other web
server entirely.

Fixtures: `stub_server(respond, **options)` and `static_server(routes)` start one and stop it
after the test.
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest


@dataclass(frozen=True)
class StubRequest:
    method: str
    target: str  # path and query string, as sent
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # names in lower case

    @property
    def authorization(self) -> str | None:
        return self.headers.get("authorization")


Answer = tuple[int, dict[str, str], bytes | Iterable[bytes]]


class StubServer:
    def __init__(self, respond: Callable[[StubRequest], Answer], address: str = "127.0.0.1",
                 tls: tuple[Path, Path] | None = None):
        self.respond = respond
        self.received: list[StubRequest] = []
        self._lock = threading.Lock()
        handler = type("Handler", (_Handler,), {"stub": self})
        self.server = ThreadingHTTPServer((address, 0), handler)
        self.server.daemon_threads = True
        if tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.host = f"{address}:{self.server.server_address[1]}"
        self.url = f"{'https' if tls else 'http'}://{self.host}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def authorizations(self) -> list[str]:
        """Every Authorization header this server received, in order."""
        with self._lock:
            return [r.authorization for r in self.received if r.authorization]

    def requests(self, method: str | None = None) -> list[StubRequest]:
        with self._lock:
            return [r for r in self.received if method is None or r.method == method]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _Handler(BaseHTTPRequestHandler):
    stub: StubServer
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as separate writes: no delayed-ACK stall

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        parts = urlsplit(self.path)
        request = StubRequest(self.command, self.path, parts.path, parse_qs(parts.query),
                              {name.lower(): value for name, value in self.headers.items()})
        with self.stub._lock:
            self.stub.received.append(request)
        status, headers, body = self.stub.respond(request)
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        streamed = not isinstance(body, bytes)
        if streamed:
            self.send_header("Connection", "close")
            self.close_connection = True
        elif "Content-Length" not in headers:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command == "HEAD":
            return
        try:
            for piece in ([body] if not streamed else body):
                self.wfile.write(piece)
        except (BrokenPipeError, ConnectionResetError):  # the client stopped reading: what bounds are for
            self.close_connection = True

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _handle


class StaticServer(StubServer):
    """Answers `routes[path] = (status, headers, body)` (a key with a query string matches that
    exact request first); unknown paths get 404. The connection closes after each answer, so a
    `Content-Length` header larger than the body makes a truncated response."""

    def __init__(self, routes: dict[str, Answer]):
        self.routes = routes
        super().__init__(self._answer)

    def _answer(self, request: StubRequest) -> Answer:
        status, headers, body = (self.routes.get(request.target) or self.routes.get(request.path)
                                 or (404, {}, b"404 page not found\n"))
        return status, {**headers, "Connection": "close"}, body


def _serve(kind: type[StubServer]):
    started: list[StubServer] = []

    def start(*args, **options) -> StubServer:
        server = kind(*args, **options)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def static_server():
    yield from _serve(StaticServer)


@pytest.fixture
def stub_server():
    yield from _serve(StubServer)
