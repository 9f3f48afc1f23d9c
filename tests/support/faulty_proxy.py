"""A tiny threaded HTTP proxy in front of a real registry, for failure and auth tests.

`FaultyProxy(upstream_url)` forwards every request to the upstream (keeping the Host header, so the
registry's `Location` headers point back at the proxy) and records `(method, path, status)` for
each one. Faults are injected per path pattern:

    proxy.fail(r"/manifests/", status=500, times=2)          # 500 twice, then forward
    proxy.fail(r"/blobs/", status=429, times=1, headers={"Retry-After": "1"})
    proxy.fail(r"/v2/$", reset=True, times=1)                # drop the connection without answering
    proxy.stall_bodies_over(512 * 1024, times=1)             # send part of the next big body, then hang
    proxy.delay(0.03, r"/manifests/", method="HEAD")         # every such request waits 30 ms first

`peak_in_flight("HEAD")` tells how many requests (of a method, or of any) it was answering at once at
most: what a client's concurrency looks like from the registry's side.

With `bearer=(user, password)` the proxy also plays a token-auth registry front: requests without a
valid token get `401` with a `Bearer realm=".../token",service=...,scope=...` challenge, and
`GET /token` issues tokens (Basic credentials required when a user is configured) valid for the
requested scopes only, the way Docker's token specification describes it.

With `tls=(certfile, keyfile)` it serves HTTPS (`self_signed_certificate()` makes a CA and a
certificate for 127.0.0.1), for custom-CA and verification tests.

For what a real registry will not do at all (wrong bytes, schema 1, compression bombs, foreign
redirects), see `stub_server.py`.

Fixture: `faulty_proxy(upstream, **options)` starts one and stops it after the test.
"""

from __future__ import annotations

import base64
import datetime
import http.client
import ipaddress
import json
import re
import secrets
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-authorization"}


@dataclass
class Fault:
    pattern: re.Pattern
    method: str | None
    status: int
    remaining: int
    headers: dict[str, str]
    reset: bool


@dataclass
class Delay:
    pattern: re.Pattern
    method: str | None
    seconds: float


@dataclass
class Seen:
    method: str
    path: str
    status: int | None  # None when the connection was dropped
    query: str = ""
    authorization: str | None = None


@dataclass
class TokenGrant:
    scopes: set[str]
    expires: float


@dataclass
class ProxyState:
    faults: list[Fault] = field(default_factory=list)
    delays: list[Delay] = field(default_factory=list)
    in_flight: dict[str | None, int] = field(default_factory=dict)  # per method, and None: any
    peaks: dict[str | None, int] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    token_requests: list[dict] = field(default_factory=list)
    tokens: dict[str, TokenGrant] = field(default_factory=dict)
    stall_after: int | None = None  # bodies longer than this stop after this many bytes ...
    stalls_left: int = 0  # ... this many times, until `released` is set
    released: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _required_scopes(method: str, path: str, query: dict) -> set[str] | None:
    """The token scopes a request needs; None for the base endpoint (any valid token)."""
    if path in ("/v2/", "/v2"):
        return None
    if path.startswith("/v2/_catalog"):
        return {"registry:catalog:*"}
    match = re.match(r"/v2/(.+?)/(manifests|blobs|tags)/", path)
    if not match:
        return None
    action = "pull" if method in ("GET", "HEAD") else "push"
    needed = {f"repository:{match.group(1)}:{action}"}
    if method == "POST" and "from" in query:
        needed.add(f"repository:{query['from'][0]}:pull")
    return needed


def _granted(scope_params: list[str]) -> set[str]:
    granted = set()
    for scope in scope_params:
        for item in scope.split(" "):
            kind, _, rest = item.partition(":")
            name, _, actions = rest.rpartition(":")
            for action in actions.split(","):
                granted.add(f"{kind}:{name}:{action}")
    return granted


