"""The registry client against a hostile registry: real HTTP(S) servers on loopback that redirect,
paginate and point their token realm at other hosts (asserting which credentials each host
received), and that answer compression bombs and oversized bodies (asserting the refusal and that
memory stayed near the limit)."""

import base64
import contextlib
import json
import tracemalloc
import zlib
from collections.abc import Callable

import pytest

from converter.registry import (
    MAX_CONFIG_BYTES,
    MAX_LIST_ITEMS,
    MAX_LIST_PAGE_BYTES,
    MAX_LIST_PAGES,
    MAX_MANIFEST_BYTES,
    MAX_RANGE_BYTES,
    MAX_REDIRECTS,
    MAX_TOKEN_RESPONSE_BYTES,
    OCI_MANIFEST,
    RegistryAuthError,
    RegistryNotFound,
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
MiB = 1024 * 1024


def registry(routes: dict[str, Callable[[StubRequest], tuple] | tuple], auth: str = "none",
             realm: str | None = None) -> Callable[[StubRequest], tuple]:
    """`respond` for a registry stub. `routes` maps "METHOD /path" to an answer or a function of the
    request. `auth`: "none"; "basic" (wants USER:PASSWORD); "bearer" (wants TOKEN, challenges with
    `realm`). The registry's own `/token` issues TOKEN to USER:PASSWORD unless `routes` say otherwise."""
    routes = {"GET /token": token_endpoint, **routes}

    def respond(request: StubRequest) -> tuple:
        guarded = request.path != "/token"
        if guarded and auth == "basic" and request.authorization != BASIC:
            return 401, {**JSON, "WWW-Authenticate": 'Basic realm="stub"'}, json.dumps(UNAUTHORIZED).encode()
        if guarded and auth == "bearer" and request.authorization != f"Bearer {TOKEN}":
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


# -- bounded responses (finding 8) --------------------------------------------------------------


def bomb(prefix: bytes, mib: int = 64, encoding: str = "gzip") -> bytes:
    """`prefix` and then `mib` MiB of one letter, compressed about 1000:1 with `encoding`."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, {"gzip": 31, "deflate": 15}[encoding])
    letters = b"a" * MiB
    parts = [compressor.compress(prefix), *(compressor.compress(letters) for _ in range(mib)), compressor.flush()]
    return b"".join(parts)


def pieces(total: int, size: int = 64 * 1024):
    """A body of `total` bytes sent piece by piece without Content-Length."""
    for offset in range(0, total, size):
        yield b"x" * min(size, total - offset)


@contextlib.contextmanager
def peak_memory():
    """The peak of Python allocations inside the block, in bytes, as `measured["peak"]`."""
    measured = {}
    tracemalloc.start()
    try:
        yield measured
    finally:
        measured["peak"] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()


def test_gzip_bomb_catalog_is_refused_near_the_limit(stub_server, make_client):
    body = bomb(b'{"repositories":["')
    assert len(body) < 100_000  # 64 MiB once decompressed
    server = start_registry(stub_server, {"GET /v2/_catalog": (200, {**JSON, "Content-Encoding": "gzip"}, body)})
    client = make_client(server.url)
    with peak_memory() as memory, pytest.raises(RegistryProtocolError) as refused:
        client.catalog()
    assert refused.value.message == (
        "GET /v2/_catalog: the repository list page is larger than the limit of 4 MiB (4194304 bytes); "
        "not read further.")
    assert not refused.value.transient
    assert memory["peak"] < MAX_LIST_PAGE_BYTES + 4 * MiB
    assert len(server.requests()) == 1


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_compressed_manifest_bomb_is_refused_near_the_limit(encoding, stub_server, make_client):
    body = bomb(b'{"schemaVersion":2,"annotations":{"a":"', encoding=encoding)
    server = start_registry(stub_server, {"GET /v2/team/app/manifests/1": (
        200, {"Content-Type": OCI_MANIFEST, "Content-Encoding": encoding}, body)})
    client = make_client(server.url)
    with peak_memory() as memory, pytest.raises(RegistryProtocolError) as refused:
        client.get_manifest("team/app", "1")
    assert refused.value.message == (
        "GET /v2/team/app/manifests/1: the manifest is larger than the limit of 4 MiB (4194304 bytes); "
        "not read further.")
    assert memory["peak"] < MAX_MANIFEST_BYTES + 4 * MiB


def test_manifest_size_limit_is_exact_and_content_length_is_not_trusted(stub_server, make_client):
    def manifest_of(size: int) -> bytes:
        head = b'{"schemaVersion":2,"mediaType":"' + OCI_MANIFEST.encode() + b'","layers":[],"annotations":{"pad":"'
        return head + b"p" * (size - len(head) - 3) + b'"}}'

    largest = manifest_of(MAX_MANIFEST_BYTES)
    server = start_registry(stub_server, {
        "GET /v2/team/app/manifests/largest": (200, {"Content-Type": OCI_MANIFEST}, largest),
        "GET /v2/team/app/manifests/one-more": (200, {"Content-Type": OCI_MANIFEST},
                                                iter([manifest_of(MAX_MANIFEST_BYTES + 1)])),
        "GET /v2/team/app/manifests/endless": lambda request: (200, {"Content-Type": OCI_MANIFEST},
                                                               pieces(64 * MiB)),
    })
    client = make_client(server.url)
    assert client.get_manifest("team/app", "largest").content == largest
    for tag in ("one-more", "endless"):
        with peak_memory() as memory, pytest.raises(RegistryProtocolError, match=(
                f"GET /v2/team/app/manifests/{tag}: the manifest is larger than the limit of 4 MiB")):
            client.get_manifest("team/app", tag)
        assert memory["peak"] < MAX_MANIFEST_BYTES + 4 * MiB


def test_token_response_bomb_is_refused_near_the_limit(stub_server, make_client):
    server = start_registry(stub_server, {"GET /v2/": v2_root, "GET /token": (
        200, {**JSON, "Content-Encoding": "gzip"}, bomb(b'{"token":"'))}, "bearer")
    client = make_client(server.url, USER, PASSWORD)
    with peak_memory() as memory, pytest.raises(RegistryProtocolError) as refused:
        client.ping()
    assert refused.value.message == (
        f"GET /token (token endpoint of {server.host}): the token response is larger than the limit of "
        "1 MiB (1048576 bytes); not read further.")
    assert memory["peak"] < MAX_TOKEN_RESPONSE_BYTES + 4 * MiB


def test_error_body_bomb_still_reports_the_status(stub_server, make_client):
    server = start_registry(stub_server, {"GET /v2/team/app/manifests/gone": (
        404, {**JSON, "Content-Encoding": "gzip"}, bomb(b'{"errors":[{"code":"MANIFEST_UNKNOWN","message":"'))})
    client = make_client(server.url)
    with peak_memory() as memory, pytest.raises(RegistryNotFound) as missing:
        client.get_manifest("team/app", "gone")
    assert missing.value.message == "GET /v2/team/app/manifests/gone failed: not found (404 Not Found)."
    assert memory["peak"] < 4 * MiB


def test_list_pages_hold_names_and_are_bounded_in_number_and_total(stub_server, make_client):
    many = json.dumps({"name": "team/many", "tags": [f"t{i}" for i in range(MAX_LIST_ITEMS + 1)]}).encode()
    assert len(many) < MAX_LIST_PAGE_BYTES

    def endless(request: StubRequest) -> tuple:
        page = int(request.query.get("page", ["0"])[0])
        return 200, {**JSON, "Link": f'</v2/team/endless/tags/list?page={page + 1}>; rel="next"'}, b'{"tags":[]}'

    server = start_registry(stub_server, {
        "GET /v2/team/many/tags/list": (200, JSON, many),
        "GET /v2/team/endless/tags/list": endless,
        "GET /v2/team/odd/tags/list": (200, JSON, b'{"tags":"latest"}'),
        "GET /v2/team/empty/tags/list": (200, JSON, b'{"name":"team/empty","tags":null}'),
    })
    client = make_client(server.url)
    with pytest.raises(RegistryProtocolError) as too_many:
        client.tags("team/many")
    assert too_many.value.message == f"GET /v2/team/many/tags/list: the registry lists more than {MAX_LIST_ITEMS} tags."
    with pytest.raises(RegistryProtocolError) as too_long:
        client.tags("team/endless")
    assert too_long.value.message == (
        f"GET /v2/team/endless/tags/list: the tag list goes on for more than {MAX_LIST_PAGES} pages.")
    assert len([r for r in server.requests() if r.path == "/v2/team/endless/tags/list"]) == MAX_LIST_PAGES
    with pytest.raises(RegistryProtocolError) as odd:
        client.tags("team/odd")
    assert odd.value.message == "GET /v2/team/odd/tags/list: the tag list page holds no list of names under 'tags'."
    assert client.tags("team/empty") == []


def test_config_blob_read_into_memory_is_bounded(stub_server, make_client):
    huge = sha256(b"a config that never ends")
    server = start_registry(stub_server, {
        f"GET /v2/team/app/blobs/{huge}": lambda request: (200, {}, pieces(64 * MiB)),
    })
    client = make_client(server.url)
    with peak_memory() as memory, pytest.raises(RegistryProtocolError) as unsized:
        client.get_blob("team/app", huge)
    assert unsized.value.message == (
        f"GET /v2/team/app/blobs/{huge} failed: the blob is larger than the limit of 8 MiB (8388608 bytes) "
        "for a blob read into memory; not read further.")
    assert memory["peak"] < MAX_CONFIG_BYTES + 4 * MiB
    with pytest.raises(RegistryProtocolError) as declared:
        client.get_blob("team/app", huge, MAX_CONFIG_BYTES + 1)
    assert declared.value.message == (
        f"GET /v2/team/app/blobs/{huge}: the descriptor says {MAX_CONFIG_BYTES + 1} bytes, more than the limit "
        "of 8 MiB (8388608 bytes) for a blob read into memory; not downloaded.")
    assert len(server.requests()) == 1


def test_blob_stream_stops_at_the_descriptor_size(stub_server, make_client):
    digest = sha256(b"x" * 1000)
    server = start_registry(stub_server, {
        f"GET /v2/team/app/blobs/{digest}": lambda request: (200, {}, pieces(64 * MiB)),
    })
    client = make_client(server.url)
    with client.open_blob("team/app", digest, 1000) as reader, pytest.raises(
            RegistryProtocolError, match=f"GET /v2/team/app/blobs/{digest} failed: the body is longer than the "
                                         "expected 1000 bytes"):
        while reader.read(1024 * 1024):
            pass
    assert reader.bytes_read == 1001
    for size in (None, -1, "1000", True, 1.5):
        with pytest.raises(RegistryProtocolError) as unusable:
            client.open_blob("team/app", digest, size)
        assert unusable.value.message == (
            f"GET /v2/team/app/blobs/{digest}: the descriptor's size {size!r} is not a byte count; "
            "the blob is not downloaded.")
    assert len(server.requests()) == 1


# -- ranged blob reads --------------------------------------------------------------------------


def ranged(content: bytes, **extra_headers: str) -> Callable[[StubRequest], tuple]:
    """Storage that honours `Range: bytes=a-b` the way HTTP servers do."""
    def respond(request: StubRequest) -> tuple:
        first, _, last = request.headers["range"].removeprefix("bytes=").partition("-")
        piece = content[int(first):int(last) + 1]
        return 206, {"Content-Range": f"bytes {first}-{last}/{len(content)}", **extra_headers}, piece
    return respond


def test_ranged_read_follows_a_storage_redirect_without_credentials(stub_server, make_client):
    content = bytes(range(256)) * 4
    digest = sha256(content)
    elsewhere = stub_server(ranged(content))
    home = start_registry(stub_server, {f"GET /v2/team/app/blobs/{digest}": redirect(f"{elsewhere.url}/b/1")},
                          "basic")
    assert make_client(home.url, USER, PASSWORD).read_blob_range("team/app", digest, 1000, 24) == content[1000:]
    assert [(r.headers["range"], r.authorization) for r in elsewhere.requests()] == [("bytes=1000-1023", None)]
    assert home.requests()[-1].headers["range"] == "bytes=1000-1023"


def test_ranged_read_refuses_a_whole_blob_answer_without_reading_it(stub_server, make_client):
    digest = sha256(b"huge")
    server = start_registry(stub_server, {
        f"GET /v2/team/app/blobs/{digest}": lambda request: (200, {}, pieces(64 * MiB))})
    client = make_client(server.url)
    with peak_memory() as memory, pytest.raises(RegistryProtocolError) as whole:
        client.read_blob_range("team/app", digest, 100, 10)
    assert whole.value.message == (
        f"GET /v2/team/app/blobs/{digest} failed: the registry answered the whole blob instead of bytes 100-109 "
        "(it ignores Range requests); not read.")
    assert memory["peak"] < 2 * MiB and not whole.value.transient


def test_ranged_read_refuses_wrong_ranges_encodings_and_sizes(stub_server, make_client):
    content = b"0123456789" * 10
    digests = {name: sha256(name.encode()) for name in ("shifted", "gzipped", "longer", "shorter")}
    server = start_registry(stub_server, {
        f"GET /v2/team/app/blobs/{digests['shifted']}": (206, {"Content-Range": "bytes 0-9/100"}, content[:10]),
        f"GET /v2/team/app/blobs/{digests['gzipped']}": ranged(content, **{"Content-Encoding": "gzip"}),
        f"GET /v2/team/app/blobs/{digests['longer']}": lambda request: (
            206, {"Content-Range": "bytes 10-19/100"}, iter([content[10:40]])),
        f"GET /v2/team/app/blobs/{digests['shorter']}": lambda request: (
            206, {"Content-Range": "bytes 10-19/100"}, iter([content[10:15]])),
    })
    client = make_client(server.url)
    path = "GET /v2/team/app/blobs/"
    with pytest.raises(RegistryProtocolError) as shifted:
        client.read_blob_range("team/app", digests["shifted"], 10, 10)
    assert shifted.value.message == (
        f"{path}{digests['shifted']} failed: bytes 10-19 were asked for, the registry answered 'bytes 0-9/100'.")
    with pytest.raises(RegistryProtocolError) as gzipped:
        client.read_blob_range("team/app", digests["gzipped"], 10, 10)
    assert gzipped.value.message == (
        f"{path}{digests['gzipped']} failed: the range came with Content-Encoding 'gzip'; only the blob's own "
        "bytes can be used.")
    with pytest.raises(RegistryProtocolError) as longer:
        client.read_blob_range("team/app", digests["longer"], 10, 10)
    assert longer.value.message == (
        f"{path}{digests['longer']}: the answer to the range request is larger than the limit of 10 bytes; "
        "not read further.")
    with pytest.raises(RegistryProtocolError) as shorter:
        client.read_blob_range("team/app", digests["shorter"], 10, 10)
    assert shorter.value.message == f"{path}{digests['shorter']} failed: got 5 of 10 bytes (truncated download)."
    assert shorter.value.transient
    requests_before = len(server.requests())
    with pytest.raises(RegistryProtocolError) as too_long:
        client.read_blob_range("team/app", digests["longer"], 0, MAX_RANGE_BYTES + 1)
    assert too_long.value.message == (
        f"{path}{digests['longer']}: a range of {MAX_RANGE_BYTES + 1} bytes was asked for, more than the limit of "
        "64 MiB (67108864 bytes) for a ranged read; not requested.")
    assert len(server.requests()) == requests_before
