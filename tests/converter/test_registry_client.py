"""The registry client against Debian's docker-registry, and against small real HTTP servers for
what a healthy registry never does (wrong bytes, truncated bodies, schema 1, faults, token auth)."""

import hashlib
import json
import os
import socket

import pytest

from converter.registry import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_INDEX,
    OCI_MANIFEST,
    DeletionDisabled,
    RegistryAuthError,
    RegistryError,
    RegistryNotFound,
    RegistryProtocolError,
    RegistryTLSError,
    RegistryUnreachable,
    UnsupportedManifest,
    parse_challenge,
)
from tests.support.faulty_proxy import self_signed_certificate
from tests.support.images import Platform, push_image, sha256

pytestmark = pytest.mark.registry

USER, PASSWORD = "alice", "s3cret-pass"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# -- ping ("Test connection") -----------------------------------------------------------------


def test_ping_succeeds_anonymously_and_with_basic_credentials(registry, registry_factory, make_client):
    make_client(registry.url).ping()
    secured = registry_factory(htpasswd=(USER, PASSWORD))
    make_client(secured.url, USER, PASSWORD).ping()


def test_ping_explains_wrong_and_missing_credentials_without_leaking_them(registry_factory, make_client):
    secured = registry_factory(htpasswd=(USER, PASSWORD))
    with pytest.raises(RegistryAuthError) as wrong:
        make_client(secured.url, USER, "wrong-password").ping()
    assert f"refused the credentials of user '{USER}'" in wrong.value.message
    assert "wrong-password" not in str(wrong.value) and wrong.value.status == 401
    assert not wrong.value.transient
    with pytest.raises(RegistryAuthError, match="requires credentials; enter a username and password"):
        make_client(secured.url).ping()


def test_ping_explains_refused_port_and_unknown_host(make_client):
    with pytest.raises(RegistryUnreachable, match="was refused: nothing listens on that port") as refused:
        make_client(f"http://127.0.0.1:{free_port()}").ping()
    assert refused.value.transient
    with pytest.raises(RegistryUnreachable, match=r"'registry\.invalid' could not be resolved"):
        make_client("https://registry.invalid").ping()


def test_ping_recognises_a_web_server_that_is_not_a_registry(static_server, make_client):
    plain = static_server({"/": (200, {"Content-Type": "text/html"}, b"<html>welcome</html>")})
    with pytest.raises(RegistryProtocolError, match="not a Docker/OCI registry") as not_found:
        make_client(plain.url).ping()
    assert not_found.value.status == 404
    catch_all = static_server({"/v2/": (200, {"Content-Type": "text/html"}, b"<html>app</html>")})
    with pytest.raises(RegistryProtocolError, match="not like a registry"):
        make_client(catch_all.url).ping()


def test_tls_https_against_plain_http_port_suggests_http(registry, make_client):
    with pytest.raises(RegistryTLSError, match="does not speak TLS on this port"):
        make_client(f"https://{registry.host}").ping()


@pytest.mark.filterwarnings("ignore:Unverified HTTPS request")
def test_custom_ca_bundle_is_trusted_and_its_temp_file_removed(registry, faulty_proxy, make_client, tmp_path):
    ca_pem, cert, key = self_signed_certificate(tmp_path / "tls")
    proxy = faulty_proxy(registry.url, tls=(cert, key))
    with pytest.raises(RegistryTLSError, match="certificate could not be verified"):
        make_client(proxy.url).ping()
    make_client(proxy.url, verify=False).ping()
    client = make_client(proxy.url, ca_bundle_pem=ca_pem)
    bundle = client._session.verify
    assert os.path.exists(bundle)
    client.ping()
    client.close()
    assert not os.path.exists(bundle)


# -- manifests ---------------------------------------------------------------------------------


