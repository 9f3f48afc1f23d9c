"""Image conversion end to end against Debian's docker-registry, checked with skopeo: the twin is a
valid OCI image with eStargz layers, the source is untouched, refusals and failures leave nothing."""

import gzip
import io
import json
import subprocess
import tarfile

import pytest
import requests

from converter import __version__
from converter.cache import CachedLayer, FileLayerCache
from converter.estargz import LayerOptions
from converter.image import (
    CONVERTER_VERSION_ANNOTATION,
    OCI_LAYER_GZIP,
    SOURCE_DIGEST_ANNOTATION,
    TOC_DIGEST_ANNOTATION,
    UNCOMPRESSED_SIZE_ANNOTATION,
    AlreadyAccelerated,
    DestinationRequired,
    PlatformNotFound,
    SuffixedTagRefused,
    convert_image,
)
from converter.reference import parse_reference
from converter.registry import (
    OCI_INDEX,
    OCI_MANIFEST,
    RegistryNotFound,
    RegistryProtocolError,
    UnsupportedManifest,
)
from converter.startup import startup_bytes
from tests.support.images import Platform, Symlink, push_image, push_raw, sample_layers, sha256

pytestmark = pytest.mark.registry

USER, PASSWORD = "alice", "s3cret-pass"
ACCEPT = ", ".join([OCI_INDEX, OCI_MANIFEST, "application/vnd.docker.distribution.manifest.list.v2+json",
                    "application/vnd.docker.distribution.manifest.v2+json"])
OPTIONS = LayerOptions(chunk_size=1 << 20, level=6)  # 1 MiB chunks: the 5 MiB file spans several


def raw_manifest(base_url: str, repository: str, reference: str, auth=None) -> tuple[str, bytes]:
    """(media type, bytes) of a manifest, read with plain requests, not the client under test."""
    response = requests.get(f"{base_url}/v2/{repository}/manifests/{reference}", headers={"Accept": ACCEPT},
                            auth=auth, timeout=10)
    response.raise_for_status()
    return response.headers["Content-Type"], response.content


def blob(base_url: str, repository: str, digest: str, auth=None) -> bytes:
    response = requests.get(f"{base_url}/v2/{repository}/blobs/{digest}", auth=auth, timeout=30)
    response.raise_for_status()
    assert sha256(response.content) == digest
    return response.content


def tree(layer_tar: bytes) -> dict[str, bytes | str | None]:
    """name -> file content, symlink target ("-> target") or None for directories; landmarks and TOC
    left out."""
    result = {}
    with tarfile.open(fileobj=io.BytesIO(layer_tar)) as archive:
        for member in archive:
            if member.name in (".no.prefetch.landmark", ".prefetch.landmark", "stargz.index.json"):
                continue
            if member.isdir():
                result[member.name] = None
            elif member.issym():
                result[member.name] = f"-> {member.linkname}"
            else:
                result[member.name] = archive.extractfile(member).read()
    return result


def skopeo(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=120)


