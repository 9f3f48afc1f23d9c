"""The OCI Distribution client: the only code in the product that talks to registries.

Everything the console, the workers and the CLI do with a registry goes through `RegistryClient`:
"Test connection" (`ping`), reading manifests and blobs, pushing converted images, listing tags and
repositories for the reconciler, deleting manifests from the Images page.

Behaviour worth knowing:

- Auth: anonymous first; on a 401 the `WWW-Authenticate` challenge decides. `Basic` sends the
  configured credentials; `Bearer` fetches a token from the challenge's realm (with `service` and
  `scope`, and the credentials as Basic auth when given) and caches it per scope until it expires.
- Threads: one client may serve several threads at once. Each has its own HTTP session; the
  authentication state is shared behind a lock, so a token is still fetched once per scope (see
  `RegistryClient`).
- Credentials stay home. The registry's origin is the scheme, host and port of its base URL.
  Basic credentials and Bearer tokens go only to that origin; the credentials also go to the token
  realm when it is HTTPS (any host, like Docker Hub's auth.docker.io) or the registry's own origin,
  never to a plain-HTTP realm elsewhere (refused when there are credentials to send; anonymous
  tokens are still fetched). A next-page `Link` or an upload `Location` on another origin is
  refused: a registry has no reason to send its listing or its uploads elsewhere, and following
  would hand another host the registry's data. Redirects are followed for GET and HEAD only (blob
  storage, CDNs), by the client itself, and the `Authorization` header is dropped as soon as a
  redirect leaves the origin the request started at (an https-to-http downgrade leaves it too).
- TLS: `verify=False` turns verification off; `ca_bundle_pem` adds PEM certificates to the system
  store (written to a private temp file that `close()` removes). Plain-HTTP registries use an
  `http://` base URL (`RegistryClient.for_host(..., insecure=True)` picks the scheme).
- Every request has a timeout. Connection errors, timeouts, 5xx and 429 are retried with
  exponential backoff and jitter (honouring a bounded `Retry-After`); other 4xx answers are not.
- Errors are `RegistryError` subclasses whose message names the request (method and URL path,
  never credentials or query strings) and whose `transient` flag tells the pipeline whether a
  retry later can help.
- Blob downloads are verified: the digest of the bytes read must match, and a short body is an
  error, never a silently truncated layer.
- `read_blob_range` reads part of a blob with an HTTP Range request (an eStargz footer and TOC)
  and returns exactly the bytes asked for, or an error; a registry that ignores Range and sends the
  whole blob is refused without reading it.
- Nothing the registry sends is trusted for size. Every body read into memory (manifests, list
  pages, token responses, error bodies, configs) is streamed and cut off at a limit named below,
  counted after decoding its Content-Encoding, whatever Content-Length says; a compression bomb
  stops at the limit because urllib3 (>= 2.6) decompresses only what each read asks for. Blob
  streams stop at their descriptor's size. Exceeding a limit is a `RegistryProtocolError` naming
  the limit.
"""

from __future__ import annotations

import contextlib
import email.utils
import hashlib
import io
import json
import os
import random
import re
import socket
import ssl
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

import certifi
import requests
import urllib3

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_SCHEMA1 = ("application/vnd.docker.distribution.manifest.v1+json",
                  "application/vnd.docker.distribution.manifest.v1+prettyjws")
IMAGE_MEDIA_TYPES = frozenset({DOCKER_MANIFEST, OCI_MANIFEST})
INDEX_MEDIA_TYPES = frozenset({DOCKER_MANIFEST_LIST, OCI_INDEX})
MANIFEST_MEDIA_TYPES = IMAGE_MEDIA_TYPES | INDEX_MEDIA_TYPES
ACCEPT_MANIFESTS = ", ".join([OCI_INDEX, OCI_MANIFEST, DOCKER_MANIFEST_LIST, DOCKER_MANIFEST])
USER_AGENT = "apparate-converter"
MAX_REDIRECTS = 5  # blob storage behind a CDN takes one or two; more is a loop or a trick
# Limits on what is read into memory, counted in decoded bytes.
MAX_MANIFEST_BYTES = 4 * 1024 * 1024  # the OCI distribution spec's common limit; Distribution and containerd apply it
MAX_LIST_PAGE_BYTES = 4 * 1024 * 1024  # one page of _catalog or tags/list (1000 names of 255 bytes: ~260 KiB)
MAX_LIST_ITEMS = 100_000  # repositories or tags over all pages
MAX_LIST_PAGES = 1000  # pages of one listing: empty pages that keep linking on must end too
MAX_TOKEN_RESPONSE_BYTES = 1024 * 1024  # a token answer is a JWT or two and a few fields
MAX_CONFIG_BYTES = 8 * 1024 * 1024  # a blob held in memory (image configs); layers stream to disk
MAX_ERROR_BODY_BYTES = 64 * 1024  # read to explain a failure; a longer body loses its details, not its status
MAX_RANGE_BYTES = 64 * 1024 * 1024  # one ranged read: an eStargz TOC, not a layer
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
_UNSATISFIED_RANGE = re.compile(r"bytes \*/(\d+)")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_READ_SIZE = 1024 * 1024
# what reading a body can raise besides decoding errors: resets, timeouts, a body cut short
_READ_ERRORS = (urllib3.exceptions.ProtocolError, urllib3.exceptions.ReadTimeoutError,
                requests.exceptions.RequestException, OSError)