def test_reads_oci_index_and_manifest_and_docker_list_and_manifest(registry, make_client, tmp_path):
    oci_digest = push_image(tmp_path, f"{registry.host}/team/oci:1", [Platform(), Platform(architecture="arm64")])
    docker_digest = push_image(tmp_path, f"{registry.host}/team/docker:1",
                               [Platform(), Platform(architecture="arm64")], docker=True)
    client = make_client(registry.url)
    for repository, digest, index_type, manifest_type in [
        ("team/oci", oci_digest, OCI_INDEX, OCI_MANIFEST),
        ("team/docker", docker_digest, DOCKER_MANIFEST_LIST, DOCKER_MANIFEST),
    ]:
        index = client.get_manifest(repository, "1")
        assert (index.media_type, index.digest, index.is_index) == (index_type, digest, True)
        child = index.json()["manifests"][1]
        manifest = client.get_manifest(repository, child["digest"])
        assert manifest.media_type == manifest_type and not manifest.is_index
        assert manifest.digest == child["digest"] and len(manifest.content) == child["size"]
        assert client.head_manifest(repository, "1").digest == digest
    assert client.head_manifest("team/oci", "missing") is None
    with pytest.raises(RegistryNotFound, match=r"GET /v2/team/oci/manifests/missing failed: .*MANIFEST_UNKNOWN"):
        client.get_manifest("team/oci", "missing")


def test_schema1_and_unknown_media_types_are_refused(static_server, make_client):
    schema1 = json.dumps({"schemaVersion": 1, "name": "team/app", "tag": "1", "fsLayers": []}).encode()
    artifact = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.example.thing+json"}).encode()
    server = static_server({
        "/v2/team/app/manifests/old": (
            200, {"Content-Type": "application/vnd.docker.distribution.manifest.v1+prettyjws"}, schema1),
        "/v2/team/app/manifests/untyped-old": (200, {"Content-Type": "application/json"}, schema1),
        "/v2/team/app/manifests/thing": (200, {"Content-Type": "application/vnd.example.thing+json"}, artifact),
    })
    client = make_client(server.url)
    for tag in ("old", "untyped-old"):
        with pytest.raises(UnsupportedManifest, match="Docker schema 1 manifest format") as refused:
            client.get_manifest("team/app", tag)
        assert f"/v2/team/app/manifests/{tag}" in refused.value.message and not refused.value.transient
    with pytest.raises(UnsupportedManifest, match=r"unsupported manifest media type 'application/vnd\.example\.thing"):
        client.get_manifest("team/app", "thing")


def test_manifest_put_by_tag_get_by_digest_and_delete(registry_factory, make_client, tmp_path):
    secured = registry_factory(htpasswd=(USER, PASSWORD))
    client = make_client(secured.url, USER, PASSWORD)
    config = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
    config_digest = client.upload_blob("team/app", config)
    manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": [], "config": {
        "mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": len(config)}})
    digest = client.put_manifest("team/app", "v1", manifest.encode(), OCI_MANIFEST)
    assert digest == sha256(manifest.encode())
    assert client.get_manifest("team/app", digest).content == manifest.encode()
    assert client.tags("team/app") == ["v1"]
    client.delete_manifest("team/app", digest)
    assert client.head_manifest("team/app", digest) is None
    with pytest.raises(ValueError, match="by digest"):
        client.delete_manifest("team/app", "v1")


def test_delete_on_a_registry_without_deletion_says_so(registry_factory, make_client, tmp_path):
    frozen = registry_factory(delete=False)
    digest = push_image(tmp_path, f"{frozen.host}/team/app:1")
    with pytest.raises(DeletionDisabled, match="deletion is disabled in this registry"):
        make_client(frozen.url).delete_manifest("team/app", digest)
    assert make_client(frozen.url).head_manifest("team/app", "1").digest == digest