def check_accelerated_manifest(base_url, repository, manifest: dict, source_layers: list[bytes], auth=None):
    """Layers are eStargz blobs whose content equals the source layers, config diff_ids match."""
    assert manifest["mediaType"] == OCI_MANIFEST and "subject" not in manifest
    config = json.loads(blob(base_url, repository, manifest["config"]["digest"], auth))
    assert manifest["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"
    diff_ids = []
    for descriptor, source in zip(manifest["layers"], source_layers, strict=True):
        assert descriptor["mediaType"] == OCI_LAYER_GZIP
        data = blob(base_url, repository, descriptor["digest"], auth)
        assert descriptor["size"] == len(data)
        uncompressed = gzip.decompress(data)
        assert descriptor["annotations"][UNCOMPRESSED_SIZE_ANNOTATION] == str(len(uncompressed))
        assert descriptor["annotations"][TOC_DIGEST_ANNOTATION].startswith("sha256:")
        diff_ids.append(sha256(uncompressed))
        assert tree(uncompressed) == tree(gzip.decompress(source))
    assert config["rootfs"]["diff_ids"] == diff_ids


def test_single_platform_oci_image_converts_and_source_is_untouched(registry, make_client, tmp_path):
    layers = sample_layers(seed=1)
    source_digest = push_image(tmp_path, f"{registry.host}/team/app:1.0", [Platform(layers=layers)])
    before = raw_manifest(registry.url, "team/app", "1.0")
    events = []
    result = convert_image(make_client(registry.url), parse_reference(f"{registry.host}/team/app:1.0"),
                           options=OPTIONS, progress=events.append, workdir=tmp_path / "work")

    assert result.destination == f"{registry.host}/team/app:1.0-apparate"
    assert (result.source_digest, result.media_type) == (source_digest, OCI_MANIFEST)
    assert (result.layers_converted, result.layers_reused) == (3, 0)
    assert raw_manifest(registry.url, "team/app", "1.0") == before
    media_type, content = raw_manifest(registry.url, "team/app", "1.0-apparate")
    assert media_type == OCI_MANIFEST and sha256(content) == result.digest
    manifest = json.loads(content)
    assert manifest["annotations"] == {SOURCE_DIGEST_ANNOTATION: source_digest,
                                       CONVERTER_VERSION_ANNOTATION: __version__}
    source_manifest = json.loads(before[1])
    check_accelerated_manifest(registry.url, "team/app", manifest,
                               [blob(registry.url, "team/app", d["digest"]) for d in source_manifest["layers"]])
    assert list((tmp_path / "work").iterdir()) == []  # per-layer temp dirs are gone

    inspect = skopeo("inspect", "--tls-verify=false", f"docker://{result.destination}")
    assert inspect.returncode == 0, inspect.stderr
    assert json.loads(inspect.stdout)["Digest"] == result.digest
    copy = skopeo("copy", "--src-tls-verify=false", f"docker://{result.destination}", f"oci:{tmp_path}/copy:x")
    assert copy.returncode == 0, copy.stderr

    by_layer = {}
    for event in events:
        by_layer.setdefault(event.layer_index, []).append(event)
    assert sorted(by_layer) == [0, 1, 2]
    for index, layer_events in by_layer.items():
        assert layer_events[-1].phase == "done" and layer_events[0].phase == "convert"
        assert layer_events[-1].total == source_manifest["layers"][index]["size"]
        assert layer_events[-1].bytes_out == manifest["layers"][index]["size"]
        reads = [e.bytes_in for e in layer_events]
        assert reads == sorted(reads) and layer_events[-1].layer_count == 3


def test_multi_platform_docker_image_with_basic_auth(registry_factory, make_client, tmp_path):
    secured = registry_factory(htpasswd=(USER, PASSWORD))
    platforms = [Platform(layers=sample_layers(seed=2)),
                 Platform(architecture="arm64", variant="v8", layers=[{"bin/": None, "bin/app": b"arm64 app\n"}])]
    source_digest = push_image(tmp_path, f"{secured.host}/team/app:2", platforms, credentials=(USER, PASSWORD),
                               docker=True)
    before = raw_manifest(secured.url, "team/app", "2", auth=(USER, PASSWORD))
    client = make_client(secured.url, USER, PASSWORD)
    result = convert_image(client, parse_reference(f"{secured.host}/team/app:2"), options=OPTIONS)

    assert result.media_type == OCI_INDEX and [p.platform for p in result.platforms] == [
        "linux/amd64", "linux/arm64/v8"]
    assert raw_manifest(secured.url, "team/app", "2", auth=(USER, PASSWORD)) == before
    _, content = raw_manifest(secured.url, "team/app", "2-apparate", auth=(USER, PASSWORD))
    index = json.loads(content)
    assert index["mediaType"] == OCI_INDEX and "subject" not in index
    assert index["annotations"][SOURCE_DIGEST_ANNOTATION] == source_digest
    assert [m["platform"] for m in index["manifests"]] == [
        {"architecture": "amd64", "os": "linux"}, {"architecture": "arm64", "os": "linux", "variant": "v8"}]
    source_index = json.loads(before[1])
    for entry, source_entry in zip(index["manifests"], source_index["manifests"], strict=True):
        _, child = raw_manifest(secured.url, "team/app", entry["digest"], auth=(USER, PASSWORD))
        child_manifest = json.loads(child)
        assert child_manifest["annotations"][SOURCE_DIGEST_ANNOTATION] == source_entry["digest"]
        source_child = json.loads(raw_manifest(secured.url, "team/app", source_entry["digest"],
                                               auth=(USER, PASSWORD))[1])
        check_accelerated_manifest(
            secured.url, "team/app", child_manifest,
            [blob(secured.url, "team/app", d["digest"], (USER, PASSWORD)) for d in source_child["layers"]],
            auth=(USER, PASSWORD))
    creds = f"{USER}:{PASSWORD}"
    inspect = skopeo("inspect", "--raw", "--tls-verify=false", "--creds", creds,
                     f"docker://{result.destination}")
    assert inspect.returncode == 0 and sha256(inspect.stdout.encode()) == result.digest
    copy = skopeo("copy", "--all", "--src-tls-verify=false", "--src-creds", creds, f"docker://{result.destination}",
                  f"dir:{tmp_path}/copy")
    assert copy.returncode == 0, copy.stderr


def test_same_input_gives_the_same_digests(registry, make_client, tmp_path):
    push_image(tmp_path, f"{registry.host}/team/app:1", [Platform(layers=sample_layers(seed=3))])
    client = make_client(registry.url)
    source = parse_reference(f"{registry.host}/team/app:1")
    first = convert_image(client, source, parse_reference(f"{registry.host}/team/app:a"), options=OPTIONS)
    second = convert_image(client, source, parse_reference(f"{registry.host}/team/app:b"), options=OPTIONS)
    assert first.digest == second.digest and second.layers_converted == 3


def test_only_requested_platforms_and_no_attestations(registry, make_client, tmp_path):
    platforms = [Platform(), Platform(architecture="arm64"), Platform(architecture="s390x")]
    push_image(tmp_path, f"{registry.host}/team/app:1", platforms)
    _, content = raw_manifest(registry.url, "team/app", "1")
    index = json.loads(content)
    attestation = {**index["manifests"][0], "platform": {"architecture": "unknown", "os": "unknown"},
                   "annotations": {"vnd.docker.reference.type": "attestation-manifest",
                                   "vnd.docker.reference.digest": index["manifests"][0]["digest"]}}
    index["manifests"].append(attestation)
    push_raw(registry.url, "team/app", [], [("attested", OCI_INDEX, json.dumps(index).encode())])
    client = make_client(registry.url)

    result = convert_image(client, parse_reference(f"{registry.host}/team/app:attested"), options=OPTIONS,
                           platforms=["linux/arm64", "linux/s390x"])
    assert [p.platform for p in result.platforms] == ["linux/arm64", "linux/s390x"]
    assert any("attestation" in reason for reason in result.skipped)
    assert any("linux/amd64 not requested" in reason for reason in result.skipped)
    converted = json.loads(raw_manifest(registry.url, "team/app", "attested-apparate")[1])
    assert [m["platform"]["architecture"] for m in converted["manifests"]] == ["arm64", "s390x"]

    with pytest.raises(PlatformNotFound, match="linux/riscv64"):
        convert_image(client, parse_reference(f"{registry.host}/team/app:1"), platforms=["linux/riscv64"])
    assert client.head_manifest("team/app", "1-apparate") is None


def test_refusals_push_nothing(registry, make_client, tmp_path):
    push_image(tmp_path, f"{registry.host}/team/app:1")
    client = make_client(registry.url)
    with pytest.raises(SuffixedTagRefused, match="already ends with '-apparate'"):
        convert_image(client, parse_reference(f"{registry.host}/team/app:1-apparate"))
    with pytest.raises(DestinationRequired, match="names no tag"):
        convert_image(client, parse_reference(f"{registry.host}/team/app@{sha256(b'x')}"))
    convert_image(client, parse_reference(f"{registry.host}/team/app:1"), options=OPTIONS)

    # the twin copied to a plain tag is still recognised, by its annotation...
    twin = client.get_manifest("team/app", "1-apparate")
    client.put_manifest("team/app", "copied", twin.content, OCI_MANIFEST)
    with pytest.raises(AlreadyAccelerated, match="already accelerated: it is the twin of"):
        convert_image(client, parse_reference(f"{registry.host}/team/app:copied"))
    # ...and eStargz layers made by another tool (no apparate annotation) by their TOC digests
    foreign = twin.json()
    del foreign["annotations"]
    client.put_manifest("team/app", "foreign", json.dumps(foreign).encode(), OCI_MANIFEST)
    with pytest.raises(AlreadyAccelerated, match="its layers are eStargz"):
        convert_image(client, parse_reference(f"{registry.host}/team/app:foreign"))
    assert sorted(client.tags("team/app")) == ["1", "1-apparate", "copied", "foreign"]


def test_schema1_source_is_refused(static_server, registry, make_client):
    schema1 = json.dumps({"schemaVersion": 1, "name": "team/app", "tag": "old", "fsLayers": []}).encode()
    server = static_server({"/v2/team/app/manifests/old": (
        200, {"Content-Type": "application/vnd.docker.distribution.manifest.v1+prettyjws"}, schema1)})
    with pytest.raises(UnsupportedManifest, match="schema 1"):
        convert_image(make_client(server.url), parse_reference(f"{server.host}/team/app:old"),
                      parse_reference(f"{registry.host}/team/app:new"), destination_client=make_client(registry.url))
    assert make_client(registry.url).catalog() == []


def test_layer_with_wrong_bytes_fails_and_pushes_nothing(static_server, registry, make_client, tmp_path):
    layer = gzip.compress(b"")  # claims a digest that the served bytes do not have
    claimed = sha256(b"another layer entirely")
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": [sha256(b"")]}}).encode()
    manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                      "digest": sha256(config), "size": len(config)},
                           "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": claimed, "size": len(layer)}]}).encode()
    server = static_server({
        "/v2/team/app/manifests/1": (200, {"Content-Type": OCI_MANIFEST}, manifest),
        f"/v2/team/app/blobs/{sha256(config)}": (200, {}, config),
        f"/v2/team/app/blobs/{claimed}": (200, {}, layer),
    })
    with pytest.raises(RegistryProtocolError, match=f"digest is {sha256(layer)}, not {claimed}"):
        convert_image(make_client(server.url), parse_reference(f"{server.host}/team/app:1"),
                      parse_reference(f"{registry.host}/team/app:1-apparate"),
                      destination_client=make_client(registry.url), workdir=tmp_path / "work")
    assert make_client(registry.url).catalog() == []
    assert list((tmp_path / "work").iterdir()) == []


