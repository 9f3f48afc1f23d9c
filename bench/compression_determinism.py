"""Reproduction: does a compression profile give the same eStargz bytes in every run, with any
number of workers, and on every CPU? (docs/isal-determinism.md records what it found.)

Builds a mixed layer (real source text, incompressible data, a long run of directory headers, many
tiny files) and converts it with each profile:

- natively, `--runs` times in fresh processes (their heaps hold other garbage, the libraries are
  loaded anew) with 1, 2 and 4 compression workers;
- under `qemu-x86_64 -cpu MODEL` for each `--cpus` model, when qemu-user is installed. The model
  decides which instruction-set extensions the process sees, and so which code the libraries pick
  at run time: core2duo (SSE2-SSSE3, no SSE4.2), Nehalem (SSE4.2), Haswell (AVX2). QEMU's TCG
  has no AVX-512, so the native run stands in for that when the host has it.

It prints, per profile, the distinct blob digests seen natively and the digest per CPU model, and
whether they all agree. Nothing is timed.

    .venv/bin/python bench/compression_determinism.py [--size-mb 8] [--runs 3] [--cpus core2duo,Nehalem,Haswell]
"""

import argparse
import hashlib
import io
import json
import os
import random
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROFILES = {"zlib-ng 2": ("zlib-ng", 2), "zlib-ng 9": ("zlib-ng", 9), "isal 0": ("isal", 0), "isal 1": ("isal", 1),
            "isal 2": ("isal", 2), "isal 3": ("isal", 3)}
WORKERS = (1, 2, 4)


def build_layer(path: str, size_mb: int) -> None:
    """Half real text (the standard library's sources), a quarter random bytes, a run of 4,000
    directory headers and 600 tiny files; deterministic."""
    rng = random.Random(7)
    stdlib = sysconfig.get_paths()["stdlib"]
    sources = sorted(os.path.join(d, n) for d, _, names in os.walk(stdlib) for n in names if n.endswith(".py"))
    target = size_mb << 20
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        def add(name: str, data: bytes | None) -> None:
            info = tarfile.TarInfo(name)
            info.mtime = 1700000000
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))

        for index in range(4000):
            add(f"usr/share/d{index}", None)
        text = 0
        for index, source in enumerate(sources):
            if text >= target // 2:
                break
            with open(source, "rb") as handle:
                data = handle.read()
            add(f"usr/lib/py/{index}.py", data)
            text += len(data)
        for index in range(8):
            add(f"opt/blob{index}.bin", rng.randbytes(target // 32))
        for index in range(600):
            add(f"etc/tiny/{index}", b"%d\n" % rng.randrange(10 ** 9))


def child(profile: str, workers: int, layer: str) -> None:
    """In a child process: convert and print the blob digest and the profile's cache key."""
    sys.path.insert(0, ROOT)
    from converter.estargz import LayerOptions, convert_layer

    compressor, level = PROFILES[profile]
    options = LayerOptions(compressor=compressor, level=level, workers=workers, chunk_size=1 << 20)
    out = io.BytesIO()
    with open(layer, "rb") as source:
        result = convert_layer(source, out, options)
    print(json.dumps({"digest": result.digest, "cache_key": options.cache_key()}))


def run(command: list[str]) -> dict:
    proc = subprocess.run(command, capture_output=True, text=True, timeout=3600)
    if proc.returncode:
        raise SystemExit(f"{' '.join(command)} failed: {proc.stderr.strip()[-500:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def host_features() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            flags = next(line for line in handle if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return "unknown"
    return ", ".join(flag for flag in ("sse4_2", "avx2", "avx512f", "avx512vbmi") if flag in flags) or "none of note"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=8, help="uncompressed layer size (default 8)")
    parser.add_argument("--runs", type=int, default=3, help="fresh native processes per worker count (default 3)")
    parser.add_argument("--cpus", default="core2duo,Nehalem,Haswell", help="qemu CPU models, comma-separated")
    parser.add_argument("--profiles", default=",".join(PROFILES), help="profiles to try, comma-separated")
    parser.add_argument("--child", nargs=3, metavar=("PROFILE", "WORKERS", "LAYER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]), args.child[2])
        return

    profiles = args.profiles.split(",")
    qemu = shutil.which("qemu-x86_64")
    cpus = [cpu for cpu in args.cpus.split(",") if cpu] if qemu else []
    script = [sys.executable, os.path.abspath(__file__), "--child"]
    with tempfile.TemporaryDirectory(prefix="apparate-determinism-") as directory:
        layer = os.path.join(directory, "layer.tar")
        build_layer(layer, args.size_mb)
        with open(layer, "rb") as handle:
            layer_digest = hashlib.sha256(handle.read()).hexdigest()[:12]
        print(f"layer: {os.path.getsize(layer) / 1e6:.1f} MB tar (sha256 {layer_digest}); host CPU: {host_features()}; "
              f"qemu: {qemu or 'not installed (apt-get install qemu-user)'}\n", flush=True)
        rows = []
        for profile in profiles:
            native = {}
            for workers in WORKERS:
                for _ in range(args.runs):
                    report = run([*script, profile, str(workers), layer])
                    native.setdefault(report["digest"], []).append(workers)
            emulated = {cpu: run([qemu, "-cpu", cpu, *script, profile, "1", layer]) for cpu in cpus}
            rows.append((profile, native, emulated, report["cache_key"]))
            digests = set(native) | {report["digest"] for report in emulated.values()}
            print(f"{profile}: {len(native)} distinct native digest(s) over {args.runs * len(WORKERS)} runs; "
                  + ", ".join(f"{cpu} {report['digest'][7:19]}" for cpu, report in emulated.items())
                  + f"; native {next(iter(native))[7:19]} -> {'SAME everywhere' if len(digests) == 1 else 'DIFFERS'}",
                  flush=True)

    print(f"\n{'profile':<11}{'native runs':>13}" + "".join(f"{cpu:>16}" for cpu in ["native", *cpus]) + "  verdict")
    for profile, native, emulated, _ in rows:
        base = next(iter(native))
        cells = [base[7:19]] + [report["digest"][7:19] if report["digest"] != base else "= native"
                                for report in emulated.values()]
        same_runs = "all equal" if len(native) == 1 else f"{len(native)} differ"
        verdict = "deterministic" if len(native) == 1 and all(r["digest"] == base for r in emulated.values()) else (
            "same per CPU, differs across CPUs" if len(native) == 1 else "differs between runs")
        print(f"{profile:<11}{same_runs:>13}" + "".join(f"{cell:>16}" for cell in cells) + f"  {verdict}")


if __name__ == "__main__":
    main()