def test_tags_and_catalog_follow_link_pagination(registry, faulty_proxy, make_client, tmp_path):
    proxy = faulty_proxy(registry.url)
    client = make_client(proxy.url)
    digest = push_image(tmp_path, f"{registry.host}/team/app:t0")
    content = client.get_manifest("team/app", digest).content
    for index in range(1, 5):
        client.put_manifest("team/app", f"t{index}", content, OCI_MANIFEST)
    push_image(tmp_path, f"{registry.host}/team/other:1")
    push_image(tmp_path, f"{registry.host}/ops/tool:1")
    assert sorted(client.tags("team/app")) == ["t0", "t1", "t2", "t3", "t4"]
    assert client.catalog(page_size=1) == ["ops/tool", "team/app", "team/other"]
    assert [s.query for s in proxy.requests(r"/_catalog$")] == [
        "n=1", "last=ops%2Ftool&n=1", "last=team%2Fapp&n=1"]


def test_tag_list_pagination(static_server, make_client):
    # Distribution 2.8 ignores `n` on tag lists, so the pages come from a server that honours it.
    def page(tags, next_link=None):
        headers = {"Content-Type": "application/json"}
        if next_link:
            headers["Link"] = f'<{next_link}>; rel="next"'
        return 200, headers, json.dumps({"name": "team/app", "tags": tags}).encode()

    server = static_server({
        "/v2/team/app/tags/list?n=2": page(["a", "b"], "/v2/team/app/tags/list?n=2&last=b"),
        "/v2/team/app/tags/list?n=2&last=b": page(["c", "d"], "/v2/team/app/tags/list?n=2&last=d"),
        "/v2/team/app/tags/list?n=2&last=d": page(["e"]),
    })
    assert make_client(server.url).tags("team/app", page_size=2) == ["a", "b", "c", "d", "e"]


# -- blobs -------------------------------------------------------------------------------------


def test_monolithic_and_chunked_uploads_head_and_verified_download(registry, make_client):
    client = make_client(registry.url)
    data = hashlib.shake_256(b"blob").digest(300_000)
    digest = client.upload_blob("team/app", data)
    assert client.blob_exists("team/app", digest).size == len(data)
    chunked = data[::-1]
    assert client.upload_blob("team/app", chunked, chunk_size=65_536) == sha256(chunked)
    assert client.get_blob("team/app", sha256(chunked), len(chunked)) == chunked
    assert client.blob_exists("team/app", sha256(b"never uploaded")) is None


def test_ranged_blob_reads_return_exactly_the_bytes_asked_for(registry, make_client):
    client = make_client(registry.url)
    data = hashlib.shake_256(b"ranged").digest(300_000)
    digest = client.upload_blob("team/app", data)
    assert client.read_blob_range("team/app", digest, 0, 10) == data[:10]
    assert client.read_blob_range("team/app", digest, 123_456, 1000) == data[123_456:124_456]
    assert client.read_blob_range("team/app", digest, len(data) - 51, 51) == data[-51:]  # an eStargz footer
    assert client.read_blob_range("team/app", digest, 0, len(data)) == data
    for start, length in ((len(data) - 10, 11), (len(data), 1)):
        with pytest.raises(RegistryProtocolError) as past_end:
            client.read_blob_range("team/app", digest, start, length)
        assert past_end.value.message == (
            f"GET /v2/team/app/blobs/{digest} failed: bytes {start}-{start + length - 1} were asked for, but the "
            f"blob has only {len(data)} bytes.")
        assert not past_end.value.transient
    with pytest.raises(RegistryNotFound, match="BLOB_UNKNOWN"):
        client.read_blob_range("team/app", sha256(b"never uploaded"), 0, 1)
    for start, length in ((-1, 1), (0, 0)):
        with pytest.raises(ValueError, match="start >= 0 and length >= 1"):
            client.read_blob_range("team/app", digest, start, length)


def test_upload_skips_a_blob_the_repository_already_has(registry, faulty_proxy, make_client):
    proxy = faulty_proxy(registry.url)
    client = make_client(proxy.url)
    client.upload_blob("team/app", b"once")
    client.upload_blob("team/app", b"once")
    assert len(proxy.requests(r"/blobs/uploads/$", method="POST")) == 1
    assert len(proxy.requests(r"/blobs/sha256:", method="HEAD")) == 2