def test_layer_cache_reuses_converted_layers_across_repositories(registry, faulty_proxy, make_client, tmp_path):
    push_image(tmp_path, f"{registry.host}/team/app:1", [Platform(layers=sample_layers(seed=4))])
    proxy = faulty_proxy(registry.url)
    client = make_client(proxy.url)
    cache = FileLayerCache(tmp_path / "cache.json")
    source = parse_reference(f"{proxy.host}/team/app:1")
    first = convert_image(client, source, options=OPTIONS, cache=cache)
    assert (first.layers_converted, first.layers_reused) == (3, 0)

    events = []
    second = convert_image(client, source, parse_reference(f"{proxy.host}/other/app:1"), options=OPTIONS,
                           cache=cache, progress=events.append)
    assert (second.layers_converted, second.layers_reused) == (0, 3)
    assert second.digest == first.digest
    assert {e.phase for e in events} == {"reused", "done"}  # the writer never ran
    mounts = proxy.requests(r"/v2/other/app/blobs/uploads/$", "POST")
    assert sum("mount=" in m.query and m.status == 201 for m in mounts) == 3
    layer_reads = [s for d in json.loads(raw_manifest(registry.url, "team/app", "1")[1])["layers"]
                   for s in proxy.requests(f"/v2/team/app/blobs/{d['digest']}$", "GET")]
    assert len(layer_reads) == 3  # only by the first run
    assert skopeo("inspect", "--tls-verify=false", f"docker://{registry.host}/other/app:1").returncode == 0

    # entries recorded for another registry cannot be mounted here: the layers are converted again
    entries = json.loads((tmp_path / "cache.json").read_text())
    for entry in entries.values():
        entry["registry"] = "elsewhere.example:5000"
    (tmp_path / "cache.json").write_text(json.dumps(entries))
    third = convert_image(client, source, parse_reference(f"{proxy.host}/third/app:1"), options=OPTIONS,
                          cache=cache)
    assert (third.layers_converted, third.layers_reused) == (3, 0) and third.digest == first.digest

    # different options are a different cache key
    fast = convert_image(client, source, parse_reference(f"{proxy.host}/other/app:fast"), cache=cache,
                         options=LayerOptions(compressor="isal", level=1))
    assert fast.layers_converted == 3


