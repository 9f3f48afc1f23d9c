"""Benchmark: the Images refresh against a registry some milliseconds away, one thread against eight.

Starts Debian's docker-registry, pushes --repos repositories of --tags tags each (every --twin-every
th tag with an accelerated twin `<tag>-apparate` whose manifest names its source), and puts
tests/support/faulty_proxy.py in front of it holding every request --delay-ms (a registry that far
away). After an untimed warm-up refresh, for each concurrency in turn (1, the same-run baseline,
and --concurrency; --rounds times, the order alternating), on a new instance: a first refresh (no
rows yet: a HEAD per tag and a read of every manifest), then one with nothing changed (a HEAD per
tag, no read), each timed, with the HEADs and GETs the proxy answered and the most it answered at
once. Prints the median seconds, HEADs/s, the speed-up over one thread, and whether both
instances ended with the same rows. Not a test: figures only.

Needs PostgreSQL: DATABASE_URL (a database of its own; migrated, the bench's instances replaced).

Measured 2026-11-29 on the 2-core shared machine (defaults and --rounds 2: 20 repositories of 50
tags and 13 twins, 1,260 tags, 30 ms per request; load average 0.4-0.8), one thread → eight:
first refresh 87.36 s → 13.04 s (1,260 HEADs and 1,281 GETs; 14 → 97 HEADs/s), 6.70×; nothing
changed 43.86 s → 6.79 s (1,260 HEADs and 21 GETs; 29 → 185 HEADs/s), 6.46×; at most 1 and 8
requests at once; the same rows. An earlier run at load average 1.0-1.4: 89.04 s → 18.09 s (4.92×)
and 44.49 s → 8.33 s (5.34×). With eight threads what is left is mostly the one-after-another part:
each repository's tag list, and its last few HEADs when its tags are not a multiple of eight.

Usage: DATABASE_URL=postgres://postgres@127.0.0.1:5432/wt_refresh .venv/bin/python bench/images_refresh.py \
       [--repos 20] [--tags 50] [--twin-every 4] [--delay-ms 30] [--concurrency 8] [--rounds 1]
"""

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "console.settings")
os.environ.setdefault("CELERY_BROKER_URL", "memory://")  # nothing is enqueued: the refresh runs here


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repos", type=int, default=20)
    parser.add_argument("--tags", type=int, default=50, help="source tags per repository")
    parser.add_argument("--twin-every", type=int, default=4, help="every Nth tag has an accelerated twin")
    parser.add_argument("--delay-ms", type=float, default=30, help="added to every request to the registry")
    parser.add_argument("--concurrency", type=int, default=8, help="measured against 1")
    parser.add_argument("--rounds", type=int, default=1, help="each concurrency in turn, the order alternating")
    args = parser.parse_args()
    if not os.environ.get("DATABASE_URL", "").startswith("postgres"):
        sys.exit("Set DATABASE_URL=postgres://… (a database of the bench's own).")

    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    from bench.images_page import push_repositories
    from pipeline import catalogue
    from pipeline.models import AcceleratedImage, RegistryTag
    from registries.models import Instance
    from tests.support.faulty_proxy import FaultyProxy
    from tests.support.registry import start_registry

    call_command("migrate", verbosity=0)
    names = {concurrency: f"bench-refresh-{concurrency}" for concurrency in (1, args.concurrency)}
    Instance.objects.filter(name__in=names.values()).delete()
    work = Path(tempfile.mkdtemp(prefix="apparate-bench-refresh-"))
    registry = start_registry(work / "registry")
    proxy = None
    try:
        push_repositories(registry.url, args.repos, args.tags, args.twin_every)
        proxy = FaultyProxy(registry.url)
        proxy.delay(args.delay_ms / 1000)
        warm = Instance.objects.create(name="bench-refresh-warm-up", url=proxy.url)
        catalogue.refresh_images(warm)  # imports, connections, caches: not in the first figure
        warm.delete()
        figures: dict[tuple[int, str], list[tuple[float, int, int, int]]] = {}
        for number in range(args.rounds):
            for concurrency, name in (names.items() if number % 2 == 0 else reversed(names.items())):
                settings.APPARATE_IMAGES_REFRESH_CONCURRENCY = concurrency
                Instance.objects.filter(name=name).delete()
                instance = Instance.objects.create(name=name, url=proxy.url)
                for label in ("first refresh", "nothing changed"):
                    heads, gets = len(proxy.requests(method="HEAD")), len(proxy.requests(method="GET"))
                    with proxy.state.lock:
                        proxy.state.peaks.clear()  # the most at once, per refresh
                    started = time.perf_counter()
                    report = catalogue.refresh_images(instance)
                    seconds = time.perf_counter() - started
                    assert not report.errors, report.errors
                    figures.setdefault((concurrency, label), []).append((
                        seconds, len(proxy.requests(method="HEAD")) - heads,
                        len(proxy.requests(method="GET")) - gets, proxy.peak_in_flight()))
        tags = report.tags + report.twins
    finally:
        if proxy is not None:
            proxy.stop()
        registry.process.terminate()
        registry.process.wait(timeout=20)
        shutil.rmtree(work, ignore_errors=True)

    def rows(name: str) -> tuple[list, list]:
        tags = RegistryTag.objects.filter(instance__name=name).order_by("namespace", "repository", "tag")
        twins = AcceleratedImage.objects.filter(instance__name=name).order_by("namespace", "repository", "twin_tag")
        return (list(tags.values_list("namespace", "repository", "tag", "digest", "size", "media_type", "error")),
                list(twins.values_list("namespace", "repository", "twin_tag", "source_digest", "twin_digest",
                                       "twin_size", "media_type", "state")))

    print(f"registry: {args.repos} repositories, {tags} tags (twins included), {args.delay_ms:g} ms per request; "
          f"medians of {args.rounds} round(s)")
    median = {key: statistics.median(run[0] for run in runs) for key, runs in figures.items()}
    for (concurrency, label), runs in figures.items():
        seconds, (_, heads, gets, _) = median[(concurrency, label)], runs[0]
        print(f"  concurrency {concurrency:2d}, {label}: {seconds:.2f}s, {heads} HEADs ({heads / seconds:.0f}/s), "
              f"{gets} GETs, at most {max(run[3] for run in runs)} requests at once, "
              f"{median[(1, label)] / seconds:.2f}x one thread")
    print(f"rows identical with 1 and {args.concurrency} threads: {rows(names[1]) == rows(names[args.concurrency])}")


if __name__ == "__main__":
    main()
