"""Conformance: the reference Go reader (containerd's estargz 0.12, Debian package) opens our
blobs, verifies the TOC digest, and reads and verifies every file and chunk."""

import base64
import hashlib
import io
import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from converter.estargz import LayerOptions, convert_layer
from tests.support.gobuild import build_go

from .estargz_support import Entry, build_tar
from .test_estargz import PRIORITY_LAYER, features

pytestmark = pytest.mark.go

SOURCE = Path(__file__).parent / "go" / "verify"


@pytest.fixture(scope="session")
def go_verify():
    """tests/converter/go/verify, built offline against Debian's Go packages (cached across runs)."""
    return build_go(SOURCE)


def verify(binary, tmp_path, layer: bytes, **options):
    blob = tmp_path / "blob"
    with open(blob, "wb") as out:
        result = convert_layer(io.BytesIO(layer), out, LayerOptions(**options))
    proc = subprocess.run([str(binary), str(blob), result.toc_digest], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["tocDigest"] == result.toc_digest
    return report


def expected_files(entries: list[Entry]) -> dict[str, str]:
    """name → sha256 of the content the reader must return (hardlinks read as their target)."""
    contents = {}
    for entry in entries:
        name = entry.name.strip("/").removeprefix("./")
        if entry.type == tarfile.REGTYPE:
            contents[name] = "sha256:" + hashlib.sha256(entry.data).hexdigest()
        elif entry.type == tarfile.LNKTYPE:
            contents[name] = contents[entry.linkname]
    return contents


def test_reference_reader_verifies_every_feature(go_verify, tmp_path):
    entries = features()
    report = verify(go_verify, tmp_path, build_tar(entries), chunk_size=4096)
    files = report["files"]
    for name, digest in expected_files(entries).items():
        assert files[name]["sha256"] == digest, name
    assert files["usr/bin/tool"]["mode"] == 0o4755
    assert files["tmp"]["mode"] == 0o1777
    assert files["dev/null"]["type"] == "char"
    assert (files["dev/null"]["devMajor"], files["dev/null"]["devMinor"]) == (1, 3)
    assert files["dev/loop0"]["type"] == "block" and files["run/fifo"]["type"] == "fifo"
    assert files["usr/bin/sym"] == files["usr/bin/sym"] | {"type": "symlink", "linkName": "../../etc/conf"}
    assert files["etc/conf"]["xattrs"]["security.capability"] == base64.b64encode(
        b"\x01\x00\x00\x02\x00\x20\x00\x00").decode()
    assert files["etc/conf"]["modtime"] == "2009-02-13T23:31:30Z"
    assert (files["tmp/sgid"]["uid"], files["tmp/sgid"]["uname"]) == (1000, "app")
    assert "etc/.wh..wh..opq" in files and "etc/.wh.removed" in files
    assert ".no.prefetch.landmark" in files


def test_reference_reader_verifies_chunks_of_a_big_file(go_verify, tmp_path):
    data = os.urandom(3 * (1 << 20) + 777)
    entries = [Entry("big", data=data), Entry("exact", data=os.urandom(1 << 20)), Entry("small", data=b"s")]
    report = verify(go_verify, tmp_path, build_tar(entries), chunk_size=1 << 20)
    assert report["files"]["big"]["chunks"] == 4
    assert report["files"]["exact"]["chunks"] == 1
    assert report["chunksVerified"] == 4 + 1 + 1 + 1  # with the landmark
    assert report["files"]["big"]["sha256"] == "sha256:" + hashlib.sha256(data).hexdigest()


def test_reference_reader_verifies_prioritized_and_fast_mode_blobs(go_verify, tmp_path):
    layer = build_tar(PRIORITY_LAYER)
    for options in ({"prioritized_files": ("usr/bin/app-link", "var/log")}, {"compressor": "isal", "level": 1}):
        report = verify(go_verify, tmp_path, layer, chunk_size=4096, **options)
        for name, digest in expected_files(PRIORITY_LAYER).items():
            assert report["files"][name]["sha256"] == digest, (options, name)


def test_reference_reader_rejects_a_wrong_toc_digest(go_verify, tmp_path):
    blob = tmp_path / "blob"
    with open(blob, "wb") as out:
        convert_layer(io.BytesIO(build_tar([Entry("a", data=b"a")])), out)
    proc = subprocess.run([str(go_verify), str(blob), "sha256:" + "0" * 64], capture_output=True, text=True)
    assert proc.returncode == 1 and "VerifyTOC: invalid TOC JSON" in proc.stderr