class FaultyProxy:
    def __init__(self, upstream_url: str, bearer: tuple[str, str] | None = None, token_lifetime: int = 300,
                 tls: tuple[Path, Path] | None = None):
        upstream = urlsplit(upstream_url)
        self.upstream_host, self.upstream_port = upstream.hostname, upstream.port or 80
        self.state = ProxyState()
        self.bearer = bearer
        self.token_lifetime = token_lifetime
        handler = type("Handler", (_Handler,), {"proxy": self})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        if tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        self.url = f"{'https' if tls else 'http'}://{self.host}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def fail(self, pattern: str, status: int = 500, times: int = 1, method: str | None = None,
             headers: dict[str, str] | None = None, reset: bool = False) -> None:
        """Answer `status` (or drop the connection) for the next `times` requests matching `pattern`."""
        with self.state.lock:
            self.state.faults.append(Fault(re.compile(pattern), method, status, times, headers or {}, reset))

    def delay(self, seconds: float, pattern: str = "", method: str | None = None) -> None:
        """Hold every request matching `pattern` (and method, if given) for `seconds` before answering it."""
        with self.state.lock:
            self.state.delays.append(Delay(re.compile(pattern), method, seconds))

    def peak_in_flight(self, method: str | None = None) -> int:
        """The most requests (of `method`, or of any method) in the proxy at the same time so far, each
        counted from its arrival until its answer starts."""
        with self.state.lock:
            return self.state.peaks.get(method, 0)

    def stall_bodies_over(self, size: int, times: int = 1) -> None:
        """The next `times` response bodies longer than `size` bytes stop after `size` bytes and hang
        (a registry that stalls mid-blob) until the proxy stops."""
        with self.state.lock:
            self.state.stall_after, self.state.stalls_left = size, times

    def requests(self, pattern: str = "", method: str | None = None) -> list[Seen]:
        """Requests seen so far whose path matches `pattern` (and method, if given)."""
        with self.state.lock:
            return [s for s in self.state.seen
                    if re.search(pattern, s.path) and (method is None or s.method == method)]

    def stop(self) -> None:
        self.state.released.set()
        self.server.shutdown()
        self.server.server_close()


