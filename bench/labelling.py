"""Benchmark: labelling nodes across emulated clusters, beside a same-run baseline of bare PATCHes.

Starts N Kubernetes API emulators (tests/support/kube_emulator.py) with M nodes each, then times
1. the baseline: concurrent merge-PATCHes of every node's labels through the official client
   (clusters.kube.KubeSession, same concurrency), no database;
2. the product: request_labelling + run_label_job (per-node results in the
   database, retries, node rows updated), on a fresh SQLite database unless DATABASE_URL is set.

Usage: .venv/bin/python bench/labelling.py [--clusters 4] [--nodes 500] [--concurrency 16]
"""

import argparse
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clusters", type=int, default=4)
    parser.add_argument("--nodes", type=int, default=500, help="nodes per cluster")
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()

    workdir = tempfile.mkdtemp(prefix="apparate-bench-")
    os.environ.setdefault("DATABASE_URL", f"sqlite:///{workdir}/bench.sqlite3")
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
    from clusters.models import Cluster
    from tests.support.kube_emulator import KubeEmulator

    call_command("migrate", verbosity=0)
    emulators = []
    for index in range(args.clusters):
        emulator = KubeEmulator().start()
        for n in range(args.nodes):
            emulator.add_node(f"c{index}-node-{n:04d}")
        emulators.append(emulator)
    total = args.clusters * args.nodes

    def baseline() -> float:
        """Every node PATCHed once, the same per-cluster concurrency, no bookkeeping at all."""
        started = time.perf_counter()
        sessions = [KubeSession(Connection(server=e.url, token=e.token), pool_size=args.concurrency)
                    for e in emulators]
        pools = [ThreadPoolExecutor(args.concurrency) for _ in emulators]
        jobs = [pool.submit(session.patch_node_labels, name, {"bench/baseline": "true"})
                for pool, session, e in zip(pools, sessions, emulators, strict=True) for name in e.names("nodes")]
        for job in jobs:
            job.result()
        for pool, session in zip(pools, sessions, strict=True):
            pool.shutdown()
            session.close()
        return time.perf_counter() - started

    bare = baseline()

    clusters = [Cluster.objects.create(name=f"bench-{i}-{time.time_ns()}", server=e.url, token=e.token)
                for i, e in enumerate(emulators)]
    for cluster in clusters:
        sync_nodes(cluster)

    def product() -> tuple[float, dict]:
        started = time.perf_counter()
        nodes = select_nodes(cluster_ids=[c.pk for c in clusters])
        job = request_labelling(None, nodes, LabelOperation.LABEL, selection="bench")
        requested = time.perf_counter() - started
        job = run_label_job(job.pk)
        return time.perf_counter() - started, {"status": job.status, "succeeded": job.succeeded, "total": job.total,
                                                "requested": requested}

    ours, outcome = product()
    for emulator in emulators:
        emulator.stop()
    print(f"nodes: {total} in {args.clusters} clusters, concurrency {args.concurrency} per cluster")
    print(f"baseline, bare concurrent PATCHes: {bare:7.2f} s  ({total / bare:8.0f} nodes/s)")
    print(f"label job with per-node results:   {ours:7.2f} s  ({total / ours:8.0f} nodes/s)  "
          f"{ours / bare:4.2f}x baseline  [{outcome['status']}: {outcome['succeeded']}/{outcome['total']}]")
    print(f"  of which creating the job and its {total} result rows: {outcome['requested']:.2f} s")


if __name__ == "__main__":
    main()
