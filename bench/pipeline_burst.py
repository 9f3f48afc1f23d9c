"""Benchmark: bursts of pushes through the whole pipeline, with 1, 2 and 4 real worker processes.

docker-registry (notifications) → the console (`manage.py runserver`) → Redis → Celery workers →
accelerated tags. For each worker count in --workers (one run each, in this order, same images), a
fresh registry and instance get --pushes images across --repos repositories, pushed from
--threads threads; in each repository some tags repeat the content of earlier ones (same digest).
Each worker is `celery -A console worker` with --concurrency pool processes. Two phases per run,
each on a base layer of --base-mb MB that every image shares and the instance has not seen, so
the first jobs meet it at once (the layer cache race):
- burst: pushed while the workers run; the registry's notifications pace the jobs;
- backlog: pushed while no worker runs, then the workers start together on the queued jobs
  (throughput of the workers alone: first job start to last job end).
Then it checks, over both phases:
- every unique (repository, digest) has exactly one job, which succeeded, with its accelerated tag;
- no job ran twice: its `attempts`, and its "action=start" lines in all the workers' logs;
- no layer was converted twice: the conversions the jobs report ("N layer(s) converted") against
  the distinct source layers, and, from the registry's own log, uploads of each converted blob
  (another repository gets a converted blob by a cross-repository mount, not an upload).
It reports images/s and worker CPU per image beside the first run, and what lock contention
costs: a thread samples pg_stat_activity every 20 ms for backends of this database waiting on a
lock (row locks show as tuple/transactionid, advisory locks as advisory), in backend-seconds and
as a share of the jobs' running time, with the statements that waited; and the workers' own
timing of the layer locks (the wait of a job for another job converting the same layer).

Needs PostgreSQL and Redis: DATABASE_URL (a database of its own; migrated, and the bench's
instances are replaced) and CELERY_BROKER_URL=redis://… (a Redis database of its own; flushed).

Usage: DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench CELERY_BROKER_URL=redis://127.0.0.1:6379/9 \
       .venv/bin/python bench/pipeline_burst.py [--pushes 200] [--repos 20] [--workers 1,2,4] \
       [--concurrency 2] [--base-mb 4] [--threads 8]
"""

import argparse
import gzip
import hashlib
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "console.settings")

SAMPLE_SECONDS = 0.02
CONVERTED = re.compile(r": (\d+) layer\(s\) converted, (\d+) reused")
STARTED = re.compile(r"job=(\d+) action=start ")
LAYER_LOCK = re.compile(r"layer=(\S+) action=layer-lock waited=([\d.]+)")
REGISTRY_DURATION = re.compile(r'http\.request\.useragent=apparate-converter '
                               r'http\.response\.duration="?([\d.]+)(µs|ms|s)')
UPLOADED = re.compile(r'http\.request\.method=PUT http\.request\.remoteaddr=\S+ '
                      r'http\.request\.uri="[^"]*[?&]digest=(sha256(?::|%3A)[0-9a-f]{64})')


def layer(files: dict[str, bytes | None]) -> tuple[bytes, str]:
    from tests.support.images import sha256, tar_bytes

    raw = tar_bytes(files)
    return gzip.compress(raw, mtime=0), sha256(raw)


def image(base: tuple[bytes, str], repo: int, seed: int) -> tuple[list[bytes], bytes]:
    """Blobs and manifest of a two-layer image: the shared base and a layer unique to (repo, seed)."""
    from tests.support.images import OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST, sha256

    noise = hashlib.shake_256(f"{repo}-{seed}".encode()).digest(256 * 1024)
    top = layer({"app/": None, "app/data.bin": noise, "app/seed": f"{repo}-{seed}\n".encode()})
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": [base[1], top[1]]}}).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": sha256(config), "size": len(config)},
        "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": sha256(blob), "size": len(blob)}
                   for blob in (base[0], top[0])],
    }).encode()
    return [base[0], top[0], config], manifest


def wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            requests.get(url, timeout=1)
            return
        except requests.ConnectionError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


def tree_cpu(pids: list[int]) -> float:
    """CPU seconds used so far by these processes and their children, live or reaped (Linux /proc)."""
    stats = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rpartition(")")[2].split()
            except OSError:  # ended meanwhile
                continue
            stats[int(entry.name)] = (int(fields[1]), sum(int(value) for value in fields[11:15]))
    wanted = set(pids) | {pid for pid, (parent, _) in stats.items() if parent in pids}
    return sum(stats[pid][1] for pid in wanted if pid in stats) / os.sysconf("SC_CLK_TCK")


