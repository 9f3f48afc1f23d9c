"""The registry client against a hostile registry: real HTTP(S) servers on loopback that redirect,
paginate and point their token realm at other hosts (asserting which credentials each host
received), and that answer compression bombs and oversized bodies (asserting the refusal and that
memory stayed near the limit)."""

import base64
import json
from collections.abc import Callable

import pytest

from converter.registry import (
    MAX_REDIRECTS,
    RegistryAuthError,
    RegistryProtocolError,
)
from tests.support.faulty_proxy import self_signed_certificate
from tests.support.images import sha256
from tests.support.stub_server import StubRequest

USER, PASSWORD = "alice", "s3cret-pass"
BASIC = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
TOKEN = "registry-token-5f1d"
JSON = {"Content-Type": "application/json"}
UNAUTHORIZED = {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]}


def registry(routes: dict[str, Callable[[StubRequest], tuple] | tuple], auth: str = "none",
             realm: str | None = None) -> Callable[[StubRequest], tuple]:
    """`respond` for a registry stub. `routes` maps "METHOD /path" to an answer or a function of the
    request. `auth`: "none"; "basic" (wants USER:PASSWORD); "bearer" (wants TOKEN, challenges with
    `realm`). The registry's own `/token` issues TOKEN to USER:PASSWORD."""

    def respond(request: StubRequest) -> tuple:
        if request.path == "/token":
            return token_endpoint(request)
        if auth == "basic" and request.authorization != BASIC:
            return 401, {**JSON, "WWW-Authenticate": 'Basic realm="stub"'}, json.dumps(UNAUTHORIZED).encode()
        if auth == "bearer" and request.authorization != f"Bearer {TOKEN}":
            challenge = f'Bearer realm="{realm}",service="stub"'
            return 401, {**JSON, "WWW-Authenticate": challenge}, json.dumps(UNAUTHORIZED).encode()
        answer = routes.get(f"{request.method} {request.path}")
        if answer is None:
            return 404, JSON, b'{"errors":[{"code":"NAME_UNKNOWN","message":"unknown"}]}'
        return answer(request) if callable(answer) else answer

    return respond


def start_registry(stub_server, routes: dict, auth: str = "none", realm: str | None = None, **options):
    """A registry stub; a Bearer realm defaults to its own `/token`."""
    server = stub_server(anything, **options)
    server.respond = registry(routes, auth, realm or f"{server.url}/token")
    return server


def token_endpoint(request: StubRequest, anonymous: bool = False) -> tuple:
    if not anonymous and request.authorization != BASIC:
        return 401, JSON, b'{"details":"invalid credentials"}'
    return 200, JSON, json.dumps({"token": TOKEN, "expires_in": 300}).encode()


def v2_root(request: StubRequest) -> tuple:
    return 200, {**JSON, "Docker-Distribution-API-Version": "registry/2.0"}, b"{}"


def redirect(location: str, status: int = 307) -> tuple:
    return status, {"Location": location, "Content-Length": "0"}, b""


def storage(content: bytes) -> Callable[[StubRequest], tuple]:
    """Blob storage (S3/CDN-like) behind a redirect: anyone with the signed URL may read."""
    return lambda request: (200, {"Content-Type": "application/octet-stream"}, content)


def anything(request: StubRequest) -> tuple:
    """What a foreign host answers to whatever it is sent: it must never be asked."""
    return 200, JSON, b'{"repositories":["evil/x"],"tags":["evil"],"token":"evil"}'


# -- credentials stay home (finding 4) ----------------------------------------------------------


@pytest.mark.parametrize("auth", ["basic", "bearer"])
def test_next_page_link_to_another_host_is_refused_and_that_host_gets_nothing(auth, stub_server, make_client):
    elsewhere = stub_server(anything)
    page = json.dumps({"repositories": ["team/app"]}).encode()
    link = {**JSON, "Link": f'<{elsewhere.url}/v2/_catalog?last=team%2Fapp&n=1000>; rel="next"'}
    home = start_registry(stub_server, {"GET /v2/_catalog": (200, link, page)}, auth)
    with pytest.raises(RegistryProtocolError) as refused:
        make_client(home.url, USER, PASSWORD).catalog()
    assert refused.value.message == (
        f"GET /v2/_catalog refused: the next-page Link points to {elsewhere.url}, not to the registry at "
        f"{home.url}. The registry's credentials and data go only to its own address.")
    assert not refused.value.transient
    assert elsewhere.requests() == []
    assert home.authorizations()[-1] == (BASIC if auth == "basic" else f"Bearer {TOKEN}")


def test_upload_location_on_another_host_is_refused_and_gets_no_layer_data(stub_server, make_client):
    elsewhere = stub_server(anything)
    home = start_registry(stub_server, {
        "POST /v2/team/app/blobs/uploads/": (202, {"Location": f"{elsewhere.url}/upload/1",
                                                   "Content-Length": "0"}, b""),
    }, "basic")
    with pytest.raises(RegistryProtocolError, match=f"the upload Location points to {elsewhere.url}, not to "
                                                    f"the registry at {home.url}") as refused:
        make_client(home.url, USER, PASSWORD).upload_blob("team/app", b"private layer bytes")
    assert refused.value.message.startswith("PUT /upload/1 refused")
    assert elsewhere.requests() == []