def test_cross_repository_mount_and_fallback_when_source_lacks_the_blob(registry, faulty_proxy, make_client):
    proxy = faulty_proxy(registry.url)
    client = make_client(proxy.url)
    digest = client.upload_blob("team/source", b"shared layer")
    assert client.mount_blob("team/target", digest, "team/source") is True
    assert client.blob_exists("team/target", digest)
    assert client.mount_blob("team/target2", sha256(b"nowhere"), "team/source") is False
    assert client.upload_blob("team/third", b"shared layer", mount_from="team/source") == digest
    mount_posts = proxy.requests(r"/v2/team/third/blobs/uploads/$", "POST")
    assert [s.status for s in mount_posts] == [201] and "mount=" in mount_posts[0].query
    assert not proxy.requests(r"/v2/team/third/blobs/uploads/.+", "PUT")
    fallback = client.upload_blob("team/fourth", b"fresh", mount_from="team/source")
    assert client.get_blob("team/fourth", fallback) == b"fresh"


def test_download_with_wrong_bytes_is_refused(static_server, make_client):
    claimed = sha256(b"the real layer")
    server = static_server({f"/v2/team/app/blobs/{claimed}": (200, {}, b"something else!")})
    with pytest.raises(RegistryProtocolError, match=f"digest is {sha256(b'something else!')}, not {claimed}") as bad:
        make_client(server.url).get_blob("team/app", claimed)
    assert f"GET /v2/team/app/blobs/{claimed}" in bad.value.message and not bad.value.transient


def test_truncated_download_is_refused(static_server, make_client):
    body = b"x" * 1000
    digest = sha256(body)
    server = static_server({f"/v2/team/app/blobs/{digest}": (200, {"Content-Length": "1000"}, body[:600])})
    with pytest.raises(RegistryProtocolError, match="truncated") as truncated:
        make_client(server.url).get_blob("team/app", digest, 1000)
    assert truncated.value.transient
    with pytest.raises(RegistryProtocolError, match="announces 1000 bytes, the manifest says 999"):
        make_client(server.url).get_blob("team/app", digest, 999)


# -- retries -----------------------------------------------------------------------------------


def test_5xx_and_429_are_retried_then_succeed(registry, faulty_proxy, make_client, tmp_path):
    digest = push_image(tmp_path, f"{registry.host}/team/app:1")
    proxy = faulty_proxy(registry.url)
    proxy.fail(r"/manifests/1$", status=503, times=2)
    proxy.fail(r"/manifests/1$", status=429, times=1, headers={"Retry-After": "0"})
    assert make_client(proxy.url).get_manifest("team/app", "1").digest == digest
    assert [s.status for s in proxy.requests(r"/manifests/1$")] == [503, 503, 429, 200]


def test_connection_reset_is_retried(registry, faulty_proxy, make_client):
    proxy = faulty_proxy(registry.url)
    proxy.fail(r"/v2/_catalog$", reset=True, times=1)
    assert make_client(proxy.url).catalog() == []
    assert [s.status for s in proxy.requests(r"/v2/_catalog$")] == [None, 200]


def test_404_and_other_4xx_are_not_retried(registry, faulty_proxy, make_client):
    proxy = faulty_proxy(registry.url)
    client = make_client(proxy.url)
    with pytest.raises(RegistryNotFound):
        client.get_manifest("team/app", "nope")
    assert len(proxy.requests(r"/manifests/nope$")) == 1
    proxy.fail(r"/tags/list$", status=400, times=5)
    with pytest.raises(RegistryError, match=r"GET /v2/team/app/tags/list failed: 400") as bad:
        client.tags("team/app")
    assert not bad.value.transient and len(proxy.requests(r"/tags/list$")) == 1


def test_exhausted_retries_report_a_transient_error_naming_the_request(registry, faulty_proxy, make_client):
    proxy = faulty_proxy(registry.url)
    proxy.fail(r"/manifests/", status=502, times=10)
    with pytest.raises(RegistryError, match=r"GET /v2/team/app/manifests/1 failed: 502 .*retries exhausted") as e:
        make_client(proxy.url, retries=2).get_manifest("team/app", "1")
    assert e.value.transient and e.value.status == 502
    assert len(proxy.requests(r"/manifests/")) == 3