class LockWaits(threading.Thread):
    """Samples pg_stat_activity: backend-seconds spent waiting on locks in this database, by lock type."""

    def __init__(self):
        super().__init__(daemon=True)
        self.waits: Counter = Counter()
        # (lock type, the waiting statement, the last statement of the session it waits for) -> backend-seconds
        self.statements: Counter = Counter()
        self.samples = 0
        self.halt = threading.Event()

    def run(self) -> None:
        from django.db import connection

        with connection.cursor() as cursor:
            while not self.halt.wait(SAMPLE_SECONDS):
                cursor.execute("SELECT a.wait_event, left(a.query, 50), left(b.query, 50), count(*) "
                               "FROM pg_stat_activity a LEFT JOIN pg_stat_activity b "
                               "ON b.pid = (pg_blocking_pids(a.pid))[1] WHERE a.datname = current_database() "
                               "AND a.wait_event_type = 'Lock' AND a.pid <> pg_backend_pid() GROUP BY 1, 2, 3")
                self.samples += 1
                for event, query, blocker, count in cursor.fetchall():
                    self.waits[event] += count * SAMPLE_SECONDS
                    self.statements[(event, query, blocker)] += count * SAMPLE_SECONDS
        connection.close()

    def begin(self) -> "LockWaits":
        self.start()
        return self

    def end(self) -> "LockWaits":
        self.halt.set()
        self.join()
        return self


def plan_images(args, base_seed: str, tag_prefix: str) -> tuple[list, set]:
    """(pushes in order, unique (repository, digest)): --pushes images on one new base layer."""
    base = layer({"etc/": None, "etc/base": hashlib.shake_256(base_seed.encode()).digest(int(args.base_mb * 2**20))})
    plan, expected = [], set()
    for number in range(args.pushes):
        repo, slot = number % args.repos, number // args.repos
        seed = slot - 1 if slot and slot % args.repeat_every == 0 else slot  # a re-push of earlier content
        blobs, manifest = image(base, repo, f"{tag_prefix}{seed}")
        plan.append((f"bench/app{repo:02d}", f"{tag_prefix}{slot}", blobs, manifest))
        expected.add((f"app{repo:02d}", "sha256:" + hashlib.sha256(manifest).hexdigest()))
    return plan, expected


def push_all(registry_url: str, plan: list, threads: int) -> None:
    """Each repository's pushes in order, repositories in parallel."""
    from tests.support.images import OCI_MANIFEST, push_raw

    by_repository: dict[str, list] = {}
    for item in plan:
        by_repository.setdefault(item[0], []).append(item)

    def push(items):
        for repository, tag, blobs, manifest in items:
            push_raw(registry_url, repository, blobs, [(tag, OCI_MANIFEST, manifest)])

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(push, by_repository.values()))


def tag_exists(registry_url: str, path: str, tag: str) -> bool:
    """HEAD the tag; docker-registry's filesystem storage answers 500 while another PUT of the same
    manifest rewrites its link files, so a 5xx is asked again."""
    from tests.support.images import OCI_MANIFEST

    for _ in range(5):
        status = requests.head(f"{registry_url}/v2/{path}/manifests/{tag}", headers={"Accept": OCI_MANIFEST},
                               timeout=10).status_code
        if status < 500:
            return status == 200
        time.sleep(0.2)
    return False


def registry_seconds(log: str) -> float:
    """Seconds docker-registry spent answering the converter's requests (from its access log)."""
    units = {"µs": 1e-6, "ms": 1e-3, "s": 1.0}
    return sum(float(value) * units[unit] for value, unit in REGISTRY_DURATION.findall(log))


def wait_until(predicate, deadline: float, what: str) -> None:
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.25)


