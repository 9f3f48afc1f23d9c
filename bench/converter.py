"""Benchmark of the eStargz layer converter against same-run baselines.

Generates a mixed layer (half incompressible random data, half text-like data, many files of
varied sizes, some directories and symlinks) as tar+gzip in a temp dir, then runs, each in a
fresh child process so peak RSS is measured per run (os.wait4):

The text half is real source code (the Python standard library), not random words: zlib-ng's
level 9 is ~4% worse than Go's on Zipf-random words but 0.4-2.5% better on real code and
binaries, so synthetic text would misrepresent the size comparison.

- estargz:        our converter, zlib-ng at --level (default 9), all cores
- baseline:       plain gunzip + gzip of the same layer at the same level with the same library,
                  one stream, one thread (what "recompress the layer" costs without eStargz)
- estargz fast:   our fast mode (converter.estargz.PROFILES["fast"]: isal level 2)
- baseline fast:  gunzip + single-stream gzip with the fast profile's library and level
- estargz zlib-ng 2: zlib-ng level 2, the fast profile before isal's determinism was settled
                  (docs/isal-determinism.md), for comparison
- go reference:   containerd's estargz.Build at gzip.BestCompression (GOMAXPROCS = cores), when
                  Go and the Debian package are installed (built offline in GOPATH mode)

CPU s is user + system time of the whole child process (all threads, including interpreter
startup), a measure of the work done that other load on the machine barely changes; on an idle
machine a run's wall time is at least its CPU time divided by the cores it can use.

MB/s are megabytes (10^6) of uncompressed layer (the input tar) per second of wall time. With
--repeat N every run is repeated N times, interleaved (one round of all runs, then the next), and
the median time is reported, so load from other processes hits all runs alike. Peak RSS is the
largest of the repetitions, measured for the child process alone (wait4).

    .venv/bin/python bench/converter.py [--size-mb 256] [--level 9] [--repeat 3] [--no-go]
"""

import argparse
import io
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOCODE = "/usr/share/gocode"
GO_REFERENCE = r"""
package main

import (
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/containerd/stargz-snapshotter/estargz"
)

func main() {
	f, err := os.Open(os.Args[1])
	if err != nil {
		panic(err)
	}
	st, _ := f.Stat()
	start := time.Now()
	rc, err := estargz.Build(io.NewSectionReader(f, 0, st.Size()), estargz.WithCompressionLevel(gzip.BestCompression))
	if err != nil {
		panic(err)
	}
	out, err := os.Create(os.Args[2])
	if err != nil {
		panic(err)
	}
	n, err := io.Copy(out, rc)
	if err != nil {
		panic(err)
	}
	rc.Close()
	out.Close()
	fmt.Printf("{\"seconds\": %f, \"output_size\": %d}\n", time.Since(start).Seconds(), n)
}
"""


# -- layer generation -------------------------------------------------------------------------


def text_corpus(rng: random.Random, size: int) -> bytes:
    """Text-like bytes: the Python standard library's own sources (real code and prose, like the
    compressible part of a container layer), topped up with synthetic lines if there are too few."""
    stdlib = sysconfig.get_paths()["stdlib"]
    parts, total = [], 0
    for directory, subdirs, names in os.walk(stdlib):
        subdirs.sort()
        for name in sorted(names):
            if name.endswith((".py", ".txt", ".rst")) and total < size:
                with open(os.path.join(directory, name), "rb") as handle:
                    data = handle.read()
                parts.append(data)
                total += len(data)
    words = [f"word{index}" for index in range(5000)]
    while total < size:
        line = (" ".join(rng.choices(words, k=12)) + "\n").encode()
        parts.append(line)
        total += len(line)
    return b"".join(parts)[:size]


