"""The Images refresh reads the registry from a pool of APPARATE_IMAGES_REFRESH_CONCURRENCY threads
and writes the rows from its own: the same rows, report (errors in tag order), progress and audit
with one thread as with eight; the HEADs and manifest reads really overlap with eight and never with
one; the pool's threads never touch the database. The registry is Debian's docker-registry behind
tests/support/faulty_proxy.py, which injects the failures, delays requests and counts those in flight."""

import json
import os
import re
import shutil
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from django.db import connection
from django.db.backends.signals import connection_created

from converter.image import SOURCE_DIGEST_ANNOTATION
from core.models import AuditEntry
from pipeline import catalogue
from pipeline.models import AcceleratedImage, RegistryTag
from registries.models import Instance
from tests.support.images import OCI_CONFIG, OCI_INDEX, OCI_LAYER_GZIP, OCI_MANIFEST, push_raw, sha256

CONFIG = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}).encode()
LAYER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03\x03\x00\x00\x00\x00\x00\x00\x00\x00\x00"  # an empty gzip
FAILING = {"status": 500, "times": 1000}  # every attempt, in both refreshes


def manifest(name: str, **annotations: str) -> bytes:
    """A small OCI manifest of its own digest (the name is an annotation; blobs shared)."""
    return json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": sha256(CONFIG), "size": len(CONFIG)},
        "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": sha256(LAYER), "size": len(LAYER)}],
        "annotations": {"name": name, **annotations},
    }).encode()


def put(registry, repository: str, tags: dict[str, bytes], media_type: str = OCI_MANIFEST) -> None:
    push_raw(registry.url, repository, [CONFIG, LAYER], [(tag, media_type, content) for tag, content in tags.items()])


def rows_of(instance: Instance) -> tuple[list, list]:
    """What the Images page shows of an instance, without ids and times."""
    tags = RegistryTag.objects.filter(instance=instance).order_by("namespace", "repository", "tag").values_list(
        "namespace", "repository", "tag", "digest", "size", "media_type", "error")
    twins = AcceleratedImage.objects.filter(instance=instance).order_by("namespace", "repository", "twin_tag")
    return list(tags), [(t.namespace, t.repository, t.twin_tag, t.source_tag, t.source_digest, t.twin_digest,
                         t.twin_size, t.media_type, t.state, re.sub(r"\d{4}-\d\d-\d\d \d\d:\d\d", "<when>",
                                                                     t.state_reason), t.job_id) for t in twins]


def refreshed(instance: Instance, settings, concurrency: int) -> tuple:
    settings.APPARATE_IMAGES_REFRESH_CONCURRENCY = concurrency
    progress = []
    report = catalogue.refresh_images(instance, progress=lambda done, total: progress.append((done, total)))
    return report, progress, rows_of(instance)


def test_one_thread_and_eight_give_the_same_rows_report_and_errors(db, reg, faulty_proxy, settings, monkeypatch):
    settings.APPARATE_REGISTRY_RETRIES = 0  # a 500 is final at once (the retries are the client's business)
    monkeypatch.setattr(catalogue, "PROGRESS_EVERY", 1)
    one, two, shared, flaky, fake_twin = (manifest(name) for name in ("one", "two", "shared", "flaky", "fake"))
    children = [manifest("amd64"), manifest("arm64")]
    put(reg, "team/app", {sha256(child): child for child in children})
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": sha256(child), "size": len(child)} for child in children]}).encode()
    put(reg, "team/app", {
        "1.0": one, "1.0-apparate": manifest("twin", **{SOURCE_DIGEST_ANNOTATION: sha256(one)}),
        "2.0": two, "two": two, "shared": shared, "flaky": flaky, "flaky2": flaky, "9-apparate": fake_twin,
        "a-broken": manifest("a"), "z-broken": manifest("z"), "gone": manifest("gone"),
        "orphan-apparate": manifest("orphan-twin", **{SOURCE_DIGEST_ANNOTATION: sha256(b"elsewhere")}),
    })
    put(reg, "team/app", {"multi": index}, OCI_INDEX)
    put(reg, "other/web", {"1": manifest("web-1"), "2": manifest("web-2"), "latest": shared})
    put(reg, "solo", {"latest": one})
    listed = requests.get(f"{reg.url}/v2/team/app/tags/list", timeout=10).json()["tags"]  # the registry's order
    first_broken = next(tag for tag in listed if tag.endswith("-broken"))
    proxies = {}
    for concurrency in (1, 8):
        proxy = proxies[concurrency] = faulty_proxy(reg.url)
        proxy.fail(r"/manifests/(a|z)-broken$", method="HEAD", **FAILING)  # HEADs that fail
        proxy.delay(0.3, rf"/manifests/{first_broken}$", method="HEAD")  # the first one ends last with 8 threads
        proxy.fail(r"/manifests/gone$", status=404, times=1000, method="HEAD")  # deleted while listing
        proxy.fail(rf"/manifests/({sha256(flaky)}|{sha256(fake_twin)})$", method="GET", **FAILING)  # reads that fail
    instances = {concurrency: Instance.objects.create(name=f"threads-{concurrency}", url=proxies[concurrency].url)
                 for concurrency in (1, 8)}
    audited = AuditEntry.objects.count()  # the instances' creation

    report, progress, rows = refreshed(instances[1], settings, 1)
    assert (report.repositories, report.tags, report.twins, report.found, report.missing) == (3, 11, 3, 2, 0)
    failing = [tag for tag in listed if tag in ("a-broken", "z-broken", "9-apparate")]
    assert [error.split(": ", 1)[0] for error in report.errors] == [f"team/app:{tag}" for tag in failing]
    errors = dict(error.split(": ", 1) for error in report.errors)
    assert errors["team/app:a-broken"] == ("HEAD /v2/team/app/manifests/a-broken failed: 500 Internal Server Error; "
                                           "retries exhausted.")
    assert errors["team/app:9-apparate"].startswith(f"GET /v2/team/app/manifests/{sha256(fake_twin)} failed: 500")
    assert progress == [(1, 3), (2, 3), (3, 3)]
    tags = {tag: (size, error) for _, _, tag, _, size, _, error in rows[0]}
    assert "gone" not in tags and "a-broken" not in tags
    read_failed = f"GET /v2/team/app/manifests/{sha256(flaky)} failed: 500 Internal Server Error"
    assert tags["flaky"] == tags["flaky2"] == (None, f"{read_failed} (INJECTED: injected 500); retries exhausted.")
    assert tags["multi"][0] > tags["1.0"][0] > 0 and tags["2.0"] == tags["two"]
    assert [twin[2] for twin in rows[1]] == ["1.0-apparate", "orphan-apparate"]
    assert refreshed(instances[8], settings, 8) == (report, progress, rows)

    # the registry changes: a tag moves, a twin goes, one more HEAD fails (and leaves its row)
    put(reg, "team/app", {"2.0": manifest("two again")})
    shutil.rmtree(reg.root / "data/docker/registry/v2/repositories/team/app/_manifests/tags/1.0-apparate")
    for proxy in proxies.values():
        proxy.fail(r"/manifests/shared$", method="HEAD", **FAILING)
    listed = requests.get(f"{reg.url}/v2/team/app/tags/list", timeout=10).json()["tags"]
    again = refreshed(instances[1], settings, 1)
    assert (again[0].missing, again[0].found, len(again[0].errors)) == (1, 0, 4)
    assert [error.split(": ", 1)[0] for error in again[0].errors] == [
        f"team/app:{tag}" for tag in listed if tag in ("a-broken", "z-broken", "9-apparate", "shared")]
    assert {tag: digest for _, _, tag, digest, *_ in again[2][0]}["shared"] == sha256(shared)
    assert again[2][1][0][8] == "missing"
    assert refreshed(instances[8], settings, 8) == again
    assert AuditEntry.objects.count() == audited  # a refresh audits nothing, with any number of threads
    assert proxies[1].peak_in_flight() == 1  # one thread: one request at a time, as before