def test_failed_upload_is_restarted(registry, faulty_proxy, make_client):
    proxy = faulty_proxy(registry.url)
    proxy.fail(r"/blobs/uploads/.+", status=500, times=1, method="PUT")
    client = make_client(proxy.url)
    digest = client.upload_blob("team/app", b"payload" * 1000)
    assert client.get_blob("team/app", digest) == b"payload" * 1000
    assert len(proxy.requests(r"/blobs/uploads/$", "POST")) == 2


# -- bearer tokens -----------------------------------------------------------------------------


def test_challenge_parsing():
    scheme, params = parse_challenge(
        'Bearer realm="https://auth.example.com/token",service="registry.example.com",'
        'scope="repository:team/app:pull,push",error="insufficient_scope"')
    assert scheme == "bearer"
    assert params == {"realm": "https://auth.example.com/token", "service": "registry.example.com",
                      "scope": "repository:team/app:pull,push", "error": "insufficient_scope"}
    assert parse_challenge('Basic realm="Registry Realm"') == ("basic", {"realm": "Registry Realm"})


def test_bearer_token_flow_with_credentials_and_per_scope_cache(registry, faulty_proxy, make_client, tmp_path):
    digest = push_image(tmp_path, f"{registry.host}/team/app:1")
    proxy = faulty_proxy(registry.url, bearer=("bob", "token-pass"))
    client = make_client(proxy.url, "bob", "token-pass")
    client.ping()
    assert client.get_manifest("team/app", "1").digest == digest
    client.head_manifest("team/app", "1")
    client.tags("team/app")
    client.upload_blob("team/other", b"pushed with a token")
    # one token per scope: the manifest HEAD and the tag list reuse the pull token of team/app
    assert [r["query"].get("scope", []) for r in proxy.state.token_requests] == [
        [], ["repository:team/app:pull"], ["repository:team/other:pull"], ["repository:team/other:pull,push"]]
    assert all(r["query"]["service"] == ["faulty-proxy"] for r in proxy.state.token_requests)
    assert all(r["authorization"].startswith("Basic ") for r in proxy.state.token_requests)
    mount_client = make_client(proxy.url, "bob", "token-pass")
    assert mount_client.mount_blob("team/third", sha256(b"pushed with a token"), "team/other")
    assert proxy.state.token_requests[-1]["query"]["scope"] == [
        "repository:team/third:pull,push", "repository:team/other:pull"]


def test_bearer_token_endpoint_refusing_credentials_is_an_auth_error(registry, faulty_proxy, make_client):
    proxy = faulty_proxy(registry.url, bearer=("bob", "token-pass"))
    with pytest.raises(RegistryAuthError, match=r"token endpoint of 127\.0\.0\.1:\d+\) refused user 'bob'") as e:
        make_client(proxy.url, "bob", "nope").ping()
    assert "nope" not in e.value.message


def test_anonymous_bearer_tokens(registry, faulty_proxy, make_client, tmp_path):
    push_image(tmp_path, f"{registry.host}/team/app:1")
    proxy = faulty_proxy(registry.url, bearer=("", ""))
    assert make_client(proxy.url).tags("team/app") == ["1"]
    assert proxy.state.token_requests[-1]["authorization"] == ""


def test_expired_token_is_fetched_again(registry, faulty_proxy, make_client, tmp_path):
    push_image(tmp_path, f"{registry.host}/team/app:1")
    proxy = faulty_proxy(registry.url, bearer=("bob", "token-pass"))
    client = make_client(proxy.url, "bob", "token-pass")
    client.tags("team/app")
    proxy.state.tokens.clear()  # the token service forgot (revoked) every token it issued
    assert client.tags("team/app") == ["1"]
    scopes = [r["query"]["scope"] for r in proxy.state.token_requests]
    assert scopes == [["repository:team/app:pull"], ["repository:team/app:pull"]]