def test_transient_registry_errors_are_retried_during_conversion(registry, faulty_proxy, make_client, tmp_path):
    push_image(tmp_path, f"{registry.host}/team/app:1", [Platform(layers=sample_layers(seed=5))])
    proxy = faulty_proxy(registry.url)
    proxy.fail(r"/blobs/sha256:", status=500, times=2, method="GET")
    proxy.fail(r"/manifests/1-apparate$", status=429, times=1, method="PUT", headers={"Retry-After": "0"})
    result = convert_image(make_client(proxy.url), parse_reference(f"{proxy.host}/team/app:1"), options=OPTIONS)
    assert [s.status for s in proxy.requests(r"/manifests/1-apparate$", "PUT")] == [429, 201]
    assert [s.status for s in proxy.requests(r"/blobs/sha256:", "GET")][:3] == [500, 500, 200]
    assert make_client(registry.url).head_manifest("team/app", "1-apparate").digest == result.digest


def test_failure_after_some_platforms_leaves_no_tag(registry, faulty_proxy, make_client, tmp_path):
    push_image(tmp_path, f"{registry.host}/team/app:1",
               [Platform(), Platform(architecture="arm64", layers=[{"arm.txt": b"arm64 only\n"}])])
    proxy = faulty_proxy(registry.url)
    index = json.loads(raw_manifest(registry.url, "team/app", "1")[1])
    arm = json.loads(raw_manifest(registry.url, "team/app", index["manifests"][1]["digest"])[1])
    proxy.fail(f"/blobs/{arm['layers'][0]['digest']}$", status=404, times=1, method="GET")
    with pytest.raises(RegistryNotFound):
        convert_image(make_client(proxy.url), parse_reference(f"{proxy.host}/team/app:1"), options=OPTIONS)
    assert make_client(registry.url).tags("team/app") == ["1"]
    assert not proxy.requests(r"/manifests/", "PUT")


