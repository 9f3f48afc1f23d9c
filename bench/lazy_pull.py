"""Benchmark: a lazy pull of an accelerated twin against a normal full pull of its original.

Everything is real and local: Debian's docker-registry, the project's converter making the eStargz
twin, two private containerd 1.6 instances (one set up by the node agent with the stargz snapshotter
built from Debian's source, one left as installed), runc, and a counting proxy in front of the
registry. Each side pulls through containerd's CRI image service (the kubelet's path) and then
runs a container that prints one small file; the clock runs from the pull request to that output.

- lazy:     the agent's node pulls `<tag>-apparate` by the registry's host name (plain HTTP thanks to
            the agent's hosts.toml), background fetch off, so only what the start reads is fetched;
- baseline: a node without the agent pulls the original tag by loopback address: every layer is
            downloaded and unpacked before the container starts.

Printed: layer bytes served by the proxy, time to first output, and lazy/baseline ratios. With
--rate-mbps the proxy paces each response to that many MB per second (a slower link; parallel
layer downloads each get that rate).

    .venv/bin/python bench/lazy_pull.py [--size-mb 48] [--rate-mbps 0] [--repeat 3]

Needs root (FUSE, runc), Debian's containerd, runc, fuse3, busybox-static and the Go toolchain with
golang-github-containerd-stargz-snapshotter-dev (the snapshotter daemon is built on first use).
"""

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent.run import install_from  # noqa: E402
from tests.support.counting_proxy import CountingProxy  # noqa: E402
from tests.support.gobuild import build_go  # noqa: E402
from tests.support.node import TestNode, loopback_name, push_lazy_image  # noqa: E402
from tests.support.registry import start_registry  # noqa: E402

STARGZ_GRPC = ROOT / "tests" / "agent" / "stargz-grpc"


def first_output(node: TestNode, ref: str, snapshotter: str, name: str, expected: bytes) -> float:
    started = time.monotonic()
    node.cri().pull(ref)
    output = node.run(ref, name, "/bin/cat", "/data/first.txt", snapshotter=snapshotter)
    elapsed = time.monotonic() - started
    assert output.encode() == expected, output
    return elapsed


def one_round(work: Path, binary: Path, registry, image, rate: float | None, round_number: int) -> dict:
    proxy = CountingProxy(registry.url, rate=rate)
    lazy_node = baseline_node = None
    try:
        lazy_node = TestNode.create(Path(tempfile.mkdtemp(prefix="apparate-bench-")), binary)
        host = f"{loopback_name()}:{proxy.port}"
        lazy_node.config_dir.mkdir()
        (lazy_node.config_dir / "agent.json").write_text(
            f'{{"registries": [{{"url": "http://{host}"}}], "no_background_fetch": true}}')
        status = install_from(lazy_node.agent(), lazy_node.config_dir)
        assert status.ready, status
        expected = image.files["data/first.txt"]
        lazy_seconds = first_output(lazy_node, image.ref(host), "stargz", f"lazy{round_number}", expected)
        served = proxy.blob_bytes()
        lazy_bytes = sum(served.get(digest, 0) for digest in image.layer_sizes)
        proxy.reset()
        baseline_node = TestNode.create(Path(tempfile.mkdtemp(prefix="apparate-bench-")), binary)
        baseline_seconds = first_output(baseline_node, image.ref(f"127.0.0.1:{proxy.port}", twin=False),
                                        "overlayfs", f"full{round_number}", expected)
        served = proxy.blob_bytes()
        baseline_bytes = sum(served.get(digest, 0) for digest in image.source_layer_sizes)
    finally:
        proxy.stop()
        for node in (lazy_node, baseline_node):
            if node is not None:
                node.close()
                shutil.rmtree(node.directory, ignore_errors=True)
    return {"lazy_s": lazy_seconds, "lazy_bytes": lazy_bytes, "full_s": baseline_seconds,
            "full_bytes": baseline_bytes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=48, help="incompressible data in the image (MiB)")
    parser.add_argument("--rate-mbps", type=float, default=0, help="pace each response to this many MB/s (0: no limit)")
    parser.add_argument("--repeat", type=int, default=3)
    arguments = parser.parse_args()
    binary = build_go(STARGZ_GRPC)
    with tempfile.TemporaryDirectory(prefix="apparate-bench-") as temporary:
        work = Path(temporary)
        registry = start_registry(work / "registry")
        try:
            # 4/5 of the data in the big layer, 1/5 in the last one (see push_lazy_image).
            image = push_lazy_image(work, registry.url, "bench/app", noise_size=(arguments.size_mb << 20) * 4 // 5)
            rate = arguments.rate_mbps * 1e6 if arguments.rate_mbps else None
            rounds = [one_round(work, binary, registry, image, rate, n) for n in range(arguments.repeat)]
        finally:
            registry.process.terminate()
            registry.process.wait(timeout=10)
    twin_size, source_size = sum(image.layer_sizes.values()), sum(image.source_layer_sizes.values())
    lazy_s = statistics.median(r["lazy_s"] for r in rounds)
    full_s = statistics.median(r["full_s"] for r in rounds)
    lazy_bytes = statistics.median(r["lazy_bytes"] for r in rounds)
    full_bytes = statistics.median(r["full_bytes"] for r in rounds)
    link = f"{arguments.rate_mbps:g} MB/s" if arguments.rate_mbps else "loopback, unlimited"
    print(f"image: 3 layers, original {source_size / 1e6:.1f} MB, eStargz twin {twin_size / 1e6:.1f} MB; "
          f"link: {link}; median of {arguments.repeat}")
    print(f"{'':10} {'layer bytes fetched':>22} {'first output (s)':>18}")
    print(f"{'lazy':10} {lazy_bytes:>14,.0f} ({lazy_bytes / twin_size:5.1%}) {lazy_s:>18.2f}")
    print(f"{'full pull':10} {full_bytes:>14,.0f} ({full_bytes / source_size:5.1%}) {full_s:>18.2f}")
    print(f"ratio lazy/full: bytes {lazy_bytes / full_bytes:.3f}, time {lazy_s / full_s:.2f}")


if __name__ == "__main__":
    main()