class _Handler(BaseHTTPRequestHandler):
    proxy: FaultyProxy
    protocol_version = "HTTP/1.1"
    _in_flight = False  # this connection's current request counts in peak_in_flight
    # Headers and body leave in separate writes: without TCP_NODELAY the body waits for the client's
    # delayed ACK of the headers (40 ms on Linux), which would add that much to every GET.
    disable_nagle_algorithm = True

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return body
                body += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _record(self, status: int | None) -> None:
        parts = urlsplit(self.path)
        with self.proxy.state.lock:
            self.proxy.state.seen.append(
                Seen(self.command, parts.path, status, parts.query, self.headers.get("Authorization")))

    def _answer(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _handle(self) -> None:
        state = self.proxy.state
        with state.lock:
            for key in (None, self.command):
                state.in_flight[key] = state.in_flight.get(key, 0) + 1
                state.peaks[key] = max(state.peaks.get(key, 0), state.in_flight[key])
        self._in_flight = True
        try:
            self._answer_request()
        finally:
            self._leave()

    def _leave(self) -> None:
        """The request stops counting as in flight, before its answer starts: a client never has the
        answer while the request still counts, so the peak is never more than the client had at once."""
        if self._in_flight:
            self._in_flight = False
            with self.proxy.state.lock:
                for key in (None, self.command):
                    self.proxy.state.in_flight[key] -= 1

    def send_response(self, code: int, message: str | None = None) -> None:
        self._leave()
        super().send_response(code, message)

    def _answer_request(self) -> None:
        body = self._read_body()
        parts = urlsplit(self.path)
        state = self.proxy.state
        with state.lock:
            delay = sum(d.seconds for d in state.delays if d.pattern.search(parts.path)
                        and (d.method is None or d.method == self.command))
        if delay:
            time.sleep(delay)
        with state.lock:
            fault = next((f for f in state.faults if f.remaining > 0 and f.pattern.search(parts.path)
                          and (f.method is None or f.method == self.command)), None)
            if fault:
                fault.remaining -= 1
        if fault and fault.reset:
            self._record(None)
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        if fault:
            self._record(fault.status)
            error = {"errors": [{"code": "INJECTED", "message": f"injected {fault.status}"}]}
            self._answer(fault.status, json.dumps(error).encode(),
                         {"Content-Type": "application/json", **fault.headers})
            return
        if self.proxy.bearer is not None:
            if parts.path == "/token":
                self._issue_token(parse_qs(parts.query))
                return
            if not self._authorized(parts.path, parse_qs(parts.query)):
                return
        self._forward(body)

    def _issue_token(self, query: dict) -> None:
        user, password = self.proxy.bearer
        state = self.proxy.state
        supplied = self.headers.get("Authorization", "")
        with state.lock:
            state.token_requests.append({"query": query, "authorization": supplied})
        if user and supplied != "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode():
            self._record(401)
            self._answer(401, b'{"details":"invalid credentials"}', {"Content-Type": "application/json"})
            return
        token = secrets.token_hex(16)
        with state.lock:
            state.tokens[token] = TokenGrant(_granted(query.get("scope", [])),
                                             time.monotonic() + self.proxy.token_lifetime)
        self._record(200)
        self._answer(200, json.dumps({"token": token, "expires_in": self.proxy.token_lifetime}).encode(),
                     {"Content-Type": "application/json"})

    def _authorized(self, path: str, query: dict) -> bool:
        needed = _required_scopes(self.command, path, query)
        supplied = self.headers.get("Authorization", "")
        grant = None
        if supplied.startswith("Bearer "):
            with self.proxy.state.lock:
                grant = self.proxy.state.tokens.get(supplied[7:])
        if grant and grant.expires > time.monotonic() and (needed is None or needed <= grant.scopes):
            return True
        challenge = f'Bearer realm="{self.proxy.url}/token",service="faulty-proxy"'
        if needed:
            wanted = sorted(needed)[0].rsplit(":", 1)[0]
            challenge += f',scope="{wanted}:pull,push"'
        if grant:
            challenge += ',error="insufficient_scope"'
        self._record(401)
        error = {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]}
        self._answer(401, json.dumps(error).encode(),
                     {"Content-Type": "application/json", "WWW-Authenticate": challenge})
        return False

    def _forward(self, body: bytes) -> None:
        upstream = http.client.HTTPConnection(self.proxy.upstream_host, self.proxy.upstream_port, timeout=60)
        dropped = HOP_HEADERS | ({"authorization"} if self.proxy.bearer is not None else set())
        headers = {k: v for k, v in self.headers.items() if k.lower() not in dropped}
        if body or self.command in ("POST", "PUT", "PATCH"):
            headers["Content-Length"] = str(len(body))
        try:
            upstream.request(self.command, self.path, body=body or None, headers=headers)
            response = upstream.getresponse()
            payload = response.read()
            self._record(response.status)
            self.send_response(response.status)
            for name, value in response.getheaders():
                if name.lower() not in HOP_HEADERS and name.lower() != "content-length":
                    self.send_header(name, value)
            length = response.getheader("Content-Length") if self.command == "HEAD" else None
            self.send_header("Content-Length", length or str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self._write_body(payload)
        finally:
            upstream.close()

    def _write_body(self, payload: bytes) -> None:
        """The whole body, unless a stall is due: then its first part, and hang until released."""
        state = self.proxy.state
        with state.lock:
            stall = state.stall_after is not None and len(payload) > state.stall_after and state.stalls_left > 0
            if stall:
                state.stalls_left -= 1
        if not stall:
            self.wfile.write(payload)
            return
        self.wfile.write(payload[:state.stall_after])
        self.wfile.flush()
        state.released.wait()
        self.close_connection = True

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _handle


def self_signed_certificate(directory: Path, hosts: tuple[str, ...] = ("127.0.0.1",)) -> tuple[str, Path, Path]:
    """A throwaway CA and a server certificate signed by it, valid for `hosts` (IP addresses or DNS
    names; the first is the subject): (CA PEM, cert file, key file)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key, server_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "apparate test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                       crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    server = (x509.CertificateBuilder()
              .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
              .issuer_name(ca_name).public_key(server_key.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=2))
              .add_extension(x509.SubjectAlternativeName([_alternative_name(host) for host in hosts]), critical=False)
              .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
              .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
              .sign(ca_key, hashes.SHA256()))
    directory.mkdir(parents=True, exist_ok=True)
    cert_file, key_file = directory / "server.pem", directory / "server.key"
    cert_file.write_bytes(server.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(server_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()))
    return ca.public_bytes(serialization.Encoding.PEM).decode(), cert_file, key_file


def _alternative_name(host: str):
    from cryptography import x509

    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


@pytest.fixture
def faulty_proxy():
    started: list[FaultyProxy] = []

    def start(upstream_url: str, **options) -> FaultyProxy:
        proxy = FaultyProxy(upstream_url, **options)
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        proxy.stop()