def test_manifests_are_pushed_after_every_blob_is_verified(registry, faulty_proxy, make_client, tmp_path):
    push_image(tmp_path, f"{registry.host}/team/app:1", [Platform(), Platform(architecture="arm64")])
    proxy = faulty_proxy(registry.url)
    convert_image(make_client(proxy.url), parse_reference(f"{proxy.host}/team/app:1"), options=OPTIONS)
    seen = proxy.requests("")
    puts = [i for i, s in enumerate(seen) if s.method == "PUT" and "/manifests/" in s.path]
    assert [seen[i].path.rsplit("/", 1)[1].split(":")[0] for i in puts] == ["sha256", "sha256", "1-apparate"]
    last_blob_work = max(i for i, s in enumerate(seen) if "/blobs/" in s.path)
    assert last_blob_work < puts[0]
    assert seen[last_blob_work].method == "HEAD"  # the verification pass, after the uploads


def test_conversion_through_a_bearer_token_registry(registry, faulty_proxy, make_client, tmp_path):
    push_image(tmp_path, f"{registry.host}/team/app:1",
               [Platform(layers=[{"etc/": None, "etc/motd": b"hi\n", "link": Symlink("etc/motd")}])])
    proxy = faulty_proxy(registry.url, bearer=("bob", "token-pass"))
    result = convert_image(make_client(proxy.url, "bob", "token-pass"), parse_reference(f"{proxy.host}/team/app:1"),
                           options=OPTIONS)
    assert make_client(registry.url).head_manifest("team/app", "1-apparate").digest == result.digest
    assert {tuple(r["query"].get("scope", [])) for r in proxy.state.token_requests} == {
        ("repository:team/app:pull",), ("repository:team/app:pull,push",)}


# -- prioritized files per image, one conversion per distinct layer, startup bytes -------------