def generate_layer(directory: str, size_mb: int, seed: int = 42) -> tuple[str, int, int]:
    """Write layer.tar.gz; return its path, the uncompressed tar size and the number of files."""
    rng = random.Random(seed)
    corpus = text_corpus(rng, 8 << 20)
    target = size_mb << 20
    tar_path = os.path.join(directory, "layer.tar")
    files = 0
    with tarfile.open(tar_path, "w", format=tarfile.PAX_FORMAT) as tar:
        sizes = {"random": 0, "text": 0}
        while sum(sizes.values()) < target:
            kind = min(sizes, key=sizes.get)  # keep the halves even
            size = min(int(10 ** rng.uniform(2, 7.3)), target // 2 - sizes[kind] + 1)
            if kind == "random":
                data = rng.randbytes(size)
            else:
                parts, need = [], size
                while need:
                    start = rng.randrange(0, len(corpus) - 1)
                    part = corpus[start:start + need]
                    parts.append(part)
                    need -= len(part)
                data = b"".join(parts)
            folder = f"usr/share/{kind}/d{files % 97}"
            if files % 97 == files:
                info = tarfile.TarInfo(folder)
                info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 1700000000
                tar.addfile(info)
            info = tarfile.TarInfo(f"{folder}/file{files}.{'bin' if kind == 'random' else 'txt'}")
            info.size, info.mode, info.mtime, info.uname, info.gname = size, 0o644, 1700000000, "root", "root"
            tar.addfile(info, io.BytesIO(data))
            if files % 50 == 0:
                link = tarfile.TarInfo(f"{folder}/link{files}")
                link.type, link.linkname = tarfile.SYMTYPE, f"file{files}"
                tar.addfile(link)
            sizes[kind] += size
            files += 1
    tar_size = os.path.getsize(tar_path)
    gz_path = tar_path + ".gz"
    from zlib_ng import gzip_ng_threaded  # registries hold tar+gzip; level 6 like docker

    with open(tar_path, "rb") as src, gzip_ng_threaded.open(gz_path, "wb", compresslevel=6) as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    os.unlink(tar_path)
    return gz_path, tar_size, files


# -- measured runs (each in a child process) ----------------------------------------------------


def child(mode: str, source: str, output: str, level: int) -> None:
    """Runs inside a child process; prints {"seconds", "output_size"}."""
    sys.path.insert(0, ROOT)
    start = time.perf_counter()
    if mode in ("estargz", "estargz-fast", "estargz-zlib-ng-2"):
        from converter.estargz import PROFILES, LayerOptions, convert_layer

        options = {"estargz": LayerOptions(level=level), "estargz-fast": LayerOptions(**PROFILES["fast"]),
                   "estargz-zlib-ng-2": LayerOptions(compressor="zlib-ng", level=2)}[mode]
        with open(source, "rb") as src, open(output, "wb") as dst:
            result = convert_layer(src, dst, options)
        size = result.size
    else:
        from isal import igzip
        from zlib_ng import gzip_ng

        from converter.estargz import PROFILES

        compressor, level = ("zlib-ng", level) if mode == "baseline" else (
            PROFILES["fast"]["compressor"], PROFILES["fast"]["level"])
        writer = gzip_ng.open if compressor == "zlib-ng" else igzip.open
        with gzip_ng.open(source, "rb") as src, writer(output, "wb", compresslevel=level) as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        size = os.path.getsize(output)
    print(json.dumps({"seconds": time.perf_counter() - start, "output_size": size}))


def measure(command: list[str], env: dict | None = None) -> dict:
    """Run a child, return its JSON report plus its peak RSS (from wait4, for that child only)."""
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(command, stdout=out, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode:
            raise SystemExit(f"{command} failed with exit code {proc.returncode}")
        out.seek(0)
        report = json.loads(out.read())
    report["peak_rss_mb"] = usage.ru_maxrss / 1024
    report["cpu_seconds"] = usage.ru_utime + usage.ru_stime  # the whole child, so also startup
    return report


def build_go_reference(directory: str) -> str | None:
    if shutil.which("go") is None or not os.path.isdir(f"{GOCODE}/src/github.com/containerd/stargz-snapshotter"):
        return None
    source = os.path.join(directory, "goref")
    os.makedirs(source)
    with open(os.path.join(source, "main.go"), "w") as handle:
        handle.write(GO_REFERENCE)
    env = {**os.environ, "GO111MODULE": "off", "GOPATH": f"{directory}/gopath:{GOCODE}", "GOFLAGS": "",
           "GOPROXY": "off", "GOCACHE": os.path.join(directory, "gocache")}
    binary = os.path.join(directory, "goref-bin")
    proc = subprocess.run(["go", "build", "-o", binary, "."], cwd=source, env=env, capture_output=True, text=True)
    if proc.returncode:
        print(f"(go reference not built: {proc.stderr.strip()[:200]})")
        return None
    return binary


OURS, BASE = "estargz (zlib-ng)", "baseline (zlib-ng)"
FAST, BASE_FAST, ZLIB_NG_2 = "estargz fast (isal 2)", "baseline fast (isal 2)", "estargz zlib-ng 2"
GO = "go reference (level 9)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=256, help="uncompressed layer size (default 256)")
    parser.add_argument("--level", type=int, default=9, help="zlib-ng level for estargz and baseline (default 9)")
    parser.add_argument("--repeat", type=int, default=1, help="rounds of runs; the median time is reported")
    parser.add_argument("--no-go", action="store_true", help="skip the Go reference converter")
    parser.add_argument("--child", nargs=4, metavar=("MODE", "IN", "OUT", "LEVEL"), help=argparse.SUPPRESS)
    parser.add_argument("--generate", metavar="DIR", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.generate:
        print(json.dumps(generate_layer(args.generate, args.size_mb)))
        return
    if args.child:
        mode, source, output, level = args.child
        child(mode, source, output, int(level))
        return

    with tempfile.TemporaryDirectory(prefix="apparate-bench-") as directory:
        print(f"generating a {args.size_mb} MB mixed layer ...", flush=True)
        # In a child: a forked child starts with its parent's peak RSS, so the parent stays small.
        generated = subprocess.run([sys.executable, os.path.abspath(__file__), "--size-mb", str(args.size_mb),
                                    "--generate", directory], check=True, capture_output=True, text=True)
        layer, tar_size, files = json.loads(generated.stdout)
        gz_size = os.path.getsize(layer)
        load_before = os.getloadavg()[0]
        print(f"layer: {tar_size / 1e6:.1f} MB tar, {files} files, {gz_size / 1e6:.1f} MB as tar+gzip level 6; "
              f"{os.cpu_count()} CPUs; load average {load_before:.2f}\n", flush=True)
        output = os.path.join(directory, "out")
        commands = {}
        for name, mode in ((OURS, "estargz"), (BASE, "baseline"), (FAST, "estargz-fast"), (BASE_FAST, "baseline-fast"),
                           (ZLIB_NG_2, "estargz-zlib-ng-2")):
            commands[name] = ([sys.executable, os.path.abspath(__file__), "--child", mode, layer, output,
                               str(args.level)], None)
        binary = None if args.no_go else build_go_reference(directory)
        if binary:
            env = {**os.environ, "GOMAXPROCS": str(os.cpu_count()), "TMPDIR": directory}
            commands[GO] = ([binary, layer, output], env)
        samples: dict[str, list[dict]] = {name: [] for name in commands}
        for round_ in range(args.repeat):
            for name, (command, env) in commands.items():
                samples[name].append(measure(command, env))
            print(f"  round {round_ + 1}/{args.repeat}: "
                  + ", ".join(f"{name.split(' (')[0]} {samples[name][-1]['seconds']:.2f}s" for name in commands),
                  flush=True)
        load_after = os.getloadavg()[0]

    runs = {name: {"seconds": statistics.median(run["seconds"] for run in rounds),
                   "peak_rss_mb": max(run["peak_rss_mb"] for run in rounds),
                   "cpu_seconds": statistics.median(run["cpu_seconds"] for run in rounds),
                   "output_size": rounds[-1]["output_size"]}
            for name, rounds in samples.items()}
    go = runs.get(GO)

    def mb_s(run: dict) -> float:
        return tar_size / run["seconds"] / 1e6

    print(f"\nmedian of {args.repeat} round(s); load average {load_before:.2f} before, {load_after:.2f} after")
    print(f"{'run':<24}{'seconds':>9}{'MB/s':>9}{'CPU s':>8}{'peak RSS MB':>13}{'output MB':>11}{'out/in':>8}"
          + (f"{'size vs go':>12}" if go else ""))
    for name, run in runs.items():
        print(f"{name:<24}{run['seconds']:>9.2f}{mb_s(run):>9.1f}{run['cpu_seconds']:>8.2f}{run['peak_rss_mb']:>13.1f}"
              f"{run['output_size'] / 1e6:>11.2f}{run['output_size'] / tar_size:>8.3f}"
              + (f"{100 * (run['output_size'] / go['output_size'] - 1):>+11.2f}%" if go else ""))

    ours, base, fast, base_fast = runs[OURS], runs[BASE], runs[FAST], runs[BASE_FAST]
    print(f"\nlevel {args.level}: {mb_s(ours):.1f} MB/s = {base['seconds'] / ours['seconds']:.2f}x the single-stream "
          f"baseline ({mb_s(base):.1f} MB/s); blob {100 * (ours['output_size'] / base['output_size'] - 1):+.2f}% "
          f"vs one gzip stream; peak RSS {ours['peak_rss_mb']:.0f} MB (target < 200 MB)")
    print(f"fast mode: {mb_s(fast):.1f} MB/s = {base_fast['seconds'] / fast['seconds']:.2f}x its single-stream "
          f"baseline ({mb_s(base_fast):.1f} MB/s); blob {100 * (fast['output_size'] / ours['output_size'] - 1):+.2f}% "
          f"vs level {args.level}; peak RSS {fast['peak_rss_mb']:.0f} MB")
    previous = runs[ZLIB_NG_2]
    print(f"zlib-ng level 2 (the fast profile before): {mb_s(previous):.1f} MB/s; fast mode is "
          f"{previous['seconds'] / fast['seconds']:.2f}x its throughput; blob "
          f"{100 * (previous['output_size'] / ours['output_size'] - 1):+.2f}% vs level {args.level}")
    if go:
        print(f"go reference: {mb_s(go):.1f} MB/s; estargz level {args.level} = "
              f"{go['seconds'] / ours['seconds']:.2f}x its throughput (target >= 2x), "
              f"blob {100 * (ours['output_size'] / go['output_size'] - 1):+.2f}% (target within 1%); "
              f"fast mode = {go['seconds'] / fast['seconds']:.2f}x; "
              f"peak RSS {ours['peak_rss_mb']:.0f} MB vs {go['peak_rss_mb']:.0f} MB")


if __name__ == "__main__":
    main()
