"""Benchmark: a burst of pushes through the whole pipeline, with real processes.

docker-registry (notifications) → the console (`manage.py runserver`) → Redis → Celery workers →
accelerated tags. Pushes --pushes images across --repos repositories from --threads threads; in
each repository some tags repeat the content of earlier ones (same digest), and all images share
a base layer (so the layer cache mounts it instead of converting it again). Then waits until every
job is finished and checks that every unique (repository, digest) was converted exactly once and
nothing was lost (each has a job, each job succeeded, each has its accelerated tag).

Needs PostgreSQL and Redis: DATABASE_URL (a database of its own; migrated, and the bench's
instance is replaced) and CELERY_BROKER_URL=redis://… (a Redis database of its own; flushed).

Usage: DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench CELERY_BROKER_URL=redis://127.0.0.1:6379/9 \
       .venv/bin/python bench/pipeline_burst.py [--pushes 300] [--repos 30] [--workers 1] [--threads 8]
"""

import argparse
import gzip
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "console.settings")


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pushes", type=int, default=300)
    parser.add_argument("--repos", type=int, default=30)
    parser.add_argument("--repeat-every", type=int, default=4, help="every Nth tag re-pushes earlier content")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (2 pool children each)")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--timeout", type=float, default=1800)
    args = parser.parse_args()
    if not os.environ.get("DATABASE_URL", "").startswith("postgres") or not os.environ.get(
            "CELERY_BROKER_URL", "").startswith("redis://"):
        sys.exit("Set DATABASE_URL=postgres://… and CELERY_BROKER_URL=redis://… (databases of the bench's own).")

    import django

    django.setup()
    import redis
    from django.conf import settings
    from django.core.management import call_command

    from pipeline.choices import TERMINAL, JobStatus
    from pipeline.models import ConversionJob, LayerCacheEntry, PushEvent
    from registries.models import Instance
    from rules.models import Rule
    from tests.support.images import OCI_MANIFEST, push_raw
    from tests.support.registry import free_port, start_registry
    from tests.support.worker import start_worker

    call_command("migrate", verbosity=0)
    redis.Redis.from_url(settings.CELERY_BROKER_URL).flushdb()
    Instance.objects.filter(name="bench-burst").delete()
    instance = Instance.objects.create(name="bench-burst", url="http://placeholder:1", acceleration_enabled=True)
    Rule.objects.create(instance=instance, name="all", namespace="bench")
    work = Path(tempfile.mkdtemp(prefix="apparate-bench-"))
    processes: list = []
    try:
        port = free_port()
        web = subprocess.Popen([sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"],
                               cwd=ROOT, stdout=open(work / "web.log", "wb"), stderr=subprocess.STDOUT)  # noqa: SIM115
        processes.append(web)
        wait_http(f"http://127.0.0.1:{port}/login/")
        registry = start_registry(work / "registry", notify_url=f"http://127.0.0.1:{port}/webhooks/registry/"
                                  f"{instance.pk}/", notify_secret=instance.webhook_secret)
        processes.append(registry.process)
        instance.url = registry.url
        instance.save()
        workers = [start_worker(work / f"worker-{n}.log") for n in range(args.workers)]
        processes.extend(worker.process for worker in workers)

        base = layer({"etc/": None, "etc/base": hashlib.shake_256(b"base").digest(512 * 1024)})
        plan, expected = [], set()
        for number in range(args.pushes):
            repo, slot = number % args.repos, number // args.repos
            seed = slot - 1 if slot and slot % args.repeat_every == 0 else slot  # a re-push of earlier content
            blobs, manifest = image(base, repo, seed)
            plan.append((f"bench/app{repo:02d}", f"v{slot}", blobs, manifest))
            expected.add((f"app{repo:02d}", "sha256:" + hashlib.sha256(manifest).hexdigest()))

        by_repository: dict[str, list] = {}
        for item in plan:
            by_repository.setdefault(item[0], []).append(item)

        def push(items):  # one repository's pushes in order; repositories in parallel
            for repository, tag, blobs, manifest in items:
                push_raw(registry.url, repository, blobs, [(tag, OCI_MANIFEST, manifest)])

        started = time.monotonic()
        with ThreadPoolExecutor(args.threads) as pool:
            list(pool.map(push, by_repository.values()))
        pushed = time.monotonic() - started
        deadline = started + args.timeout
        while time.monotonic() < deadline:
            jobs = ConversionJob.objects.filter(instance=instance)
            if jobs.count() >= len(expected) and not jobs.exclude(status__in=TERMINAL).exists():
                break
            time.sleep(0.5)
        drained = time.monotonic() - started

        jobs = list(ConversionJob.objects.filter(instance=instance))
        keys = [(job.repository, job.source_digest) for job in jobs]
        succeeded = [job for job in jobs if job.status == JobStatus.SUCCEEDED]
        missing_tags = [job for job in succeeded if requests.head(
            f"{registry.url}/v2/{job.path}/manifests/{job.result_tag}", headers={"Accept": OCI_MANIFEST},
            timeout=10).status_code != 200]
        converted_bytes = sum(job.bytes_in for job in succeeded)
        events = PushEvent.objects.filter(instance=instance)
        print(f"pushes: {args.pushes} across {args.repos} repositories in {pushed:.1f}s "
              f"({args.pushes / pushed:.1f} pushes/s); unique (repository, digest): {len(expected)}")
        print(f"push events stored: {events.count()} (conversion requested "
              f"{events.filter(outcome='conversion_requested').count()}; the rest are re-pushes and the "
              "accelerated images' own pushes, skipped with their reason)")
        print(f"jobs: {len(jobs)} (succeeded {len(succeeded)}, failed "
              f"{sum(job.status == JobStatus.FAILED for job in jobs)}); duplicates: {len(keys) - len(set(keys))}; "
              f"lost: {len(expected - set(keys))}; accelerated tags missing: {len(missing_tags)}")
        print(f"time to drain (first push to last job done): {drained:.1f}s; throughput "
              f"{len(succeeded) / drained:.2f} images/s, {converted_bytes / drained / 1e6:.1f} MB/s of source read")
        print(f"layer cache: {LayerCacheEntry.objects.filter(instance=instance).count()} entries, "
              f"{sum(LayerCacheEntry.objects.filter(instance=instance).values_list('hits', flat=True))} hits")
        ok = set(keys) == expected and len(keys) == len(set(keys)) and len(succeeded) == len(jobs) and not missing_tags
        print("RESULT:", "every unique digest converted exactly once" if ok else "FAILED (see above)")
        if not ok:
            sys.exit(1)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


if __name__ == "__main__":
    main()
