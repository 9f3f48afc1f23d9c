"""Builds the tests' Go programs offline against Debian's Go packages, once per source version.

`build_go(source_dir)` runs `go build` in GOPATH mode (`GO111MODULE=off`,
`GOPATH=<cache>/gopath:/usr/share/gocode`, no module proxy) and returns the binary. Binaries and
Go's build cache live under the system temp dir, keyed by a hash of the sources, so a second run
(or another session on the same machine) reuses them instead of spending a minute compiling.
"""

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

GOCODE = "/usr/share/gocode"
CACHE = Path(tempfile.gettempdir()) / "apparate-test-go"


def build_go(source_dir: Path, timeout: float = 400) -> Path:
    if shutil.which("go") is None or not os.path.isdir(f"{GOCODE}/src/github.com/containerd/stargz-snapshotter"):
        pytest.fail("golang-go and golang-github-containerd-stargz-snapshotter-dev must be installed "
                    "(listed in .ci/debian-packages)")
    digest = hashlib.sha256()
    for path in sorted(source_dir.rglob("*.go")):
        digest.update(path.relative_to(source_dir).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    binary = CACHE / f"{source_dir.name}-{digest.hexdigest()[:16]}"
    if binary.exists():
        return binary
    CACHE.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "GO111MODULE": "off", "GOPATH": f"{CACHE}/gopath:{GOCODE}", "GOFLAGS": "",
           "GOPROXY": "off", "GOCACHE": str(CACHE / "cache"), "CGO_ENABLED": "0"}
    partial = binary.with_name(f"{binary.name}.{os.getpid()}.partial")
    proc = subprocess.run(["go", "build", "-o", str(partial), "."], cwd=source_dir, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr
    partial.rename(binary)  # only a complete binary ever has the final name
    return binary