def test_chunked_upload_location_moving_to_another_host_is_refused(stub_server, make_client):
    elsewhere = stub_server(anything)
    home = start_registry(stub_server, {
        "POST /v2/team/app/blobs/uploads/": (202, {"Location": "/v2/team/app/blobs/uploads/u1",
                                                   "Content-Length": "0"}, b""),
        "PATCH /v2/team/app/blobs/uploads/u1": (202, {"Location": f"{elsewhere.url}/upload/u1",
                                                      "Content-Length": "0"}, b""),
    }, "basic")
    with pytest.raises(RegistryProtocolError, match="the upload Location points to"):
        make_client(home.url, USER, PASSWORD).upload_blob("team/app", b"0123456789", chunk_size=4)
    assert [r.method for r in home.requests() if r.path.endswith("/u1")] == ["PATCH"]
    assert elsewhere.requests() == []


@pytest.mark.parametrize("auth", ["basic", "bearer"])
def test_blob_redirect_to_storage_is_followed_without_credentials(auth, stub_server, make_client):
    content = b"layer bytes kept in blob storage"
    digest = sha256(content)
    elsewhere = stub_server(storage(content))
    home = start_registry(stub_server, {
        f"GET /v2/team/app/blobs/{digest}": redirect(f"{elsewhere.url}/bucket/{digest[7:]}?signature=abc"),
        f"GET /v2/team/app/blobs/{sha256(b'here')}": redirect(f"/storage/{sha256(b'here')}", 302),
        f"GET /storage/{sha256(b'here')}": (200, {}, b"here"),
    }, auth)
    client = make_client(home.url, USER, PASSWORD)
    assert client.get_blob("team/app", digest, len(content)) == content
    assert [r.path for r in elsewhere.requests()] == [f"/bucket/{digest[7:]}"]
    assert elsewhere.requests()[0].query == {"signature": ["abc"]}
    assert elsewhere.authorizations() == []
    # a redirect within the registry's own address keeps the credentials (the target wants them)
    assert client.get_blob("team/app", sha256(b"here"), 4) == b"here"
    assert home.requests()[-1].path == f"/storage/{sha256(b'here')}"


def test_redirect_loops_end_with_a_clear_error(stub_server, make_client):
    server = start_registry(stub_server, {"GET /v2/team/app/manifests/1": redirect("/v2/team/app/manifests/1")})
    with pytest.raises(RegistryProtocolError, match=f"GET /v2/team/app/manifests/1 failed: more than "
                                                    f"{MAX_REDIRECTS} redirects") as loop:
        make_client(server.url).get_manifest("team/app", "1")
    assert not loop.value.transient
    assert len(server.requests()) == MAX_REDIRECTS + 1


def test_token_realm_over_plain_http_on_another_port_gets_no_credentials(stub_server, make_client):
    realm = stub_server(lambda request: token_endpoint(request, anonymous=True))
    home = start_registry(stub_server, {
        "GET /v2/": v2_root, "GET /v2/team/app/tags/list": (200, JSON, b'{"name":"team/app","tags":["1"]}'),
    }, "bearer", realm=f"{realm.url}/token")
    with pytest.raises(RegistryAuthError) as refused:
        make_client(home.url, USER, PASSWORD).ping()
    assert refused.value.message == (
        f"GET /token (token endpoint of {realm.host}) refused: the registry names a token endpoint over plain "
        f"HTTP on another address ({realm.url}). The credentials of user '{USER}' go only to the registry "
        f"itself ({home.url}) or to a token endpoint over HTTPS.")
    assert PASSWORD not in refused.value.message and not refused.value.transient
    assert realm.requests() == []
    # without credentials there is nothing to leak: the anonymous token flow works
    assert make_client(home.url).tags("team/app") == ["1"]
    assert [r.authorization for r in realm.requests()] == [None]
    assert home.authorizations() == [f"Bearer {TOKEN}"]


@pytest.mark.filterwarnings("ignore:Unverified HTTPS request")
def test_token_realm_on_another_https_host_keeps_working_and_storage_gets_no_token(
        stub_server, make_client, tmp_path):
    ca_pem, cert, key = self_signed_certificate(tmp_path / "tls", hosts=("127.0.0.1", "127.0.0.2"))
    content = b"blob served by a CDN on the auth host"
    digest = sha256(content)
    auth_host = stub_server(lambda request: (token_endpoint(request) if request.path == "/token"
                                             else storage(content)(request)), address="127.0.0.2", tls=(cert, key))
    home = start_registry(stub_server, {
        "GET /v2/": v2_root,
        f"GET /v2/team/app/blobs/{digest}": redirect(f"{auth_host.url}/cdn/{digest[7:]}"),
    }, "bearer", realm=f"{auth_host.url}/token", tls=(cert, key))
    client = make_client(home.url, USER, PASSWORD, ca_bundle_pem=ca_pem)
    client.ping()
    assert client.get_blob("team/app", digest, len(content)) == content
    token_requests = [r for r in auth_host.requests() if r.path == "/token"]
    assert [r.authorization for r in token_requests] == [BASIC, BASIC]  # ping's scope, then the pull scope
    assert token_requests[1].query["scope"] == ["repository:team/app:pull"]
    assert [r.authorization for r in auth_host.requests() if r.path.startswith("/cdn/")] == [None]
    assert set(home.authorizations()) == {f"Bearer {TOKEN}"}
