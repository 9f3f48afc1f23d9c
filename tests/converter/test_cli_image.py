"""`python -m converter image` as a user runs it: JSON summary on stdout, a progress bar only on a
terminal, and exit codes that tell bad input from registry failures."""

import json
import os
import pty
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from converter.cli import EXIT_BAD_INPUT, EXIT_OK, EXIT_REGISTRY, EXIT_USAGE
from converter.registry import OCI_MANIFEST
from tests.support.images import Platform, push_image, push_raw, sample_layers, sha256

pytestmark = pytest.mark.registry

ROOT = Path(__file__).resolve().parents[2]
USER, PASSWORD = "alice", "s3cret-pass"


def cli(*args: str, stdin: str = "", stderr=subprocess.PIPE) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "converter", "image", *args], cwd=ROOT, input=stdin,
                          stdout=subprocess.PIPE, stderr=stderr, text=True, timeout=300)


def test_converts_and_prints_a_json_summary_without_a_bar_when_not_a_terminal(registry, tmp_path):
    source_digest = push_image(tmp_path, f"{registry.host}/team/app:1", [Platform(layers=sample_layers(seed=7))])
    run = cli(f"{registry.host}/team/app:1", "--insecure", "--chunk-size", "1M", "--fast")
    assert run.returncode == EXIT_OK, run.stderr
    summary = json.loads(run.stdout)
    assert summary["destination"] == f"{registry.host}/team/app:1-apparate"
    assert summary["source_digest"] == source_digest and summary["layers_converted"] == 3
    assert "\r" not in run.stderr and "layer" not in run.stderr
    inspect = subprocess.run(["skopeo", "inspect", "--tls-verify=false", f"docker://{summary['destination']}"],
                             capture_output=True, text=True, timeout=60)
    assert inspect.returncode == 0 and json.loads(inspect.stdout)["Digest"] == summary["digest"]


def test_progress_bar_is_drawn_on_a_terminal(registry, tmp_path):
    push_image(tmp_path, f"{registry.host}/team/app:1", [Platform(layers=sample_layers(seed=8))])
    controller, terminal = pty.openpty()
    try:
        run = cli(f"{registry.host}/team/app:1", "--insecure", "--fast", stderr=terminal)
        os.close(terminal)
        drawn = b""
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # EIO once the terminal side is closed and drained
                break
            if not chunk:
                break
            drawn += chunk
    finally:
        os.close(controller)
    assert run.returncode == EXIT_OK
    text = drawn.decode()
    for index in (1, 2, 3):
        assert f"linux/amd64 layer {index}/3" in text
    assert "100%" in text and "[##############################]" in text
    assert json.loads(run.stdout)["layers_converted"] == 3


def test_password_from_stdin_and_wrong_password(registry_factory, tmp_path):
    secured = registry_factory(htpasswd=(USER, PASSWORD))
    push_image(tmp_path, f"{secured.host}/team/app:1", credentials=(USER, PASSWORD))
    ok = cli(f"{secured.host}/team/app:1", "--insecure", "--username", USER, "--password-stdin",
             stdin=PASSWORD + "\n")
    assert ok.returncode == EXIT_OK, ok.stderr
    assert json.loads(ok.stdout)["destination"].endswith("/team/app:1-apparate")
    wrong = cli(f"{secured.host}/team/app:2", "--insecure", "--username", USER, "--password-stdin",
                stdin="not-the-password\n")
    assert wrong.returncode == EXIT_REGISTRY
    assert f"refused the credentials of user '{USER}'" in wrong.stderr
    assert "not-the-password" not in wrong.stderr + wrong.stdout and wrong.stdout == ""
    no_stdin = cli(f"{secured.host}/team/app:1", "--insecure", "--username", USER)
    assert no_stdin.returncode == EXIT_USAGE and "--password-stdin" in no_stdin.stderr