def ranged_reader(base_url: str, repository: str, digest: str):
    """`read(start, length)` over HTTP Range requests to the registry, with plain requests."""
    def read(start: int, length: int) -> bytes:
        response = requests.get(f"{base_url}/v2/{repository}/blobs/{digest}", timeout=30,
                                headers={"Range": f"bytes={start}-{start + length - 1}"})
        assert response.status_code == 206, response.status_code
        return response.content
    return read


def front_of(layer_blob: bytes) -> list[str]:
    """Names placed before .prefetch.landmark; [] when the layer starts with .no.prefetch.landmark."""
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(layer_blob))) as archive:
        names = archive.getnames()
    if names[0] == ".no.prefetch.landmark":
        return []
    return names[:names.index(".prefetch.landmark")]


def twin_layers(base_url: str, repository: str, reference: str) -> list[dict]:
    return json.loads(raw_manifest(base_url, repository, reference)[1])["layers"]


OVERLAY_LAYERS = [
    {"usr/": None, "usr/bin/": None, "usr/bin/python3": b"python 3.11\n" * 200, "etc/": None,
     "etc/config": b"old=1\n", "data/": None, "data/cache.bin": b"c" * 3000, "srv/": None,
     "srv/static.txt": b"static\n" * 10},
    {"usr/": None, "usr/bin/": None, "usr/bin/python3": b"python 3.12\n" * 200, "etc/": None,
     "etc/.wh.config": b"", "data/": None, "data/.wh..wh..opq": b"", "data/fresh.bin": b"f" * 2000,
     "app/": None, "app/main.py": b"print('hi')\n" * 50},
    {"app/": None, "app/templates/": None, "app/templates/index.html": b"<html></html>\n" * 100,
     "notes.txt": b"n\n"},
]


def test_prioritized_files_are_placed_in_the_layer_where_they_live(registry, make_client, tmp_path):
    push_image(tmp_path, f"{registry.host}/team/app:1", [Platform(layers=OVERLAY_LAYERS)])
    options = LayerOptions(chunk_size=1 << 20, level=6, prioritized_files=(
        "/usr/bin/python3", "app/main.py", "./etc/config", "/data/cache.bin", "/app/templates/index.html",
        "/srv/static.txt", "/nowhere.txt"))
    result = convert_image(make_client(registry.url), parse_reference(f"{registry.host}/team/app:1"), options=options)

    layers = twin_layers(registry.url, "team/app", "1-apparate")
    blobs = [blob(registry.url, "team/app", layer["digest"]) for layer in layers]
    # python3 is overridden by layer 2, so only layer 2's copy is prioritized; config and cache.bin
    # are deleted by layer 2 (a whiteout, an opaque directory), so neither is prioritized anywhere
    assert [front_of(data) for data in blobs] == [
        ["srv", "srv/static.txt"],
        ["usr", "usr/bin", "usr/bin/python3", "app", "app/main.py"],
        ["app", "app/templates", "app/templates/index.html"],
    ]
    assert [layer.prioritized for layer in result.platforms[0].layers] == [
        ["/srv/static.txt"], ["/usr/bin/python3", "/app/main.py"], ["/app/templates/index.html"]]
    assert result.warnings == [
        "linux/amd64: prioritized file '/etc/config' is removed from the image by layer 2 of 3 "
        "(a whiteout or a replaced parent directory); it is not prioritized",
        "linux/amd64: prioritized file '/data/cache.bin' is removed from the image by layer 2 of 3 "
        "(a whiteout or a replaced parent directory); it is not prioritized",
        "linux/amd64: prioritized file '/nowhere.txt' is in none of the 3 layers; it is not prioritized",
    ]
    assert result.as_dict()["warnings"] == result.warnings
    source_manifest = json.loads(raw_manifest(registry.url, "team/app", "1")[1])
    check_accelerated_manifest(registry.url, "team/app", json.loads(raw_manifest(registry.url, "team/app",
                                                                                  "1-apparate")[1]),
                               [blob(registry.url, "team/app", d["digest"]) for d in source_manifest["layers"]])

    # Startup bytes: recorded while converting, equal to what ranged reads of the pushed blobs give.
    platform = result.platforms[0]
    figures = [startup_bytes(ranged_reader(registry.url, "team/app", layer["digest"]), layer["size"])
               for layer in layers]
    assert [layer.startup_bytes for layer in platform.layers] == [figure.total for figure in figures]
    assert all(figure.prefetch > 0 for figure in figures)  # every layer here prioritizes something
    assert platform.startup_bytes == sum(figure.total for figure in figures)
    assert platform.layers_size == sum(layer["size"] for layer in layers)
    assert platform.startup_bytes < platform.layers_size