def test_eight_threads_overlap_heads_and_reads_and_one_never_does(db, reg, faulty_proxy, settings):
    put(reg, "team/app", {f"v{number}": manifest(f"v{number}") for number in range(24)})
    peaks = {}
    for concurrency in (1, 8):
        proxy = faulty_proxy(reg.url)
        proxy.delay(0.05, r"/manifests/")  # each HEAD and read takes a while: long enough to meet the others
        instance = Instance.objects.create(name=f"overlap-{concurrency}", url=proxy.url)
        report, _, rows = refreshed(instance, settings, concurrency)
        assert (report.tags, report.errors, len(rows[0])) == (24, [], 24)
        assert all(size for _, _, _, _, size, _, _ in rows[0])  # every manifest was read: it was new
        peaks[concurrency] = (proxy.peak_in_flight("HEAD"), proxy.peak_in_flight("GET"), proxy.peak_in_flight())
    assert peaks[1] == (1, 1, 1)
    heads, reads, _ = peaks[8]
    assert 1 < heads <= 8 and 1 < reads <= 8


def test_the_pool_threads_never_touch_the_database(db, reg, faulty_proxy, settings):
    put(reg, "team/app", {f"v{number}": manifest(f"v{number}") for number in range(12)}
        | {"v0-apparate": manifest("twin", **{SOURCE_DIGEST_ANNOTATION: "sha256:" + "0" * 64})})
    proxy = faulty_proxy(reg.url)
    proxy.delay(0.02, r"/manifests/")
    instance = Instance.objects.create(name="no-orm-in-threads", url=proxy.url)
    opened = []  # the threads that opened a database connection (Django keeps one per thread)

    def note(**kwargs):
        opened.append(threading.current_thread().name)

    def query_elsewhere():
        try:
            return Instance.objects.filter(pk=instance.pk).exists()
        finally:
            connection.close()

    connection_created.connect(note)
    try:
        with ThreadPoolExecutor(1, thread_name_prefix="probe") as probe:  # the probe notices a thread's query
            probe.submit(query_elsewhere).result()
        assert opened and opened[0].startswith("probe")
        opened.clear()
        settings.APPARATE_IMAGES_REFRESH_CONCURRENCY = 8
        catalogue.refresh_images(instance)
        report = catalogue.refresh_images(instance)  # rows known now: the unchanged path too
    finally:
        connection_created.disconnect(note)
    assert (report.tags, report.twins, report.errors) == (12, 1, [])
    assert proxy.peak_in_flight("HEAD") > 1  # the HEADs did come from the pool
    assert not any(name.startswith("images-refresh") for name in opened), opened


@pytest.mark.parametrize("value", ["0", "33", "eight", "-1"])
def test_a_concurrency_out_of_range_stops_the_start(value, tmp_path):
    result = subprocess.run([sys.executable, "-c", "import console.settings"], capture_output=True, text=True,
                            timeout=60, env={**os.environ, "APPARATE_VAR_DIR": str(tmp_path),
                                             "APPARATE_IMAGES_REFRESH_CONCURRENCY": value})
    assert result.returncode != 0
    assert (f"ImproperlyConfigured: APPARATE_IMAGES_REFRESH_CONCURRENCY must be a whole number from 1 to 32, "
            f"not '{value}'.") in result.stderr