def test_exit_codes_tell_bad_input_from_registry_failures(registry, tmp_path):
    push_image(tmp_path, f"{registry.host}/team/app:1")
    bad_reference = cli("not an image", "--insecure")
    assert bad_reference.returncode == EXIT_USAGE and "error:" in bad_reference.stderr
    suffixed = cli(f"{registry.host}/team/app:1-apparate", "--insecure")
    assert suffixed.returncode == EXIT_BAD_INPUT and "already ends with '-apparate'" in suffixed.stderr
    missing = cli(f"{registry.host}/team/app:nope", "--insecure")
    assert missing.returncode == EXIT_REGISTRY and "MANIFEST_UNKNOWN" in missing.stderr
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    refused = cli(f"127.0.0.1:{port}/team/app:1", "--insecure")
    assert refused.returncode == EXIT_REGISTRY and "refused" in refused.stderr

    garbage = b"this is not a tar archive at all" * 40
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": [sha256(garbage)]}}).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(config),
                   "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha256(garbage),
                    "size": len(garbage)}]}).encode()
    push_raw(registry.url, "team/broken", [config, garbage], [("1", OCI_MANIFEST, manifest)])
    broken = cli(f"{registry.host}/team/broken:1", "--insecure")
    assert broken.returncode == EXIT_BAD_INPUT
    assert f"layer {sha256(garbage)}" in broken.stderr and "not a tar" in broken.stderr
    tags = subprocess.run(["skopeo", "list-tags", "--tls-verify=false", f"docker://{registry.host}/team/broken"],
                          capture_output=True, text=True, timeout=60)
    assert json.loads(tags.stdout)["Tags"] == ["1"]


def test_platform_selection_and_layer_cache_file(registry, tmp_path):
    push_image(tmp_path, f"{registry.host}/team/app:1",
               [Platform(), Platform(architecture="arm64", layers=sample_layers(seed=9))])
    cache = tmp_path / "layers.json"
    first = cli(f"{registry.host}/team/app:1", "--insecure", "--platform", "linux/arm64", "--cache", str(cache),
                "--fast")
    assert first.returncode == EXIT_OK, first.stderr
    summary = json.loads(first.stdout)
    assert [p["platform"] for p in summary["platforms"]] == ["linux/arm64"]
    assert summary["layers_converted"] == 3 and cache.exists()
    second = cli(f"{registry.host}/team/app:1", "--insecure", "--platform", "linux/arm64", "--cache", str(cache),
                 "--fast", "--dest", f"{registry.host}/mirror/app:fast")
    assert second.returncode == EXIT_OK, second.stderr
    reused = json.loads(second.stdout)
    assert (reused["layers_converted"], reused["layers_reused"]) == (0, 3)
    assert reused["digest"] == summary["digest"]


def test_prioritized_files_per_image_and_warnings(registry, tmp_path):
    layers = [{"usr/": None, "usr/bin/": None, "usr/bin/python3": b"python\n" * 100},
              {"app/": None, "app/main.py": b"print(1)\n" * 100}]
    push_image(tmp_path, f"{registry.host}/team/app:1", [Platform(layers=layers)])
    run = cli(f"{registry.host}/team/app:1", "--insecure", "--prioritized", "/usr/bin/python3", "/app/main.py",
              "/etc/missing")
    assert run.returncode == EXIT_OK, run.stderr
    summary = json.loads(run.stdout)
    assert [layer["prioritized"] for layer in summary["platforms"][0]["layers"]] == [
        ["/usr/bin/python3"], ["/app/main.py"]]
    warning = "linux/amd64: prioritized file '/etc/missing' is in none of the 2 layers; it is not prioritized"
    assert summary["warnings"] == [warning]
    assert run.stderr == f"warning: {warning}\n"
    platform = summary["platforms"][0]
    assert platform["startup_bytes"] == sum(layer["startup_bytes"] for layer in platform["layers"])
    assert platform["layers_size"] == sum(layer["size"] for layer in platform["layers"])