def run_workers(args, workers: int, port: int, work: Path) -> dict:
    """One run with `workers` worker processes, a fresh registry and a fresh instance, in two phases:
    "burst": images pushed while the workers run (the intake paces the jobs); "backlog": images
    pushed while no worker runs, then the workers started together on the queued jobs."""
    import redis
    from django.conf import settings

    from pipeline.choices import TERMINAL, JobStatus
    from pipeline.models import ConversionJob, LayerCacheEntry, PushEvent
    from registries.models import Instance
    from rules.models import Rule
    from tests.support.registry import start_registry
    from tests.support.worker import start_worker

    redis.Redis.from_url(settings.CELERY_BROKER_URL).flushdb()
    Instance.objects.filter(name__startswith="bench-burst").delete()
    instance = Instance.objects.create(name=f"bench-burst-{workers}", url="http://placeholder:1",
                                       acceleration_enabled=True)
    Rule.objects.create(instance=instance, name="all", namespace="bench")
    run_dir = work / f"{workers}-workers"
    registry = start_registry(run_dir / "registry", notify_url=f"http://127.0.0.1:{port}/webhooks/registry/"
                              f"{instance.pk}/", notify_secret=instance.webhook_secret)
    instance.url = registry.url
    instance.save()
    pools: list[list] = []

    def start(phase: str) -> list:
        with ThreadPoolExecutor(workers) as starting:  # all at once, so none has a head start
            # A spool directory of the bench's own: a worker sweeps the job directories of the spool
            # it uses that its database does not know, so one on another database sharing /tmp would
            # remove these jobs' directories under them.
            pool = list(starting.map(lambda n: start_worker(run_dir / f"{phase}-worker-{n}.log",
                                                            WORKER_CONCURRENCY=str(args.concurrency),
                                                            APPARATE_JOB_WORKDIR=str(run_dir / "spool")),
                                     range(workers)))
        pools.append(pool)
        return pool

    def jobs_of(expected: set):
        return [job for job in ConversionJob.objects.filter(instance=instance)
                if (job.repository, job.source_digest) in expected]

    def all_done(expected: set) -> bool:
        jobs = jobs_of(expected)
        return len(jobs) >= len(expected) and all(job.status in TERMINAL for job in jobs)

    phases = {}
    try:
        deadline = time.monotonic() + args.timeout
        # burst: the workers run while the images are pushed
        plan, expected = plan_images(args, "base", "v")
        pool = start("burst")
        sampler, cpu_before = LockWaits().begin(), tree_cpu([worker.process.pid for worker in pool])
        started = time.monotonic()
        push_all(registry.url, plan, args.threads)
        pushed = time.monotonic() - started
        wait_until(lambda: all_done(expected), deadline, "the burst's jobs")
        drained = time.monotonic() - started
        phases["burst"] = {"expected": expected, "seconds": drained, "pushed": pushed, "locks": sampler.end(),
                           "cpu": tree_cpu([worker.process.pid for worker in pool]) - cpu_before}
        for worker in pool:
            worker.stop()

        # backlog: every job queued first (on another new base layer), then the workers start together
        plan, expected = plan_images(args, "base-2", "w")
        push_all(registry.url, plan, args.threads)
        wait_until(lambda: len(jobs_of(expected)) >= len(expected), deadline, "the backlog's jobs to be queued")
        sampler = LockWaits().begin()
        pool = start("backlog")
        cpu_before = tree_cpu([worker.process.pid for worker in pool])
        wait_until(lambda: all_done(expected), deadline, "the backlog's jobs")
        jobs = jobs_of(expected)
        phases["backlog"] = {"expected": expected, "locks": sampler.end(),
                             "cpu": tree_cpu([worker.process.pid for worker in pool]) - cpu_before,
                             "seconds": (max(job.finished_at for job in jobs)
                                         - min(job.started_at for job in jobs)).total_seconds()}
        succeeded = list(ConversionJob.objects.filter(instance=instance, status=JobStatus.SUCCEEDED))
        missing_tags = sum(not tag_exists(registry.url, job.path, job.result_tag) for job in succeeded)
    finally:
        for worker in (worker for pool in pools for worker in pool):
            worker.stop()
        registry.process.terminate()
        registry.process.wait(timeout=20)

    logs = [worker.log() for pool in pools for worker in pool]
    starts = Counter(int(match) for log in logs for match in STARTED.findall(log))
    layer_locks: dict[str, list[float]] = {}
    for log in logs:
        for digest, seconds in LAYER_LOCK.findall(log):
            layer_locks.setdefault(digest, []).append(float(seconds))
    met_at_once = {digest: waits for digest, waits in layer_locks.items() if len(waits) > 1}
    entries = LayerCacheEntry.objects.filter(instance=instance)
    converted_blobs = set(entries.values_list("digest", flat=True))
    registry_log = registry.log()
    uploads = Counter(digest.replace("%3A", ":") for digest in UPLOADED.findall(registry_log))
    expected = set().union(*(phase["expected"] for phase in phases.values()))
    jobs = list(ConversionJob.objects.filter(instance=instance))
    keys = [(job.repository, job.source_digest) for job in jobs]
    succeeded = [job for job in jobs if job.status == JobStatus.SUCCEEDED]
    for phase in phases.values():
        done = [job for job in succeeded if (job.repository, job.source_digest) in phase["expected"]]
        phase["images"] = len(done)
        phase["job_seconds"] = sum((job.finished_at - job.started_at).total_seconds() for job in done)
        phase["queue_wait"] = statistics.median((job.started_at - job.created_at).total_seconds() for job in done)
    return {
        "workers": workers, "phases": phases, "expected": len(expected), "jobs": len(jobs),
        "succeeded": len(succeeded), "failed": sum(job.status == JobStatus.FAILED for job in jobs),
        "duplicates": len(keys) - len(set(keys)), "lost": len(expected - set(keys)),
        "missing_tags": missing_tags,
        "events": PushEvent.objects.filter(instance=instance).count(),
        "attempts_over_1": sum(job.attempts > 1 for job in jobs),
        "started_twice": sum(count > 1 for count in starts.values()),
        "started_never": sum(job.pk not in starts for job in jobs),
        "skipped_duplicates": sum(log.count("action=skip-duplicate") for log in logs),
        "conversions": sum(int(match.group(1)) for job in succeeded for line in job.log
                           if (match := CONVERTED.search(line["message"]))),
        "source_layers": len({layer["source_digest"] for job in succeeded for layer in job.layers}),
        "cache_entries": entries.count(), "cache_hits": sum(entries.values_list("hits", flat=True)),
        "uploaded_twice": sorted(digest for digest in converted_blobs if uploads[digest] > 1),
        "uploads_of_converted": sum(uploads[digest] for digest in converted_blobs),
        "registry_seconds": registry_seconds(registry_log),
        "job_seconds": sum((job.finished_at - job.started_at).total_seconds() for job in succeeded),
        "layer_locks": sum(len(waits) for waits in layer_locks.values()), "locked_layers": len(layer_locks),
        "met_at_once": len(met_at_once), "jobs_that_waited": sum(len(waits) - 1 for waits in met_at_once.values()),
        "layer_lock_seconds": sum(sum(waits) for waits in layer_locks.values()),
        "waited_for_conversions": sum(sum(waits) for waits in met_at_once.values()),
    }


