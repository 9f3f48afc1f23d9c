"""Benchmark: the Images page over a registry of thousands of tags, rendered from rows.

Starts Debian's docker-registry, pushes --repos repositories of --tags tags each (every --twin-every
th tag with an accelerated twin `<tag>-apparate` whose manifest names its source), runs one Images
refresh (what the background task does) and times it, then STOPS the registry and times page views
through Django's test client (middleware, view, queries, template): the first page, the last page,
a repository filter and the API listing. The baseline, measured in the same run, is the same page
of an instance with no images (the fixed cost of an authenticated page). Prints medians over
--views views, the ratio to the baseline and the SQL queries per view. Not a test: figures only.

Needs PostgreSQL: DATABASE_URL (a database of its own; migrated, the bench's instances replaced).

Usage: DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench .venv/bin/python bench/images_page.py \
       [--repos 20] [--tags 100] [--twin-every 4] [--views 30]
"""

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "console.settings")
os.environ.setdefault("CELERY_BROKER_URL", "memory://")  # nothing is enqueued: the rows are fresh


def image(seed: str) -> tuple[list[bytes], bytes]:
    """Blobs and manifest of a one-layer image."""
    import gzip

    from tests.support.images import OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST, sha256, tar_bytes

    raw = tar_bytes({"app/": None, "app/seed": seed.encode()})
    blob = gzip.compress(raw, mtime=0)
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": [sha256(raw)]}}).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": sha256(config), "size": len(config)},
        "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": sha256(blob), "size": len(blob)}],
    }).encode()
    return [blob, config], manifest


def twin_of(manifest: bytes) -> bytes:
    """A stand-in accelerated manifest: the source's, annotated with the source digest."""
    from converter.image import SOURCE_DIGEST_ANNOTATION
    from tests.support.images import sha256

    document = json.loads(manifest)
    document["annotations"] = {SOURCE_DIGEST_ANNOTATION: sha256(manifest)}
    return json.dumps(document).encode()


def push_repositories(registry_url: str, repos: int, tags: int, twin_every: int) -> None:
    """Push `repos` repositories `bench/appNN` of `tags` one-layer images `vN` each, with a stand-in
    twin `vN-apparate` of every `twin_every`-th (none when 0), from 8 threads."""
    from tests.support.images import OCI_MANIFEST, push_raw

    def push(repo: int) -> None:
        manifests, blobs = [], []
        for number in range(tags):
            parts, manifest = image(f"{repo}-{number}")
            blobs += parts
            manifests.append((f"v{number}", OCI_MANIFEST, manifest))
            if twin_every and number % twin_every == 0:
                manifests.append((f"v{number}-apparate", OCI_MANIFEST, twin_of(manifest)))
        push_raw(registry_url, f"bench/app{repo:02d}", blobs, manifests)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(push, range(repos)))


def timed(get, views: int) -> tuple[float, int]:
    """Median seconds of `views` calls (after one warm-up) and the SQL queries of one call."""
    from django.db import connection

    response = get()
    assert response.status_code == 200, response.status_code
    queries = []

    def count(execute, sql, params, many, context):
        queries.append(sql)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(count):
        get()
    samples = []
    for _ in range(views):
        started = time.perf_counter()
        get()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples), len(queries)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repos", type=int, default=20)
    parser.add_argument("--tags", type=int, default=100, help="source tags per repository")
    parser.add_argument("--twin-every", type=int, default=4, help="every Nth tag has an accelerated twin")
    parser.add_argument("--views", type=int, default=30)
    args = parser.parse_args()
    if not os.environ.get("DATABASE_URL", "").startswith("postgres"):
        sys.exit("Set DATABASE_URL=postgres://… (a database of the bench's own).")

    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.test import Client
    from django.utils import timezone

    from pipeline import catalogue
    from pipeline.choices import OperationKind, OperationStatus
    from pipeline.models import AcceleratedImage, Operation, RegistryTag
    from registries.models import Instance
    from tests.support.registry import start_registry

    call_command("migrate", verbosity=0)
    settings.APPARATE_IMAGES_REFRESH_AGE = 3600  # the views must not ask for a refresh
    Instance.objects.filter(name__in=["bench-images", "bench-empty"]).delete()
    User.objects.filter(username="bench-viewer").delete()
    user = User.objects.create_superuser("bench-viewer", password="unused-bench-password")  # noqa: S106
    work = Path(tempfile.mkdtemp(prefix="apparate-bench-images-"))
    registry = start_registry(work / "registry")
    try:
        started = time.monotonic()
        push_repositories(registry.url, args.repos, args.tags, args.twin_every)
        pushed = time.monotonic() - started
        instance = Instance.objects.create(name="bench-images", url=registry.url)
        empty = Instance.objects.create(name="bench-empty", url="http://127.0.0.1:9")

        started = time.monotonic()
        report = catalogue.refresh_images(instance)
        refreshed = time.monotonic() - started
        now = timezone.now()
        for each in (instance, empty):  # what the refresh task records: the rows' "as of" time
            Operation.objects.create(kind=OperationKind.REFRESH_IMAGES, instance=each, status=OperationStatus.SUCCEEDED,
                                     started_at=now, finished_at=now)
        again_started = time.monotonic()
        catalogue.refresh_images(instance)
        refreshed_again = time.monotonic() - again_started
    finally:
        registry.process.terminate()
        registry.process.wait(timeout=20)
        shutil.rmtree(work, ignore_errors=True)

    # The registry is stopped: every view below is served from rows.
    client = Client(HTTP_HOST="localhost")
    client.force_login(user)
    rows = RegistryTag.objects.filter(instance=instance).count()
    twins = AcceleratedImage.objects.filter(instance=instance).count()
    pages = -(-rows // catalogue.ROWS_PER_PAGE)
    baseline, baseline_queries = timed(lambda: client.get(f"/instances/images/?instance={empty.pk}"), args.views)
    figures = {
        "first page": timed(lambda: client.get(f"/instances/images/?instance={instance.pk}"), args.views),
        "last page": timed(lambda: client.get(f"/instances/images/?instance={instance.pk}&page={pages}"),
                           args.views),
        "one repository": timed(lambda: client.get(f"/instances/images/?instance={instance.pk}&repository=app07"),
                                args.views),
        "API, first page": timed(lambda: client.get(f"/api/v1/images/?instance={instance.pk}"), args.views),
    }
    print(f"registry: {args.repos} repositories, {rows} tags, {twins} accelerated twins "
          f"(pushed in {pushed:.1f}s)")
    print(f"background refresh (the Celery task's work): {refreshed:.2f}s for {report.tags + report.twins} tags "
          f"({len(report.errors)} errors); again with nothing changed: {refreshed_again:.2f}s")
    print(f"page views with the registry stopped, median of {args.views} ({catalogue.ROWS_PER_PAGE} tags a page, "
          f"{pages} pages):")
    print(f"  baseline, Images page of an instance without images: {baseline * 1000:.1f} ms, "
          f"{baseline_queries} queries")
    for name, (seconds, queries) in figures.items():
        print(f"  {name}: {seconds * 1000:.1f} ms ({seconds / baseline:.1f}x baseline), {queries} queries")


if __name__ == "__main__":
    main()
