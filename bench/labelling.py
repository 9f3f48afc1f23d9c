"""Benchmark: labelling nodes across emulated clusters, beside a same-run baseline of bare PATCHes.

For each database (SQLite always; PostgreSQL when --postgres or a postgres DATABASE_URL is given) a
child process starts N Kubernetes API emulators (tests/support/kube_emulator.py) with M nodes each,
then, for --repeat rounds, times one after the other:
1. the baseline: concurrent merge-PATCHes of every node's labels through the official client
   (clusters.kube.KubeSession, one pool of the same concurrency per cluster), no database;
2. the product: request_labelling + run_label_job (per-node results in the database, retries,
   node rows updated), labelling and unlabelling in turn so that every PATCH changes the node.
It prints the median of each and the median of the per-round ratios, per database.

Usage: .venv/bin/python bench/labelling.py [--clusters 4] [--nodes 500] [--concurrency 16] [--repeat 5]
           [--postgres postgres://postgres@127.0.0.1:5432/bench]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def measure(args) -> dict:
    """One database (DATABASE_URL): every round's baseline and label job times, as a dict."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "console.settings")
    os.environ["CELERY_BROKER_URL"] = "memory://"  # the job runs right here; nothing is left queued
    os.environ["APPARATE_LABEL_CONCURRENCY"] = str(args.concurrency)
    import django

    django.setup()
    from django.core.management import call_command

    from clusters.actions.labelling import request_labelling, run_label_job, select_nodes
    from clusters.actions.sync import sync_nodes
    from clusters.choices import LabelOperation
    from clusters.kube import Connection, KubeSession
    from clusters.models import Cluster, LabelJob
    from tests.support.kube_emulator import KubeEmulator

    call_command("migrate", verbosity=0)
    emulators = []
    for index in range(args.clusters):
        emulator = KubeEmulator().start()
        for n in range(args.nodes):
            emulator.add_node(f"c{index}-node-{n:04d}")
        emulators.append(emulator)
    total = args.clusters * args.nodes

    def baseline(value: str) -> float:
        """Every node PATCHed once, the same per-cluster concurrency, no bookkeeping at all."""
        started = time.perf_counter()
        sessions = [KubeSession(Connection(server=e.url, token=e.token), pool_size=args.concurrency)
                    for e in emulators]
        pools = [ThreadPoolExecutor(args.concurrency) for _ in emulators]
        jobs = [pool.submit(session.patch_node_labels, name, {"bench/baseline": value})
                for pool, session, e in zip(pools, sessions, emulators, strict=True) for name in e.names("nodes")]
        for job in jobs:
            job.result()
        for pool, session in zip(pools, sessions, strict=True):
            pool.shutdown()
            session.close()
        return time.perf_counter() - started

    stamp = time.time_ns()
    clusters = [Cluster.objects.create(name=f"bench-{i}-{stamp}", server=e.url, token=e.token)
                for i, e in enumerate(emulators)]

    def product(operation: str) -> tuple[float, float]:
        """(seconds for the whole label job, seconds of it spent creating the job and its result rows)."""
        started = time.perf_counter()
        nodes = select_nodes(cluster_ids=[c.pk for c in clusters])
        job = request_labelling(None, nodes, operation, selection="bench")
        requested = time.perf_counter() - started
        job = run_label_job(job.pk)
        elapsed = time.perf_counter() - started
        if job.succeeded != total:
            raise SystemExit(f"label job {job.status}: {job.succeeded}/{job.total} nodes succeeded")
        return elapsed, requested

    rounds = []
    try:
        for index in range(args.repeat):
            bare = baseline(f"round-{index}")
            for cluster in clusters:  # the baseline moved every resourceVersion on; not timed
                sync_nodes(cluster)
            ours, requested = product(LabelOperation.LABEL if index % 2 == 0 else LabelOperation.UNLABEL)
            rounds.append({"bare": bare, "ours": ours, "requested": requested})
    finally:
        for emulator in emulators:
            emulator.stop()
        LabelJob.objects.filter(selection="bench", results__cluster__in=clusters).delete()
        Cluster.objects.filter(pk__in=[c.pk for c in clusters]).delete()
    return {"nodes": total, "rounds": rounds}


def run_child(label: str, database_url: str, args) -> dict:
    """Measure one database in a fresh process (Django is configured once per process)."""
    command = [sys.executable, __file__, "--child", "--clusters", str(args.clusters), "--nodes", str(args.nodes),
               "--concurrency", str(args.concurrency), "--repeat", str(args.repeat)]
    answer = subprocess.run(command, env={**os.environ, "DATABASE_URL": database_url}, cwd=ROOT,
                            capture_output=True, text=True, check=False)
    if answer.returncode != 0:
        raise SystemExit(f"{label} run failed:\n{answer.stderr[-3000:]}")
    return json.loads(answer.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clusters", type=int, default=4)
    parser.add_argument("--nodes", type=int, default=500, help="nodes per cluster")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=5, help="rounds of baseline + label job; medians are shown")
    parser.add_argument("--postgres", default="", help="PostgreSQL database URL (default: DATABASE_URL if postgres)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args)))
        return

    postgres = args.postgres or (os.environ.get("DATABASE_URL", "") if os.environ.get("DATABASE_URL", "").startswith(
        ("postgres://", "postgresql://")) else "")
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="apparate-bench-") as sqlite_dir:  # removed afterwards
        databases = [("SQLite", f"sqlite:///{sqlite_dir}/bench.sqlite3")]
        if postgres:
            databases.append(("PostgreSQL", postgres))
        outcomes = [(label, run_child(label, url, args)) for label, url in databases]
    total = outcomes[0][1]["nodes"]
    print(f"nodes: {total} in {args.clusters} clusters, concurrency {args.concurrency} per cluster; "
          f"{args.repeat} rounds, medians; load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after")
    for label, outcome in outcomes:
        rounds = outcome["rounds"]
        bare = statistics.median(r["bare"] for r in rounds)
        ours = statistics.median(r["ours"] for r in rounds)
        ratios = [r["ours"] / r["bare"] for r in rounds]
        print(f"{label}:")
        print(f"  baseline, bare concurrent PATCHes:  {bare:6.2f} s  ({total / bare:6.0f} nodes/s)")
        print(f"  label job with per-node results:    {ours:6.2f} s  ({total / ours:6.0f} nodes/s)")
        print(f"    of which creating the job and its {total} result rows: "
              f"{statistics.median(r['requested'] for r in rounds):.2f} s")
        print(f"  label job / baseline: {statistics.median(ratios):.2f}x median of rounds "
              f"[{' '.join(f'{ratio:.2f}' for ratio in ratios)}]")
    if not postgres:
        print("PostgreSQL: skipped (pass --postgres URL or a postgres DATABASE_URL)")


if __name__ == "__main__":
    main()
