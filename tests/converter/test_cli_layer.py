"""`python -m converter layer`: JSON output, options, exit codes, no partial output."""

import gzip
import hashlib
import json
import subprocess
import sys
import tarfile

import pytest

from converter.cli import EXIT_BAD_INPUT, EXIT_USAGE
from converter.startup import startup_bytes

from .estargz_support import Entry, build_tar, check_chunks, gunzip, read_toc


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "converter", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=120)


LAYER = [Entry("etc/", tarfile.DIRTYPE), Entry("etc/hosts", data=b"127.0.0.1 localhost\n"),
         Entry("bin/", tarfile.DIRTYPE), Entry("bin/app", data=b"app" * 5000)]


def test_layer_prints_one_json_object_describing_the_blob(tmp_path):
    source = tmp_path / "layer.tar.gz"
    source.write_bytes(gzip.compress(build_tar(LAYER)))
    out = tmp_path / "out.blob"
    proc = run("layer", source, out, "--chunk-size", "4K", "--level", "6")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert set(result) == {"digest", "size", "diff_id", "toc_digest", "uncompressed_size", "startup_bytes",
                           "prioritized"}
    blob = out.read_bytes()
    assert result["startup_bytes"] == startup_bytes(lambda start, length: blob[start:start + length], len(blob)).total
    assert result["prioritized"] == []
    assert result["digest"] == "sha256:" + hashlib.sha256(blob).hexdigest()
    assert result["size"] == len(blob)
    assert result["diff_id"] == "sha256:" + hashlib.sha256(gunzip(blob)).hexdigest()
    assert result["uncompressed_size"] == len(gunzip(blob))
    assert result["toc_digest"] == "sha256:" + hashlib.sha256(read_toc(blob)[1]).hexdigest()
    assert [e for e in read_toc(blob)[0]["entries"] if e["type"] == "chunk"]  # 15000 bytes in 4K chunks
    assert check_chunks(blob) == 6


@pytest.fixture
def layer_tar(tmp_path):
    source = tmp_path / "layer.tar"
    source.write_bytes(build_tar(LAYER))
    return source


def test_layer_prioritized_and_fast_mode(tmp_path, layer_tar):
    source = layer_tar
    out = tmp_path / "out.blob"
    proc = run("layer", source, out, "--fast", "--prioritized", "/bin/app", "etc/hosts")
    assert proc.returncode == 0, proc.stderr
    with tarfile.open(out) as tar:
        assert tar.getnames()[:5] == ["bin", "bin/app", "etc", "etc/hosts", ".prefetch.landmark"]
    again = tmp_path / "again.blob"
    # --fast is the named profile: isal at level 2, the same bytes as asking for them
    assert run("layer", source, again, "--compressor", "isal", "--level", "2",
               "--prioritized", "bin/app", "--prioritized", "etc/hosts").stdout == proc.stdout
    best = run("layer", source, tmp_path / "best.blob", "--prioritized", "/bin/app", "etc/hosts")
    assert json.loads(best.stdout)["digest"] != json.loads(proc.stdout)["digest"]


def test_bad_input_exits_with_its_own_code_and_leaves_no_output(tmp_path):
    source = tmp_path / "evil.tar"
    source.write_bytes(build_tar([Entry("../../escape", data=b"x")]))
    out = tmp_path / "out.blob"
    proc = run("layer", source, out)
    assert proc.returncode == EXIT_BAD_INPUT
    assert proc.stderr == "error: entry '../../escape' climbs out of the layer root with '..'\n"
    assert proc.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.tar"]


def test_missing_input_and_missing_prioritized_file_are_bad_input(tmp_path, layer_tar):
    proc = run("layer", tmp_path / "nope.tar", tmp_path / "out.blob")
    assert proc.returncode == EXIT_BAD_INPUT and "cannot read" in proc.stderr
    proc = run("layer", layer_tar, tmp_path / "out.blob", "--prioritized", "etc/nope")
    assert proc.returncode == EXIT_BAD_INPUT and "prioritized file 'etc/nope' is not in the layer" in proc.stderr
    assert not (tmp_path / "out.blob").exists()


def test_missing_prioritized_files_are_skipped_with_a_warning_when_asked(tmp_path, layer_tar):
    out = tmp_path / "out.blob"
    proc = run("layer", layer_tar, out, "--prioritized", "/etc/nope", "etc/hosts", "--skip-missing")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "warning: prioritized file 'etc/nope' is not in the layer; skipped\n"
    assert json.loads(proc.stdout)["prioritized"] == ["etc/hosts"]
    with tarfile.open(out) as tar:
        assert tar.getnames()[:3] == ["etc", "etc/hosts", ".prefetch.landmark"]


def test_invalid_options_are_usage_errors(tmp_path, layer_tar):
    source = layer_tar
    proc = run("layer", source, tmp_path / "out.blob", "--compressor", "isal", "--level", "9")
    assert proc.returncode == EXIT_USAGE and "level 9 is not valid for isal" in proc.stderr
    proc = run("layer", source, tmp_path / "out.blob", "--chunk-size", "lots")
    assert proc.returncode == EXIT_USAGE and "not a size" in proc.stderr
    assert not (tmp_path / "out.blob").exists()


def test_stdin_input(tmp_path):
    out = tmp_path / "out.blob"
    proc = subprocess.run([sys.executable, "-m", "converter", "layer", "-", str(out)],
                          input=gzip.compress(build_tar(LAYER)), capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["size"] == out.stat().st_size