def report(runs: list[dict]) -> bool:
    """Print each run beside the first (fewest workers); True when every check held."""
    first = runs[0]
    ok = True
    for run in runs:
        print(f"{run['workers']} worker(s):")
        for name, phase in run["phases"].items():
            base = first["phases"][name]
            rate, base_rate = phase["images"] / phase["seconds"], base["images"] / base["seconds"]
            cpu, base_cpu = phase["cpu"] / phase["images"], base["cpu"] / base["images"]
            if name == "burst":
                how = (f"pushed in {phase['pushed']:.1f}s while the workers ran (median wait in the queue "
                       f"{phase['queue_wait']:.2f}s); the last job finished {phase['seconds']:.1f}s after the "
                       "first push")
            else:
                how = f"queued first; {phase['seconds']:.1f}s from the first job's start to the last one's end"
            print(f"  {name}: {phase['images']} images {how}: {rate:.2f} images/s ({rate / base_rate:.2f}x "
                  f"{first['workers']} worker); worker CPU {cpu * 1000:.0f} ms per image ({cpu / base_cpu:.2f}x)")
            waits = phase["locks"]
            detail = ", ".join(f"{event} {seconds:.2f}" for event, seconds in sorted(waits.waits.items()))
            print(f"    lock waits: {sum(waits.waits.values()):.2f} backend-s, "
                  f"{sum(waits.waits.values()) / phase['job_seconds'] * 100:.1f}% of the jobs' "
                  f"{phase['job_seconds']:.1f}s of running ({detail or 'none seen'}; "
                  f"{waits.samples} samples every {SAMPLE_SECONDS * 1000:.0f} ms)")
            for (event, query, blocker), seconds in waits.statements.most_common(3):
                print(f"      {seconds:.2f} backend-s {event}: {' '.join(query.split())} … waiting for a session "
                      f"whose last statement was: {' '.join((blocker or '?').split())} …")
        print(f"  jobs: {run['jobs']} for {run['expected']} unique (repository, digest) (succeeded "
              f"{run['succeeded']}, failed {run['failed']}); duplicates {run['duplicates']}, lost {run['lost']}, "
              f"accelerated tags missing {run['missing_tags']}; push events stored {run['events']}")
        print(f"  ran twice: {run['attempts_over_1']} jobs with attempts > 1, {run['started_twice']} started more "
              f"than once in the worker logs ({run['started_never']} never started; "
              f"{run['skipped_duplicates']} duplicate deliveries refused by the job lock)")
        print(f"  layers: {run['conversions']} conversions for {run['source_layers']} distinct source layers; "
              f"{run['uploads_of_converted']} uploads of {run['cache_entries']} converted blobs, uploaded more "
              f"than once: {len(run['uploaded_twice'])} {' '.join(run['uploaded_twice'])}; "
              f"cache hits {run['cache_hits']}")
        print(f"  layer locks (timed in the workers): {run['layer_locks']} taken on {run['locked_layers']} layers, "
              f"{run['layer_lock_seconds']:.2f}s in all; {run['met_at_once']} layers met by several jobs at once: "
              f"{run['jobs_that_waited']} jobs waited {run['waited_for_conversions']:.2f}s for another's "
              "conversion, then reused it")
        print(f"  where the jobs' time goes: {run['job_seconds']:.1f}s of running in all, of which docker-registry "
              f"took {run['registry_seconds']:.1f}s answering the converter "
              f"({run['registry_seconds'] / run['succeeded'] * 1000:.0f} ms per image)")
        ok = ok and run["lost"] == run["duplicates"] == run["missing_tags"] == 0 \
            and run["succeeded"] == run["jobs"] == run["expected"] and not run["attempts_over_1"] \
            and not run["started_twice"] and run["conversions"] == run["source_layers"] and not run["uploaded_twice"]
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pushes", type=int, default=200)
    parser.add_argument("--repos", type=int, default=20)
    parser.add_argument("--repeat-every", type=int, default=4, help="every Nth tag re-pushes earlier content")
    parser.add_argument("--workers", default="1,2,4", help="worker process counts, one run each")
    parser.add_argument("--concurrency", type=int, default=2, help="pool processes per worker")
    parser.add_argument("--base-mb", type=float, default=4, help="size of the base layer every image shares")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--timeout", type=float, default=1800)
    args = parser.parse_args()
    if not os.environ.get("DATABASE_URL", "").startswith("postgres") or not os.environ.get(
            "CELERY_BROKER_URL", "").startswith("redis://"):
        sys.exit("Set DATABASE_URL=postgres://… and CELERY_BROKER_URL=redis://… (databases of the bench's own).")

    import django

    django.setup()
    from django.core.management import call_command

    from tests.support.registry import free_port

    call_command("migrate", verbosity=0)
    work = Path(tempfile.mkdtemp(prefix="apparate-bench-"))
    port = free_port()
    # runserver answers each request on a new thread, so a kept connection would outlive it: close each one
    web = subprocess.Popen([sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"],
                           cwd=ROOT, env={**os.environ, "DATABASE_CONN_MAX_AGE": "0"},
                           stdout=open(work / "web.log", "wb"), stderr=subprocess.STDOUT)  # noqa: SIM115
    load_before = os.getloadavg()[0]
    try:
        wait_http(f"http://127.0.0.1:{port}/login/")
        runs = [run_workers(args, int(count), port, work) for count in args.workers.split(",")]
    finally:
        web.terminate()
        web.wait(timeout=20)

    print(f"{args.pushes} pushes per phase across {args.repos} repositories, each phase on a new {args.base_mb:g} MB "
          f"base layer; {args.concurrency} pool processes per worker; load average {load_before:.2f} before, "
          f"{os.getloadavg()[0]:.2f} after; logs in {work}")
    ok = report(runs)
    print("RESULT:", "every unique digest converted exactly once, no job ran twice, no layer converted twice"
          if ok else "FAILED (see above)")
    if not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