def test_the_layer_cache_never_reuses_a_layer_with_another_front_order(registry, make_client, tmp_path):
    layers = [{"usr/": None, "usr/bin/": None, "usr/bin/python3": b"py\n" * 300, "lib/": None,
               "lib/libc.so": b"elf" * 500},
              {"app/": None, "app/main.py": b"main\n" * 100},
              {"app/": None, "app/templates/": None, "app/templates/index.html": b"<p>\n" * 100}]
    push_image(tmp_path, f"{registry.host}/team/app:1", [Platform(layers=layers)])
    client = make_client(registry.url)
    cache = FileLayerCache(tmp_path / "cache.json")
    source = parse_reference(f"{registry.host}/team/app:1")

    def run(tag: str, *prioritized: str):
        result = convert_image(client, source, parse_reference(f"{registry.host}/team/app:{tag}"), cache=cache,
                               options=LayerOptions(chunk_size=1 << 20, level=6, prioritized_files=prioritized))
        digests = [layer["digest"] for layer in twin_layers(registry.url, "team/app", tag)]
        fronts = [front_of(blob(registry.url, "team/app", digest)) for digest in digests]
        return result, digests, fronts

    only_python, a_digests, a_fronts = run("a", "/usr/bin/python3")
    assert (only_python.layers_converted, only_python.layers_reused) == (3, 0)
    assert a_fronts == [["usr", "usr/bin", "usr/bin/python3"], [], []]

    # Nothing prioritized: the upper layers (which held no listed file) are the same blobs, but the
    # base layer must not come from the cache entry that puts python3 first.
    nothing, b_digests, b_fronts = run("b")
    assert (nothing.layers_converted, nothing.layers_reused) == (1, 2)
    assert b_fronts == [[], [], []]
    assert b_digests[1:] == a_digests[1:] and b_digests[0] != a_digests[0]

    # main.py too: the two upper layers are asked for another list, the base one for python3 only.
    both, c_digests, c_fronts = run("c", "/app/main.py", "/usr/bin/python3")
    assert (both.layers_converted, both.layers_reused) == (2, 1)
    assert c_fronts == [["usr", "usr/bin", "usr/bin/python3"], ["app", "app/main.py"], []]
    assert c_digests[0] == a_digests[0] and c_digests[2] == a_digests[2]
    assert [layer.prioritized for layer in both.platforms[0].layers] == [["/usr/bin/python3"], ["/app/main.py"], []]

    again, d_digests, _ = run("d", "/app/main.py", "/usr/bin/python3")
    assert (again.layers_converted, again.layers_reused) == (0, 3) and d_digests == c_digests
    assert again.digest == both.digest and again.warnings == [] == both.warnings
    assert [layer.prioritized for layer in again.platforms[0].layers] == [["/usr/bin/python3"], ["/app/main.py"], []]
    assert [layer.startup_bytes for layer in again.platforms[0].layers] == [
        layer.startup_bytes for layer in both.platforms[0].layers]


def conversions(events) -> list[tuple[str, int]]:
    """(platform, layer index) of every layer occurrence the writer ran for."""
    return sorted({(e.platform, e.layer_index) for e in events if e.phase == "convert"})


SHARED = {"shared/": None, "shared/file": b"shared\n" * 400}