class RegistryError(Exception):
    """A registry request failed. `message` is a sentence naming the request; `transient` says
    whether trying again later can help (network trouble, 5xx, 429)."""

    transient_default = False

    def __init__(self, message: str, status: int | None = None, transient: bool | None = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.transient = self.transient_default if transient is None else transient

    def __str__(self) -> str:
        return self.message


class RegistryUnreachable(RegistryError):
    """DNS failure, connection refused or reset, timeout."""

    transient_default = True


class RegistryTLSError(RegistryError):
    """Certificate verification or TLS handshake failed."""


class RegistryAuthError(RegistryError):
    """401/403: missing or wrong credentials, token endpoint refused, not allowed."""


class RegistryNotFound(RegistryError):
    """404: MANIFEST_UNKNOWN, BLOB_UNKNOWN, NAME_UNKNOWN..."""


class RegistryProtocolError(RegistryError):
    """Not a v2 registry, an answer that breaks the protocol, or a digest mismatch."""


class UnsupportedManifest(RegistryProtocolError):
    """Schema 1 or an unknown manifest media type: the converter refuses to touch it."""


class DeletionDisabled(RegistryError):
    """The registry refuses manifest deletion (405 / UNSUPPORTED): it is switched off there."""


@dataclass(frozen=True)
class Manifest:
    """A manifest exactly as the registry served it: `content` is what `digest` covers."""

    media_type: str
    digest: str
    content: bytes

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_MEDIA_TYPES

    def json(self) -> dict:
        return json.loads(self.content)


@dataclass(frozen=True)
class BlobInfo:
    digest: str
    size: int


@dataclass(frozen=True)
class ManifestInfo(BlobInfo):
    """What a HEAD of a manifest tells: digest, size and media type ("" when the registry does not
    say, or says only a generic type such as application/json)."""

    media_type: str = ""


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _explain_network_error(error: Exception, host: str, timeout: float) -> RegistryError:
    """Turn a requests exception into a sentence a person can act on."""
    chain, pending = [], [error]
    while pending and len(chain) < 20:  # requests and urllib3 nest the root cause in several ways
        cursor = pending.pop()
        if not isinstance(cursor, BaseException) or cursor in chain:
            continue
        chain.append(cursor)
        pending += [cursor.__cause__, cursor.__context__, getattr(cursor, "reason", None), *cursor.args]
    text = " ".join(str(item) for item in chain)
    if isinstance(error, requests.exceptions.SSLError) or any(isinstance(c, ssl.SSLError) for c in chain):
        if "WRONG_VERSION_NUMBER" in text.upper() or "wrong version number" in text:
            hint = "the server does not speak TLS on this port; if it is a plain-HTTP registry use an http:// URL."
        elif "CERTIFICATE_VERIFY_FAILED" in text.upper() or "certificate verify failed" in text:
            reason = re.search(r"certificate verify failed: ([^()'\"]+)", text)
            detail = f" ({reason.group(1).strip()})" if reason else ""
            hint = (f"its certificate could not be verified{detail}. Add the registry's CA to the CA bundle, "
                    "or turn off TLS verification.")
        else:
            hint = "the TLS handshake failed. Check the URL scheme, the port and the registry's TLS setup."
        return RegistryTLSError(f"TLS connection to {host} failed: {hint}")
    if isinstance(error, requests.exceptions.Timeout):
        return RegistryUnreachable(f"{host} did not answer within {timeout:g} seconds.")
    if any(isinstance(c, socket.gaierror) or type(c).__name__ == "NameResolutionError" for c in chain):
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        return RegistryUnreachable(
            f"The host name '{name}' could not be resolved: check the registry URL and the console's DNS.")
    if any(isinstance(c, ConnectionRefusedError) for c in chain) or "Connection refused" in text:
        return RegistryUnreachable(
            f"Connection to {host} was refused: nothing listens on that port. Check the port and that "
            "the registry is running.")
    if any(isinstance(c, ConnectionResetError) for c in chain) or "reset" in text.lower():
        return RegistryUnreachable(f"{host} closed the connection unexpectedly.")
    return RegistryUnreachable(f"Could not connect to {host}: {type(error).__name__}.")


def _read_failure(error: Exception, label: str, bytes_read: int, host: str, timeout: float) -> RegistryError:
    """The error for a body that could not be read to its end."""
    if isinstance(error, urllib3.exceptions.ProtocolError) and "IncompleteRead" in repr(error):
        return RegistryProtocolError(
            f"{label} failed: the body ended after {bytes_read} bytes (truncated download)", transient=True)
    failure = _explain_network_error(error, host, timeout)
    failure.message = f"{label} failed: {failure.message}"
    failure.args = (failure.message,)
    return failure


def _limit_text(limit: int) -> str:
    for unit, name in ((1024 * 1024, "MiB"), (1024, "KiB")):
        if limit >= unit and limit % unit == 0:
            return f"{limit // unit} {name} ({limit} bytes)"
    return f"{limit} bytes"


def _release(response: requests.Response) -> None:
    """Done with a response whose body is not needed: read what little is left so the connection can
    carry the next request, then close. A long or unsized body is not read: the connection goes."""
    length = response.headers.get("Content-Length", "")
    if response.request.method == "HEAD" or response.status_code in (204, 304) or (
            length.isdigit() and int(length) <= MAX_ERROR_BODY_BYTES):
        with contextlib.suppress(urllib3.exceptions.HTTPError, OSError):
            response.raw.read(MAX_ERROR_BODY_BYTES + 1, decode_content=False)
    response.close()


def _content_length(response: requests.Response) -> int:
    """The announced length, 0 when absent or not a number (HEAD answers: informative only)."""
    length = response.headers.get("Content-Length", "")
    return int(length) if length.isdigit() else 0


def _byte_count(size: object) -> bool:
    return isinstance(size, int) and not isinstance(size, bool) and size >= 0


def _registry_errors(body: bytes) -> list[dict]:
    try:
        document = json.loads(body)
    except ValueError:
        return []
    errors = document.get("errors") if isinstance(document, dict) else None
    return [e for e in errors if isinstance(e, dict)] if isinstance(errors, list) else []


def _describe(response: requests.Response, errors: list[dict]) -> str:
    summary = f"{response.status_code} {response.reason or ''}".strip()
    if errors:
        details = "; ".join(f"{e.get('code', '?')}: {e.get('message', '')}".rstrip(": ") for e in errors[:3])
        summary += f" ({details})"
    return summary


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    if value.strip().isdigit():
        return float(value.strip())
    with contextlib.suppress(TypeError, ValueError):
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    return None


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """Parse a `WWW-Authenticate` header into (scheme, params), e.g.
    `Bearer realm="https://auth/token",service="reg",scope="repository:a/b:pull"`."""
    scheme, _, rest = header.strip().partition(" ")
    params = {key.lower(): quoted if quoted or not bare else bare for key, quoted, bare in re.findall(
        r'([A-Za-z0-9_-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))', rest)}
    return scheme.lower(), params


def _origin(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) of a URL, default ports filled in: what "the same origin" compares."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:  # an invalid port is no origin anyone is allowed to receive credentials at
        port = -1
    return scheme, (parts.hostname or "").lower(), port or {"http": 80, "https": 443}.get(scheme)


def _origin_url(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _without_authorization(headers: dict[str, str]) -> dict[str, str]:
    return {name: value for name, value in headers.items() if name.lower() != "authorization"}


def _link_next(response: requests.Response) -> str | None:
    for part in response.headers.get("Link", "").split(","):
        match = re.match(r'\s*<([^>]+)>\s*;.*rel="?next"?', part)
        if match:
            return match.group(1)
    return None


class VerifiedBlobReader:
    """A file-like view of a blob download: read() hashes as it goes and, at the end of the body,
    raises `RegistryProtocolError` if the size or digest does not match what was asked for. It never
    reads past `size` (plus the one byte that proves a body too long), or past `limit` when the size
    is not known."""

    def __init__(self, response: requests.Response, digest: str, size: int | None, what: str, host: str,
                 timeout: float, limit: int | None = None):
        self._response, self.digest, self.size = response, digest, size
        self._what, self._host, self._timeout = what, host, timeout
        self._bound = size if size is not None else limit
        self._hash = hashlib.sha256()
        self.bytes_read = 0
        self._done = False

    def read(self, amount: int = -1) -> bytes:
        if amount is None or amount < 0:
            parts = []
            while part := self.read(_READ_SIZE):
                parts.append(part)
            return b"".join(parts)
        if self._done:
            return b""
        if self._bound is not None:
            amount = min(amount, self._bound + 1 - self.bytes_read)
        try:
            data = self._response.raw.read(amount, decode_content=False)
        except _READ_ERRORS as error:
            raise _read_failure(error, self._what, self.bytes_read, self._host, self._timeout) from error
        if data:
            self.bytes_read += len(data)
            self._hash.update(data)
            if self._bound is not None and self.bytes_read > self._bound:
                self.close()
                if self.size is not None:
                    raise RegistryProtocolError(
                        f"{self._what} failed: the body is longer than the expected {self.size} bytes.")
                raise RegistryProtocolError(
                    f"{self._what} failed: the blob is larger than the limit of {_limit_text(self._bound)} for a "
                    "blob read into memory; not read further.")
            return data
        self._done = True
        self.close()
        if self.size is not None and self.bytes_read != self.size:
            raise RegistryProtocolError(
                f"{self._what} failed: got {self.bytes_read} of {self.size} bytes (truncated download).",
                transient=True)
        actual = "sha256:" + self._hash.hexdigest()
        if actual != self.digest:
            raise RegistryProtocolError(
                f"{self._what} failed: the content's digest is {actual}, not {self.digest}. "
                "The registry served corrupt or wrong data.")
        return b""

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self._response.close()

    def __enter__(self) -> VerifiedBlobReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class RegistryClient:
    """A client for one registry (one base URL and one set of credentials).

    Repositories are passed as their API path, `namespace/repository` (`ImageReference.path`).
    Use it as a context manager, or call `close()`, to remove the temporary CA file.

    One client may be used from several threads at once (the Images refresh HEADs tags from a
    pool), and it shares what is worth sharing while keeping apart what is not safe to share:

    - Each thread gets its own `requests.Session`, made on its first request with the same settings.
      requests does not promise that a Session is thread-safe (its cookie jar, for one, is iterated
      without a lock while another thread's response may be adding to it). Each thread keeps its own
      connections, which also spares sizing a shared pool to the number of threads; `close()`
      closes every thread's session.
    - The authentication state (the scheme learnt from a challenge, the Bearer challenge, the token
      cache) is one for the whole client, behind a lock: a token is fetched once per scope however
      many threads need it at the same moment (the others wait for it), and a 401 drops the cached
      token only when it is the one that request carried, so a request sent before another thread's
      fetch does not throw away the fresh token.
    - Retries and backoff keep their state in each call's own variables.

    `close()` must not race with requests still under way in other threads.
    """

    def __init__(self, base_url: str, username: str | None = None, password: str | None = None,
                 verify: bool | str = True, ca_bundle_pem: str | None = None, timeout: float = 30.0,
                 retries: int = 4, backoff: float = 0.5, max_backoff: float = 30.0,
                 upload_chunk_size: int | None = None):
        parts = urlsplit(base_url if "://" in base_url else f"https://{base_url}")
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"'{base_url}' is not an http(s) registry URL.")
        self.base_url = urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))
        self.host = parts.netloc
        self.origin = _origin(self.base_url)
        self.username = username or None
        self._password = password or ""
        self.timeout, self.retries, self.backoff, self.max_backoff = timeout, retries, backoff, max_backoff
        self.upload_chunk_size = upload_chunk_size
        # Proxies come from HTTP(S)_PROXY / NO_PROXY like in other registry tools; .netrc and
        # REQUESTS_CA_BUNDLE are ignored, so only the configured credentials and CAs apply.
        self._proxies = requests.utils.get_environ_proxies(self.base_url)
        self._local = threading.local()  # this thread's session
        self._sessions: list[requests.Session] = []  # every thread's, for close()
        self._sessions_lock = threading.Lock()
        self._ca_file: str | None = None
        if ca_bundle_pem and verify is not False:
            handle, self._ca_file = tempfile.mkstemp(prefix="apparate-ca-", suffix=".pem")
            with os.fdopen(handle, "w") as bundle:
                bundle.write(Path(certifi.where()).read_text() + "\n" + ca_bundle_pem.strip() + "\n")
            self._finalizer = weakref.finalize(self, _remove_file, self._ca_file)
            verify = self._ca_file
        self._verify = verify
        self._auth_lock = threading.Lock()  # guards the three below
        self._scheme: str | None = None  # "basic" | "bearer" once a challenge was seen
        self._challenge: dict[str, str] = {}
        self._tokens: dict[str, tuple[str, float]] = {}

    @classmethod
    def for_host(cls, host: str, insecure: bool = False, **options) -> RegistryClient:
        """A client for `host[:port]` as written in image addresses. `insecure` allows plain HTTP
        and unverified TLS: HTTPS without verification is tried first, then HTTP."""
        if not insecure:
            return cls(f"https://{host}", **options)
        probe = cls(f"https://{host}", verify=False, **{**options, "retries": 0})
        try:
            _release(probe._send("GET", "/v2/", retries=0))
            return probe
        except (RegistryTLSError, RegistryUnreachable):
            probe.close()
        return cls(f"http://{host}", **options)

    @property
    def _session(self) -> requests.Session:
        """The calling thread's session (see the class doc), made on its first use."""
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.headers["User-Agent"] = USER_AGENT
            session.trust_env = False
            session.proxies = self._proxies
            session.verify = self._verify
            with self._sessions_lock:
                self._sessions.append(session)
            self._local.session = session
        return session

    def close(self) -> None:
        with self._sessions_lock:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            session.close()
        self._local = threading.local()
        if self._ca_file:
            self._finalizer()
            self._ca_file = None

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- transport ---------------------------------------------------------------------------

    def _url(self, path_or_url: str) -> str:
        return urljoin(self.base_url + "/", path_or_url) if "://" in path_or_url else self.base_url + path_or_url

    @staticmethod
    def _label(method: str, url: str) -> str:
        return f"{method} {urlsplit(url).path}"

    def _sleep_before_retry(self, attempt: int, retry_after: float | None = None) -> None:
        delay = min(self.max_backoff, self.backoff * (2 ** attempt)) * random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not crypto
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.max_backoff))
        time.sleep(delay)

    def _send(self, method: str, path_or_url: str, *, scope: str | None = None, headers: dict | None = None,
              params: dict | None = None, body: bytes | BinaryIO | None = None, retries: int | None = None,
              auth: bool = True, source: str = "the URL") -> requests.Response:
        """One logical request: auth challenge handling, redirects and retries of transient failures.
        Returns the final response whatever its status, its body not read yet (see `_read_body`,
        `_release`); raises on network errors after retries.

        With `auth` (every request but the token fetch) the URL must be on the registry's origin:
        a URL the registry named elsewhere (`source` says which) is refused before anything is sent."""
        url = self._url(path_or_url)
        label = self._label(method, url)
        if auth and _origin(url) != self.origin:
            raise RegistryProtocolError(
                f"{label} refused: {source} points to {_origin_url(url)}, not to the registry at "
                f"{_origin_url(self.base_url)}. The registry's credentials and data go only to its own address.")
        retries = self.retries if retries is None else retries
        start = body.tell() if body is not None and hasattr(body, "seek") else None
        attempt, authenticated_retry = 0, False
        while True:
            if start is not None:
                body.seek(start)
            request_headers = dict(headers or {})
            if auth:
                request_headers.update(self._auth_headers(scope))
            try:
                response = self._request(method, url, request_headers, params, body)
            except requests.exceptions.RequestException as error:
                failure = _explain_network_error(error, urlsplit(url).netloc, self.timeout)
                if failure.transient and attempt < retries:
                    self._sleep_before_retry(attempt)
                    attempt += 1
                    continue
                failure.message = f"{label} failed: {failure.message}"
                failure.args = (failure.message,)
                raise failure from error
            # only the registry itself may ask for its credentials: a 401 from blob storage is its failure
            if (response.status_code == 401 and auth and not authenticated_retry
                    and _origin(response.url) == self.origin):
                challenge = response.headers.get("WWW-Authenticate", "")
                if challenge and self._learn_challenge(challenge, scope, label, request_headers.get("Authorization")):
                    _release(response)
                    authenticated_retry = True
                    continue
            if (response.status_code == 429 or response.status_code >= 500) and attempt < retries:
                wait = _retry_after(response)
                _release(response)
                self._sleep_before_retry(attempt, wait)
                attempt += 1
                continue
            return response

    def _request(self, method: str, url: str, headers: dict[str, str], params: dict | None,
                 body: bytes | BinaryIO | None) -> requests.Response:
        """Send one request and follow the redirects of a GET or HEAD (blob storage, CDNs) ourselves,
        so that the Authorization header stays only while on the origin the request started at."""
        home = _origin(url)
        for _ in range(MAX_REDIRECTS + 1):
            response = self._session.request(method, url, headers=headers, params=params, data=body, stream=True,
                                             timeout=self.timeout, allow_redirects=False)
            target = self._session.get_redirect_target(response) if method in ("GET", "HEAD") else None
            if not target:
                return response
            response.close()  # a redirect's body is never read
            url, params = urljoin(response.url, target), None
            if urlsplit(url).scheme not in ("http", "https"):
                raise RegistryProtocolError(
                    f"{self._label(method, response.url)} failed: redirected to a non-HTTP URL.")
            if _origin(url) != home:
                headers = _without_authorization(headers)
        raise RegistryProtocolError(f"{self._label(method, response.url)} failed: more than {MAX_REDIRECTS} redirects.")

    def _fetch(self, method: str, path_or_url: str, *, limit: int, what: str, ok: tuple[int, ...] = (200,),
               label: str | None = None, decode: bool = True, **options) -> tuple[requests.Response, bytes]:
        """`_send`, then, when the status is in `ok`, the body read into memory within `limit` (see
        `_read_body`); a body cut short is fetched again like any transient failure. Other answers
        come back unread, for `_fail`."""
        retries = self.retries if options.get("retries") is None else options["retries"]
        attempt = 0
        while True:
            response = self._send(method, path_or_url, **options)
            if response.status_code not in ok:
                return response, b""
            try:
                return response, self._read_body(response, limit, what, label, decode)
            except RegistryError as error:
                if not error.transient or attempt >= retries:
                    raise
            self._sleep_before_retry(attempt)
            attempt += 1

    def _read_body(self, response: requests.Response, limit: int, what: str, label: str | None = None,
                   decode: bool = True) -> bytes:
        """The body, decoded as its Content-Encoding says (unless not `decode`), refusing more than
        `limit` bytes whatever Content-Length announced. Reads go in bounded steps, so a compression
        bomb costs about `limit` bytes of memory before it is refused. Closes the response."""
        label = label or self._label(response.request.method, response.url)
        body = bytearray()
        try:
            while len(body) <= limit:
                chunk = response.raw.read(min(_READ_SIZE, limit + 1 - len(body)), decode_content=decode)
                if not chunk:
                    return bytes(body)
                body += chunk
        except urllib3.exceptions.DecodeError as error:
            encoding = response.headers.get("Content-Encoding", "")
            raise RegistryProtocolError(f"{label}: the {what} could not be decoded (Content-Encoding "
                                        f"'{encoding}').") from error
        except _READ_ERRORS as error:
            raise _read_failure(error, label, len(body), urlsplit(response.url).netloc, self.timeout) from error
        finally:
            response.close()
        raise RegistryProtocolError(f"{label}: the {what} is larger than the limit of {_limit_text(limit)}; "
                                    "not read further.")

    def _read_errors(self, response: requests.Response) -> list[dict]:
        """The `errors` of a failed answer's body, if it is small enough to read; [] otherwise."""
        try:
            return _registry_errors(self._read_body(response, MAX_ERROR_BODY_BYTES, "error body"))
        except RegistryError:
            return []

    def _auth_headers(self, scope: str | None) -> dict[str, str]:
        """The Authorization header for a request of `scope`, fetching a token when none is cached.
        Under the lock: threads needing the same scope at once wait for one fetch."""
        with self._auth_lock:
            if self._scheme == "basic" and self.username:
                return {"Authorization": requests.auth._basic_auth_str(self.username, self._password)}
            if self._scheme == "bearer":
                key = scope or ""
                cached = self._tokens.get(key)
                if cached is None or cached[1] <= time.monotonic():
                    self._tokens[key] = self._fetch_token(scope)
                return {"Authorization": f"Bearer {self._tokens[key][0]}"}
            return {}

    def _learn_challenge(self, header: str, scope: str | None, label: str, sent: str | None) -> bool:
        """Record a 401 challenge to a request that carried the Authorization `sent` (None: none);
        True if a retry with new credentials makes sense."""
        scheme, params = parse_challenge(header)
        with self._auth_lock:
            if scheme == "basic":
                if (sent or "").startswith("Basic ") or not self.username:
                    return False  # the credentials themselves were refused
                self._scheme = "basic"
                return True
            if scheme == "bearer":
                if not params.get("realm"):
                    raise RegistryProtocolError(f"{label} failed: the Bearer challenge names no token realm.")
                self._scheme, self._challenge = "bearer", params
                cached = self._tokens.get(scope or "")
                # none yet, expired or revoked: fetch one (once, see _send). A token another thread
                # cached after this request left is kept: this answer says nothing about it.
                if cached is not None and sent == f"Bearer {cached[0]}":
                    del self._tokens[scope or ""]
                return True
        raise RegistryAuthError(f"{label} failed: unsupported authentication scheme '{scheme}'.", status=401)

    def _fetch_token(self, scope: str | None) -> tuple[str, float]:
        realm = self._challenge["realm"]
        label = f"GET {urlsplit(realm).path or '/'} (token endpoint of {urlsplit(realm).netloc})"
        if urlsplit(realm).scheme not in ("http", "https") or not urlsplit(realm).netloc:
            raise RegistryProtocolError(f"{label} failed: the token realm is not an http(s) URL.")
        if self.username and urlsplit(realm).scheme != "https" and _origin(realm) != self.origin:
            raise RegistryAuthError(
                f"{label} refused: the registry names a token endpoint over plain HTTP on another address "
                f"({_origin_url(realm)}). The credentials of user '{self.username}' go only to the registry "
                f"itself ({_origin_url(self.base_url)}) or to a token endpoint over HTTPS.")
        query = [("service", self._challenge["service"])] if self._challenge.get("service") else []
        query += [("scope", item) for item in (scope or "").split(" ") if item]
        if self.username:
            query.append(("account", self.username))
        headers = {}
        if self.username:
            headers["Authorization"] = requests.auth._basic_auth_str(self.username, self._password)
        response, body = self._fetch("GET", realm + ("&" if "?" in realm else "?") + urlencode(query),
                                     limit=MAX_TOKEN_RESPONSE_BYTES, what="token response", label=label,
                                     headers=headers, auth=False)
        if response.status_code in (401, 403):
            who = f"user '{self.username}'" if self.username else "anonymous access"
            raise RegistryAuthError(f"{label} refused {who}: {_describe(response, self._read_errors(response))}.",
                                    status=response.status_code)
        if response.status_code != 200:
            raise RegistryError(f"{label} failed: {_describe(response, self._read_errors(response))}.",
                                status=response.status_code,
                                transient=response.status_code >= 500 or response.status_code == 429)
        try:
            document = json.loads(body)
            token = document.get("token") or document.get("access_token")
            lifetime = float(document.get("expires_in") or 60)
        except (ValueError, AttributeError, TypeError) as error:
            raise RegistryProtocolError(f"{label} answered something that is not a token.") from error
        if not token:
            raise RegistryProtocolError(f"{label} answered without a token.")
        if not isinstance(token, str) or not re.fullmatch(r"[\x21-\x7e]+", token):
            raise RegistryProtocolError(f"{label} answered a token that is not printable ASCII.")
        return token, time.monotonic() + max(lifetime - 10, lifetime / 2)

    def _fail(self, response: requests.Response, what: str | None = None,
              errors: list[dict] | None = None) -> RegistryError:
        """The error for an unexpected answer, classified by status (`errors`: its body's, if already read)."""
        label = what or self._label(response.request.method, response.url)
        status = response.status_code
        description = _describe(response, self._read_errors(response) if errors is None else errors)
        if status == 401:
            if self.username:
                return RegistryAuthError(
                    f"{label} failed: the registry refused the credentials of user '{self.username}' "
                    f"({description}).", status=status)
            return RegistryAuthError(
                f"{label} failed: the registry requires authentication ({description}).", status=status)
        if status == 403:
            return RegistryAuthError(f"{label} failed: access denied ({description}).", status=status)
        if status == 404:
            return RegistryNotFound(f"{label} failed: not found ({description}).", status=status)
        if status == 429 or status >= 500:
            return RegistryError(f"{label} failed: {description}; retries exhausted.", status=status, transient=True)
        return RegistryError(f"{label} failed: {description}.", status=status)

    # -- registry-level ----------------------------------------------------------------------

    def ping(self) -> None:
        """Check that the URL is a v2 registry and the credentials are accepted (GET /v2/ with the
        challenge flow). Raises a `RegistryError` whose message says what is wrong; one attempt only,
        so "Test connection" answers quickly."""
        label = f"GET {urlsplit(self.base_url).path}/v2/ on {self.host}"
        response = self._send("GET", "/v2/", scope=None, retries=0)
        status = response.status_code
        if status == 200:
            version = response.headers.get("Docker-Distribution-API-Version", "")
            content_type = response.headers.get("Content-Type", "")
            _release(response)
            if not version and "json" not in content_type:
                raise RegistryProtocolError(
                    f"{label}: {self.host} answered, but not like a registry (no Distribution API version "
                    "header and no JSON). Check the URL.", status=status)
            return
        if status == 404:
            _release(response)
            raise RegistryProtocolError(
                f"{label} answered 404 Not Found: {self.host} is a web server but not a Docker/OCI registry "
                "(no Distribution API at /v2/). Check the URL and port.", status=status)
        if status == 401 and not self.username:
            _release(response)
            raise RegistryAuthError(f"{label}: the registry requires credentials; enter a username and password.",
                                    status=status)
        raise self._fail(response, label)

    def catalog(self, page_size: int = 1000) -> list[str]:
        """All repository paths (`GET /v2/_catalog`, following `Link` pagination)."""
        return self._paginate("/v2/_catalog", "repositories", "repository list", "registry:catalog:*", page_size)

    def tags(self, repository: str, page_size: int = 1000) -> list[str]:
        """All tags of a repository (`GET /v2/<name>/tags/list`, following `Link` pagination)."""
        return self._paginate(f"/v2/{repository}/tags/list", "tags", "tag list", self._scope(repository), page_size)

    def _paginate(self, path: str, key: str, listing: str, scope: str, page_size: int) -> list[str]:
        """The names under `key` over all pages, within MAX_LIST_PAGE_BYTES per page, MAX_LIST_ITEMS
        names and MAX_LIST_PAGES pages."""
        items: list[str] = []
        url: str | None = path
        params: dict | None = {"n": page_size}
        seen: set[str] = set()
        label = self._label("GET", self._url(path))
        for _ in range(MAX_LIST_PAGES):
            response, body = self._fetch("GET", url, limit=MAX_LIST_PAGE_BYTES, what=f"{listing} page", scope=scope,
                                         params=params, source="the next-page Link")
            if response.status_code != 200:
                raise self._fail(response)
            try:
                document = json.loads(body)
            except ValueError as error:
                raise RegistryProtocolError(f"{self._label('GET', response.url)} answered invalid JSON.") from error
            page = (document.get(key) if isinstance(document, dict) else None) or []  # null: an empty repository
            if not isinstance(page, list) or not all(isinstance(item, str) for item in page):
                raise RegistryProtocolError(
                    f"{self._label('GET', response.url)}: the {listing} page holds no list of names under '{key}'.")
            items.extend(page)
            if len(items) > MAX_LIST_ITEMS:
                raise RegistryProtocolError(f"{label}: the registry lists more than {MAX_LIST_ITEMS} {key}.")
            url, params = _link_next(response), None
            if url is None:
                return items
            if url in seen:
                raise RegistryProtocolError(f"{self._label('GET', response.url)}: pagination loops.")
            seen.add(url)
        raise RegistryProtocolError(f"{label}: the {listing} goes on for more than {MAX_LIST_PAGES} pages.")

    @staticmethod
    def _scope(repository: str, push: bool = False) -> str:
        return f"repository:{repository}:{'pull,push' if push else 'pull'}"

    # -- manifests ---------------------------------------------------------------------------

    def get_manifest(self, repository: str, reference: str) -> Manifest:
        """Fetch a manifest by tag or digest. Refuses schema 1 and unknown media types with
        `UnsupportedManifest`; verifies the content digest when asked by digest."""
        path = f"/v2/{repository}/manifests/{reference}"
        response, content = self._fetch("GET", path, limit=MAX_MANIFEST_BYTES, what="manifest",
                                        scope=self._scope(repository), headers={"Accept": ACCEPT_MANIFESTS})
        label = self._label("GET", self._url(path))
        if response.status_code != 200:
            raise self._fail(response)
        digest = sha256_digest(content)
        if _DIGEST.fullmatch(reference) and digest != reference:
            raise RegistryProtocolError(f"{label}: the manifest's digest is {digest}, not the {reference} asked for.")
        served = response.headers.get("Docker-Content-Digest")
        if served and served.startswith("sha256:") and served != digest:
            raise RegistryProtocolError(f"{label}: the registry says the digest is {served}, the content is {digest}.")
        media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        try:
            document = json.loads(content)
        except ValueError as error:
            raise RegistryProtocolError(f"{label}: the manifest is not valid JSON.") from error
        if not isinstance(document, dict):
            raise RegistryProtocolError(f"{label}: the manifest is not a JSON object.")
        if media_type in ("", "application/json", "text/plain", "application/octet-stream"):
            media_type = document.get("mediaType") or ""
        if media_type in DOCKER_SCHEMA1 or document.get("schemaVersion") == 1:
            raise UnsupportedManifest(
                f"{label}: the image uses the Docker schema 1 manifest format, which is deprecated and not "
                "supported. Push it again with a current client to get a schema 2 or OCI manifest.")
        if media_type not in MANIFEST_MEDIA_TYPES:
            raise UnsupportedManifest(
                f"{label}: unsupported manifest media type '{media_type or 'none'}' (expected an OCI or Docker "
                "schema 2 image manifest or index).")
        return Manifest(media_type=media_type, digest=digest, content=content)

    def head_manifest(self, repository: str, reference: str) -> ManifestInfo | None:
        """Digest, size and media type of a manifest by tag or digest, or None when it does not exist."""
        path = f"/v2/{repository}/manifests/{reference}"
        response = self._send("HEAD", path, scope=self._scope(repository), headers={"Accept": ACCEPT_MANIFESTS})
        if response.status_code != 200:
            if response.status_code == 404:
                _release(response)
                return None
            raise self._fail(response)
        _release(response)
        digest = response.headers.get("Docker-Content-Digest", "")
        media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        if not digest:
            manifest = self.get_manifest(repository, reference)
            return ManifestInfo(manifest.digest, 0, manifest.media_type)
        return ManifestInfo(digest, _content_length(response),
                            media_type if media_type in MANIFEST_MEDIA_TYPES else "")

    def put_manifest(self, repository: str, reference: str, content: bytes, media_type: str) -> str:
        """Store a manifest under a tag (or its digest); returns the digest, checked against the registry's."""
        digest = sha256_digest(content)
        path = f"/v2/{repository}/manifests/{reference}"
        response = self._send("PUT", path, scope=self._scope(repository, push=True),
                              headers={"Content-Type": media_type}, body=content)
        if response.status_code not in (200, 201, 202):
            raise self._fail(response)
        _release(response)
        served = response.headers.get("Docker-Content-Digest")
        if served and served != digest:
            raise RegistryProtocolError(
                f"{self._label('PUT', self._url(path))}: the registry stored digest {served}, expected {digest}.")
        return digest

    def delete_manifest(self, repository: str, digest: str) -> None:
        """Delete a manifest by digest (tags pointing at it go with it)."""
        if not _DIGEST.fullmatch(digest):
            raise ValueError("Manifests are deleted by digest (sha256:…), not by tag.")
        path = f"/v2/{repository}/manifests/{digest}"
        response = self._send("DELETE", path, scope=f"repository:{repository}:delete,pull,push")
        if response.status_code in (200, 202):
            _release(response)
            return
        errors = self._read_errors(response)
        if response.status_code == 405 or "UNSUPPORTED" in {e.get("code") for e in errors}:
            raise DeletionDisabled(
                f"{self._label('DELETE', self._url(path))} failed: deletion is disabled in this registry "
                "(enable storage deletion in its configuration).", status=405)
        raise self._fail(response, errors=errors)

    # -- blobs -------------------------------------------------------------------------------

    def blob_exists(self, repository: str, digest: str) -> BlobInfo | None:
        """HEAD a blob: its size, or None when the repository does not have it."""
        response = self._send("HEAD", f"/v2/{repository}/blobs/{digest}", scope=self._scope(repository))
        if response.status_code != 200:
            if response.status_code == 404:
                _release(response)
                return None
            raise self._fail(response)
        _release(response)
        return BlobInfo(digest, _content_length(response))

    def open_blob(self, repository: str, digest: str, size: int) -> VerifiedBlobReader:
        """Start a streamed download of a blob of `size` bytes (its descriptor's); the returned reader
        never reads past that size and verifies size and digest at the end. A size that is not a
        byte count (missing from a hostile manifest, say) is refused before any request."""
        path = f"/v2/{repository}/blobs/{digest}"
        if not _byte_count(size):
            raise RegistryProtocolError(f"GET {path}: the descriptor's size {size!r} is not a byte count; "
                                        "the blob is not downloaded.")
        return self._open_blob(repository, digest, size, None)

    def _open_blob(self, repository: str, digest: str, size: int | None, limit: int | None) -> VerifiedBlobReader:
        """The download of `size` bytes, or of at most `limit` bytes when the size is not known."""
        path = f"/v2/{repository}/blobs/{digest}"
        response = self._send("GET", path, scope=self._scope(repository), headers={"Accept-Encoding": "identity"})
        if response.status_code != 200:
            raise self._fail(response)
        length = response.headers.get("Content-Length")
        if size is not None and length and length.isdigit() and int(length) != size:
            response.close()
            raise RegistryProtocolError(
                f"{self._label('GET', self._url(path))}: the registry announces {length} bytes, the manifest "
                f"says {size}.")
        return VerifiedBlobReader(response, digest, size, f"GET {path}", self.host, self.timeout, limit)

    def get_blob(self, repository: str, digest: str, size: int | None = None) -> bytes:
        """Download a small blob (a config) into memory, verified; at most MAX_CONFIG_BYTES."""
        path = f"/v2/{repository}/blobs/{digest}"
        if size is not None and not _byte_count(size):
            raise RegistryProtocolError(f"GET {path}: the descriptor's size {size!r} is not a byte count; "
                                        "the blob is not downloaded.")
        if size is not None and size > MAX_CONFIG_BYTES:
            raise RegistryProtocolError(
                f"GET {path}: the descriptor says {size} bytes, more than the limit of {_limit_text(MAX_CONFIG_BYTES)} "
                "for a blob read into memory; not downloaded.")
        with self._open_blob(repository, digest, size, MAX_CONFIG_BYTES) as reader:
            return reader.read()

    def download_blob(self, repository: str, digest: str, destination: BinaryIO, size: int | None = None,
                      progress: Callable[[int], None] | None = None) -> int:
        """Stream a blob into a file object, verified; returns its size."""
        with self.open_blob(repository, digest, size) as reader:
            while chunk := reader.read(_READ_SIZE):
                destination.write(chunk)
                if progress:
                    progress(len(chunk))
            return reader.bytes_read

    def read_blob_range(self, repository: str, digest: str, start: int, length: int) -> bytes:
        """Exactly `length` bytes of a blob from offset `start`, read with an HTTP Range request and
        never more (at most MAX_RANGE_BYTES). The bytes cannot be checked against the blob's digest:
        the caller verifies what it reads (an eStargz TOC against its own digest, say)."""
        if not (_byte_count(start) and _byte_count(length) and length >= 1):
            raise ValueError(f"A blob range needs start >= 0 and length >= 1, not {start!r} and {length!r}.")
        path = f"/v2/{repository}/blobs/{digest}"
        if length > MAX_RANGE_BYTES:
            raise RegistryProtocolError(
                f"GET {path}: a range of {length} bytes was asked for, more than the limit of "
                f"{_limit_text(MAX_RANGE_BYTES)} for a ranged read; not requested.")
        end = start + length - 1
        label = self._label("GET", self._url(path))
        response, data = self._fetch("GET", path, limit=length, what="answer to the range request", ok=(206,),
                                     decode=False, scope=self._scope(repository),
                                     headers={"Range": f"bytes={start}-{end}", "Accept-Encoding": "identity"})
        content_range = response.headers.get("Content-Range", "")
        if response.status_code == 200:
            response.close()  # the whole blob is on its way: drop the connection rather than read it
            raise RegistryProtocolError(f"{label} failed: the registry answered the whole blob instead of bytes "
                                        f"{start}-{end} (it ignores Range requests); not read.", status=200)
        if response.status_code == 416 and (unsatisfied := _UNSATISFIED_RANGE.fullmatch(content_range)):
            _release(response)
            raise RegistryProtocolError(f"{label} failed: bytes {start}-{end} were asked for, but the blob has only "
                                        f"{unsatisfied.group(1)} bytes.", status=416)
        if response.status_code != 206:
            raise self._fail(response)
        encoding = response.headers.get("Content-Encoding", "identity")
        if encoding.lower() != "identity":
            raise RegistryProtocolError(f"{label} failed: the range came with Content-Encoding '{encoding}'; only "
                                        "the blob's own bytes can be used.")
        answered = _CONTENT_RANGE.fullmatch(content_range)
        if answered and answered.group(3) != "*" and end >= int(answered.group(3)):
            raise RegistryProtocolError(f"{label} failed: bytes {start}-{end} were asked for, but the blob has only "
                                        f"{answered.group(3)} bytes.")
        if not answered or (int(answered.group(1)), int(answered.group(2))) != (start, end):
            raise RegistryProtocolError(f"{label} failed: bytes {start}-{end} were asked for, the registry answered "
                                        f"'{content_range}'.")
        if len(data) != length:
            raise RegistryProtocolError(f"{label} failed: got {len(data)} of {length} bytes (truncated download).",
                                        transient=True)
        return data

    def mount_blob(self, repository: str, digest: str, from_repository: str) -> bool:
        """Cross-repository mount; True if the blob is now in `repository`. When the registry
        answers 202 instead (cannot mount), the upload session it opened is cancelled."""
        response = self._start_upload(repository, {"mount": digest, "from": from_repository}, from_repository)
        _release(response)
        if response.status_code == 201:
            return True
        location = response.headers.get("Location")
        if location:
            with contextlib.suppress(RegistryError):
                _release(self._send("DELETE", location, scope=self._scope(repository, push=True), retries=0,
                                    source="the upload Location"))
        return False

    def upload_blob(self, repository: str, source: bytes | Path, digest: str | None = None,
                    chunk_size: int | None = None, mount_from: str | None = None) -> str:
        """Upload a blob (bytes or a file path) unless the repository has it; returns its digest.

        Tries a cross-repository mount first when `mount_from` is given. Monolithic (POST, PUT
        ?digest=) unless `chunk_size` (or the client's `upload_chunk_size`) asks for a chunked
        upload (POST, PATCH per chunk, PUT ?digest=). A transient failure restarts the upload."""
        if digest is None:
            digest = sha256_digest(source) if isinstance(source, bytes) else _file_digest(source)
        if self.blob_exists(repository, digest):
            return digest
        chunk_size = chunk_size or self.upload_chunk_size
        attempt = 0
        while True:
            try:
                self._upload_once(repository, source, digest, chunk_size, mount_from)
                return digest
            except RegistryError as error:
                if not error.transient or attempt >= self.retries:
                    raise
                self._sleep_before_retry(attempt)
                attempt += 1

    def _start_upload(self, repository: str, params: dict, mount_from: str | None = None) -> requests.Response:
        scope = self._scope(repository, push=True)
        if mount_from:
            scope += " " + self._scope(mount_from)
        response = self._send("POST", f"/v2/{repository}/blobs/uploads/", scope=scope, params=params,
                              headers={"Content-Length": "0"})
        if response.status_code not in (201, 202):
            raise self._fail(response)
        if response.status_code == 202 and not response.headers.get("Location"):
            raise RegistryProtocolError(
                f"POST /v2/{repository}/blobs/uploads/: the registry opened an upload without a Location.")
        return response

    def _upload_once(self, repository: str, source: bytes | Path, digest: str, chunk_size: int | None,
                     mount_from: str | None) -> None:
        params = {"mount": digest, "from": mount_from} if mount_from else {}
        response = self._start_upload(repository, params, mount_from)
        _release(response)
        if response.status_code == 201:
            return
        location = response.headers["Location"]
        scope = self._scope(repository, push=True)
        with _open_source(source) as stream:
            size = _source_size(source)
            if chunk_size:
                offset = 0
                while offset < size:
                    piece = stream.read(chunk_size)
                    end = offset + len(piece) - 1
                    patch = self._send("PATCH", location, scope=scope, body=piece, retries=0,
                                       source="the upload Location", headers={
                        "Content-Type": "application/octet-stream", "Content-Range": f"{offset}-{end}",
                        "Content-Length": str(len(piece))})
                    if patch.status_code != 202:
                        raise self._fail(patch)
                    location = patch.headers.get("Location") or location
                    _release(patch)
                    offset = end + 1
                body: bytes | BinaryIO = b""
            else:
                body = stream
            put = self._send("PUT", _with_query(location, digest=digest), scope=scope, body=body, retries=0,
                             source="the upload Location",
                             headers={"Content-Type": "application/octet-stream",
                                      "Content-Length": str(0 if chunk_size else size)})
        if put.status_code not in (201, 204):
            raise self._fail(put)
        served = put.headers.get("Docker-Content-Digest")
        _release(put)
        if served and served != digest:
            raise RegistryProtocolError(f"PUT /v2/{repository}/blobs/uploads/: stored as {served}, not {digest}.")


def _remove_file(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _with_query(url: str, **extra: str) -> str:
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True) + list(extra.items())
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), parts.fragment))


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_READ_SIZE):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def _source_size(source: bytes | Path) -> int:
    return len(source) if isinstance(source, bytes) else Path(source).stat().st_size


@contextlib.contextmanager
def _open_source(source: bytes | Path) -> Iterator[BinaryIO]:
    if isinstance(source, bytes):
        yield io.BytesIO(source)
    else:
        with open(source, "rb") as handle:
            yield handle