def test_a_layer_shared_by_platforms_or_repeated_is_converted_once(registry, make_client, tmp_path):
    platforms = [Platform(layers=[SHARED, {"amd64.txt": b"amd64\n"}]),
                 Platform(architecture="arm64", layers=[SHARED, {"arm64.txt": b"arm64\n"}, SHARED])]
    push_image(tmp_path, f"{registry.host}/team/app:1", platforms)
    events = []
    result = convert_image(make_client(registry.url), parse_reference(f"{registry.host}/team/app:1"),
                           options=LayerOptions(chunk_size=1 << 20, level=6, prioritized_files=("/shared/file",)),
                           progress=events.append)

    assert conversions(events) == [("linux/amd64", 0), ("linux/amd64", 1), ("linux/arm64", 1)]
    assert (result.layers_converted, result.layers_reused) == (3, 2)
    amd64, arm64 = result.platforms
    shared = amd64.layers[0]
    assert [layer.digest for layer in arm64.layers] == [shared.digest, arm64.layers[1].digest, shared.digest]
    assert [layer.reused for layer in arm64.layers] == [True, False, True]
    assert shared.prioritized == ["/shared/file"] and result.warnings == []
    # a node pulling arm64 fetches the shared blob once
    assert arm64.startup_bytes == shared.startup_bytes + arm64.layers[1].startup_bytes
    assert arm64.layers_size == shared.size + arm64.layers[1].size
    done = [e for e in events if e.phase == "done"]
    assert len(done) == 5 and {e.platform for e in done if e.layer_index == 2} == {"linux/arm64"}


def test_a_shared_layer_that_needs_another_front_on_one_platform_gets_its_own_blob(registry, make_client, tmp_path):
    platforms = [Platform(layers=[SHARED, {"shared/": None, "shared/file": b"amd64 override\n"}]),
                 Platform(architecture="arm64", layers=[SHARED])]
    push_image(tmp_path, f"{registry.host}/team/app:1", platforms)
    result = convert_image(make_client(registry.url), parse_reference(f"{registry.host}/team/app:1"),
                           options=LayerOptions(chunk_size=1 << 20, level=6, prioritized_files=("/shared/file",)))
    amd64, arm64 = result.platforms
    assert [layer.prioritized for layer in amd64.layers] == [[], ["/shared/file"]]
    assert [layer.prioritized for layer in arm64.layers] == [["/shared/file"]]
    assert amd64.layers[0].digest != arm64.layers[0].digest
    assert result.layers_converted == 3


class FirstFieldsCache:
    """A LayerCache that keeps only the fields CachedLayer had before per-image prioritization, as a
    cache written for them does: its entries come back without prioritized, hidden, startup_bytes."""

    FIELDS = ("digest", "size", "diff_id", "toc_digest", "uncompressed_size", "registry", "repository")

    def __init__(self):
        self.entries: dict[tuple[str, str], dict] = {}

    def get(self, source_digest: str, cache_key: str) -> CachedLayer | None:
        entry = self.entries.get((source_digest, cache_key))
        return CachedLayer(**entry) if entry else None

    def put(self, source_digest: str, cache_key: str, layer: CachedLayer) -> None:
        self.entries[(source_digest, cache_key)] = {name: getattr(layer, name) for name in self.FIELDS}


def test_a_cache_that_does_not_keep_the_front_is_not_trusted_with_prioritized_files(registry, make_client, tmp_path):
    layers = [{"usr/": None, "usr/bin/": None, "usr/bin/python3": b"py\n" * 300}, {"app.py": b"app\n" * 100}]
    push_image(tmp_path, f"{registry.host}/team/app:1", [Platform(layers=layers)])
    client, cache = make_client(registry.url), FirstFieldsCache()
    source = parse_reference(f"{registry.host}/team/app:1")
    options = LayerOptions(chunk_size=1 << 20, level=6, prioritized_files=("/usr/bin/python3",))
    first = convert_image(client, source, parse_reference(f"{registry.host}/team/app:a"), options=options, cache=cache)
    second = convert_image(client, source, parse_reference(f"{registry.host}/team/app:b"), options=options, cache=cache)
    assert (second.layers_converted, second.layers_reused) == (2, 0)
    assert [layer.prioritized for layer in second.platforms[0].layers] == [["/usr/bin/python3"], []]
    assert second.digest == first.digest
    plain = convert_image(client, source, parse_reference(f"{registry.host}/team/app:c"), cache=cache,
                          options=LayerOptions(chunk_size=1 << 20, level=6))
    # the app layer held none of the files, so it was also cached under the plain key
    assert [layer.reused for layer in plain.platforms[0].layers] == [False, True]
    assert plain.platforms[0].layers[1].startup_bytes is None and plain.platforms[0].startup_bytes is None
