"""Benchmark: webhook deliveries through gunicorn, beside an empty token-authenticated API view.

PostgreSQL, --instances registry instances (acceleration on) and --rules rules spread evenly over
them. gunicorn serves the console with bench/intake_settings.py, whose URLconf adds `POST
/bench/empty/`: token authentication, the role check, DRF, and nothing else (the same-run
baseline). For --rounds rounds, in turn, --requests requests from --concurrency client threads of:
- empty: the empty view, with the same body as a webhook delivery;
- non-matching: one manifest push per delivery that no rule matches (every rule of the instance
  evaluated, the closest one named);
- matching: one manifest push per delivery that the instance's last rule matches (a job each);
deliveries spread over every instance, each its own delivery id and digest. It prints requests/s,
p50 and p99 latency and the gunicorn workers' CPU per request (from /proc), the medians over the
rounds, and each webhook figure's ratio to the empty view's.

Then one delivery of --big events (half of them matching) per round, timed; the SQL statements of
a one-push delivery (non-matching, matching) and of the big one, counted in this process through
the same view (django's CaptureQueriesContext); and that nothing was lost: every delivery answered
202, and the database holds one event per push sent, in delivery order, and one job per matching push.
Last, the jobs the deliveries left awaiting dispatch are sent from this process as a worker's
dispatcher sends them (pipeline.dispatch), with the CPU per job: the work the intake hands off.

Needs PostgreSQL and Redis: DATABASE_URL (a database of its own; migrated, the bench's instances
replaced) and CELERY_BROKER_URL=redis://… (a Redis database of its own: the jobs' messages land
there, nobody runs them; flushed at the end).

Measured 2026-11-29 on the 2-core shared machine (defaults but --requests 500; load average 1.4-2.8),
before → after the batched intake: CPU per request against the empty view 2.22× → 1.59× (non-matching)
and 3.60× → 2.48× (matching: the job's INSERT and its Celery message are most of the rest); one
delivery of 1,000 events 14.74 s → 1.51 s; SQL statements per delivery 9 → 8 (non-matching, now with
the webhook health counter), 18 → 13 (matching), 12,501 → 13 (1,000 events); 0 errors, nothing lost.

Then a matching push made cheaper (same command, before and after back to back, twice each; load
average 1.9-2.6): the jobs INSERTed and set on their events in one statement, the events' INSERT
without a savepoint, both built from a cached column list, and the rules checked without their
sentences until one matches. Matching CPU per request 10.12 / 9.96 ms → 9.12 / 8.98 ms, i.e.
2.38× / 2.09× → 1.79× / 2.14× the empty view (4.26-5.10 ms from run to run, which moves the ratio
more than anything else); non-matching 1.57× / 1.34× → 1.35× / 1.50×; one delivery of 1,000 events
1.47 s / 1.39 s → 1.24 s / 1.04 s; statements per matching delivery 13 → 9; 0 errors, nothing lost.
With the rules then read through a plain cursor, at load average 0.5-1.7: matching 8.78 ms (2.05×,
empty 4.28 ms) and 9.20 ms (2.04×, empty 4.52 ms); non-matching 1.43× and 1.41×. So ≤ 2× is not
reached for certain. What is left above the non-matching push is mostly the Celery publish of the
job's message: about 2 ms of CPU inside a request (0.75 ms in a tight loop), measured in process by
leaving it out (kombu makes a Redis client per message, Celery builds the message, its repr, routes).

Then the intake stopped publishing (2026-11-29, a quieter machine: empty view 1.46-1.82 ms): on
PostgreSQL its job statement marks the jobs awaiting dispatch and NOTIFYs, and a dispatcher in each
worker sends the messages. Same command, the code before and after back to back, three times:
matching 2.70× / 2.16× / 2.18× → 1.73× / 1.78× / 1.79× the empty view (3.28-3.94 → 2.68-2.82 ms),
288-346 → 382-404 deliveries/s; non-matching 1.52-1.70× → 1.48-1.53×. Two more runs after: 1.86×
and 1.64× (non-matching 1.68×, 1.40×). One delivery of 1,000 events 0.41 s; statements unchanged
(8 / 9 / 9); 0 errors, nothing lost. The dispatcher sent the 3,541 jobs in 1.67 s at 0.39-0.40 ms
of CPU per job, in the worker, off the request.

Usage: DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench_intake CELERY_BROKER_URL=redis://127.0.0.1:6379/13 \
       .venv/bin/python bench/webhook_intake.py [--instances 50] [--rules 1000] [--requests 1000] \
       [--concurrency 4] [--workers 2] [--rounds 3] [--big 1000]
"""

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ["DJANGO_SETTINGS_MODULE"] = "bench.intake_settings"
os.environ.setdefault("ALLOWED_HOSTS", "127.0.0.1,localhost,testserver")
os.environ.setdefault("LOG_LEVEL", "WARNING")

PREFIX = "bench-intake-"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
KINDS = ("empty", "non-matching", "matching")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def setup_data(args):
    """The bench's instances, rules and API user, afresh; returns (instances, token)."""
    from django.contrib.auth.models import Group, User
    from django.core.management import call_command

    from core.auth import issue_token
    from core.roles import Role
    from registries.models import Instance
    from rules.models import Rule

    call_command("migrate", verbosity=0)
    Instance.objects.filter(name__startswith=PREFIX).delete()
    instances = [Instance.objects.create(name=f"{PREFIX}{n:02d}", url=f"http://registry-{n:02d}.bench:5000",
                                         acceleration_enabled=True) for n in range(args.instances)]
    per_instance = args.rules // args.instances
    Rule.objects.bulk_create(
        Rule(instance=instance, name=f"rule {k:02d}", position=k + 1, namespace="team",
             repository_pattern=f"svc-{k:02d}-[a-z]+", tag_pattern=r"v\d+\.\d+")
        for instance in instances for k in range(per_instance)
    )
    user, _ = User.objects.get_or_create(username="bench-intake")
    user.groups.add(Group.objects.get_or_create(name=Role.VIEWER.group_name)[0])
    return instances, issue_token(user).key, per_instance


def manifest_event(repository: str, tag: str) -> dict:
    """One Distribution notification of a manifest push, with a fresh delivery id and digest."""
    digest = f"sha256:{uuid.uuid4().hex}{uuid.uuid4().hex}"
    return {
        "id": str(uuid.uuid4()), "timestamp": "2026-01-01T00:00:00Z", "action": "push",
        "target": {"mediaType": OCI_MANIFEST, "size": 512, "digest": digest, "length": 512, "repository": repository,
                   "tag": tag, "url": f"http://registry.bench/v2/{repository}/manifests/{digest}"},
        "request": {"id": "r1", "addr": "127.0.0.1", "host": "registry", "method": "PUT", "useragent": "bench"},
        "actor": {"name": "ci-bot"}, "source": {"addr": "registry:5000", "instanceID": "bench"},
    }


def push(matching: bool, last_rule: int) -> dict:
    """A push the instance's last rule matches, or one every rule fails (on the repository)."""
    return manifest_event(f"team/svc-{last_rule:02d}-web" if matching else "team/other-web", "v1.2")


def deliveries(kind: str, count: int, instances: list, last_rule: int) -> list[tuple[str, dict, bytes, list]]:
    """(path, headers, body, events) per request, made before the clock starts."""
    made = []
    for n in range(count):
        instance = instances[n % len(instances)]
        events = [push(kind == "matching", last_rule)]
        body = json.dumps({"events": events}).encode()
        if kind == "empty":
            made.append(("/bench/empty/", {"Authorization": f"Token {TOKEN}"}, body, []))
        else:
            made.append((f"/webhooks/registry/{instance.pk}/", {"Authorization": instance.webhook_secret}, body,
                         events))
    return made


def post(port: int, path: str, headers: dict, body: bytes, timeout: float = 60) -> tuple[int, float, bytes]:
    """One POST on a new connection (gunicorn's sync workers close each one): (status, seconds, body)."""
    started = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("POST", path, body, {"Content-Type": "application/json", **headers})
        response = connection.getresponse()
        content = response.read()
    finally:
        connection.close()
    return response.status, time.perf_counter() - started, content


def workers_cpu(master_pid: int) -> float:
    """CPU seconds (user + system) used so far by gunicorn's master and its workers."""
    pids = [master_pid]
    children = Path(f"/proc/{master_pid}/task/{master_pid}/children")
    pids += [int(pid) for pid in children.read_text().split()]
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLOCK_TICKS


def run_phase(port: int, master_pid: int, requests: list, concurrency: int) -> dict:
    """Send every request from `concurrency` threads; throughput, latencies, CPU per request, failures."""
    latencies, failures = [], []
    lock = threading.Lock()
    queue = iter(requests)

    def client():
        while True:
            with lock:
                item = next(queue, None)
            if item is None:
                return
            path, headers, body, _ = item
            try:
                status, seconds, content = post(port, path, headers, body)
            except OSError as error:
                status, seconds, content = 0, 0.0, str(error).encode()
            with lock:
                latencies.append(seconds)
                if status != 202:
                    failures.append((status, content[:200]))

    cpu_before = workers_cpu(master_pid)
    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    cpu = workers_cpu(master_pid) - cpu_before
    latencies.sort()
    return {
        "rps": len(requests) / wall, "p50": latencies[len(latencies) // 2],
        "p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        "cpu_ms": cpu * 1000 / len(requests), "failures": failures,
    }


def start_gunicorn(workers: int) -> tuple[subprocess.Popen, int]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [str(ROOT / ".venv/bin/gunicorn"), "console.wsgi:application", "--chdir", str(ROOT), "--bind",
         f"127.0.0.1:{port}", "--workers", str(workers), "--backlog", "2048", "--timeout", "120"],
        env=os.environ.copy(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            status, _, _ = post(port, "/bench/empty/", {"Authorization": f"Token {TOKEN}"}, b"{}", timeout=5)
            if status == 202:
                return server, port
        except OSError:
            time.sleep(0.2)
    server.kill()
    raise SystemExit(f"gunicorn did not answer: {server.stderr.read().decode()[-2000:]}")


def count_statements(instance, events: list) -> tuple[int, dict]:
    """SQL statements of one delivery through the same view, in this process, by their first word."""
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    connection.queries_log = deque(maxlen=1_000_000)  # django keeps 9,000 by default
    with CaptureQueriesContext(connection) as captured:
        response = Client().post(f"/webhooks/registry/{instance.pk}/", json.dumps({"events": events}),
                                 content_type="application/json", HTTP_AUTHORIZATION=instance.webhook_secret)
    assert response.status_code == 202, response.content
    kinds = {}
    for query in captured.captured_queries:
        word = query["sql"].split(None, 1)[0].upper()
        kinds[word] = kinds.get(word, 0) + 1
    return len(captured.captured_queries), kinds


def print_counts(counts: dict) -> None:
    print("\nSQL statements per delivery:")
    for name, (total, kinds) in counts.items():
        print(f"  {name:22} {total:5}  " + ", ".join(f"{word} {n}" for word, n in sorted(kinds.items())))


def check_recorded(sent: list[dict], matching: int, instances: list) -> list[str]:
    """Problems found: a push sent but not stored once, out of order, or a missing job."""
    from pipeline.models import ConversionJob, PushEvent

    problems = []
    ids = [event["id"] for event in sent]
    stored = dict(PushEvent.objects.filter(instance__in=instances).values_list("delivery_id", "id"))
    missing = [delivery for delivery in ids if delivery not in stored]
    if missing or len(stored) != len(ids):
        problems.append(f"{len(missing)} push(es) not stored; {len(stored)} events for {len(ids)} pushes sent")
    jobs = ConversionJob.objects.filter(instance__in=instances).count()
    if jobs != matching:
        problems.append(f"{jobs} jobs for {matching} matching pushes")
    return problems


def dispatch_awaiting(instances: list) -> list[str]:
    """Send the jobs the deliveries left awaiting dispatch, in this process as a worker's dispatcher
    does (pipeline.dispatch), and print its CPU per job: the work the intake no longer does."""
    from pipeline.dispatch import dispatch_all_awaiting
    from pipeline.models import ConversionJob

    awaiting = ConversionJob.objects.filter(instance__in=instances, awaiting_dispatch=True).count()
    cpu, started = time.process_time(), time.perf_counter()
    dispatched = dispatch_all_awaiting()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - started
    print(f"\ndispatch (a worker's dispatcher, in this process): {dispatched} jobs sent in {wall:.2f} s, "
          f"{cpu * 1000 / max(dispatched, 1):.2f} ms CPU per job")
    return [] if dispatched == awaiting else [f"{dispatched} jobs dispatched of {awaiting} awaiting"]


def in_order(events: list[dict]) -> bool:
    from pipeline.models import PushEvent

    ids = dict(PushEvent.objects.filter(delivery_id__in=[e["id"] for e in events]).values_list("delivery_id", "id"))
    order = [ids.get(event["id"]) for event in events]
    return None not in order and order == sorted(order)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=50)
    parser.add_argument("--rules", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=1000, help="requests per kind and round")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn sync workers")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--big", type=int, default=1000, help="events in the one big delivery per round")
    parser.add_argument("--counts-only", action="store_true", help="count the SQL statements, no load")
    args = parser.parse_args()
    if not os.environ.get("DATABASE_URL", "").startswith("postgres"):
        raise SystemExit("Set DATABASE_URL to a PostgreSQL database of the bench's own.")
    if not os.environ.get("CELERY_BROKER_URL", "").startswith("redis://"):
        raise SystemExit("Set CELERY_BROKER_URL to a Redis database of the bench's own.")
    import django

    django.setup()
    global TOKEN
    instances, TOKEN, per_instance = setup_data(args)
    last_rule = per_instance - 1
    print(f"{len(instances)} instances, {per_instance * len(instances)} rules ({per_instance} each); gunicorn "
          f"--workers {args.workers}; {args.requests} requests per kind and round from {args.concurrency} threads; "
          f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")

    non_matching, matching = push(False, last_rule), push(True, last_rule)
    big_events = [push(n % 2 == 0, last_rule) for n in range(args.big)]
    counts = {
        "non-matching push": count_statements(instances[0], [non_matching]),
        "matching push": count_statements(instances[0], [matching]),
        f"{args.big}-event delivery": count_statements(instances[1], big_events),
    }
    sent = [non_matching, matching, *big_events]
    matching_sent = 1 + args.big - args.big // 2
    order_ok = in_order(big_events)

    if args.counts_only:
        print_counts(counts)
        return
    server, port = start_gunicorn(args.workers)
    results = {kind: [] for kind in KINDS}
    big_seconds, failures = [], []
    try:
        for kind in KINDS:  # warm-up, not counted: every worker has imported and connected
            warm = deliveries(kind, 40, instances, last_rule)
            failures += run_phase(port, server.pid, warm, args.concurrency)["failures"]
            sent += [event for *_, events in warm for event in events]
            matching_sent += 40 if kind == "matching" else 0
        for _ in range(args.rounds):
            for kind in KINDS:
                requests = deliveries(kind, args.requests, instances, last_rule)
                result = run_phase(port, server.pid, requests, args.concurrency)
                results[kind].append(result)
                failures += result["failures"]
                for _, _, _, events in requests:
                    sent += events
                matching_sent += args.requests if kind == "matching" else 0
            events = [push(n % 2 == 0, last_rule) for n in range(args.big)]
            instance = instances[2]
            status, seconds, content = post(port, f"/webhooks/registry/{instance.pk}/",
                                            {"Authorization": instance.webhook_secret},
                                            json.dumps({"events": events}).encode(), timeout=300)
            if status != 202:
                failures.append((status, content[:200]))
            big_seconds.append(seconds)
            sent += events
            matching_sent += args.big - args.big // 2
            order_ok = order_ok and in_order(events)
    finally:
        server.terminate()
        server.wait(timeout=30)
    load_after = os.getloadavg()

    def median(kind, key):
        return statistics.median(result[key] for result in results[kind])

    print(f"\n{'':14} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'CPU ms/req':>11}   ratio to empty: "
          f"{'CPU/req':>8} {'1/rps':>7} {'p99':>6}")
    for kind in KINDS:
        print(f"{kind:14} {median(kind, 'rps'):8.1f} {median(kind, 'p50') * 1000:8.2f} "
              f"{median(kind, 'p99') * 1000:8.2f} {median(kind, 'cpu_ms'):11.2f}   {'':16}"
              f"{median(kind, 'cpu_ms') / median('empty', 'cpu_ms'):8.2f} "
              f"{median('empty', 'rps') / median(kind, 'rps'):7.2f} "
              f"{median(kind, 'p99') / median('empty', 'p99'):6.2f}")
    print(f"\none delivery of {args.big} events (half matching): "
          + ", ".join(f"{s:.2f}s" for s in big_seconds) + f" (median {statistics.median(big_seconds):.2f}s)")
    print_counts(counts)
    problems = check_recorded(sent, matching_sent, instances)
    if not order_ok:
        problems.append("the events of a big delivery were not stored in delivery order")
    problems += dispatch_awaiting(instances)
    total = (sum(len(r) for r in results.values()) * args.requests + 40 * len(KINDS) + len(big_seconds))
    print(f"\nerrors: {len(failures)} of {total} "
          f"deliveries; lost or duplicated: {'; '.join(problems) or 'none'} ({len(sent)} pushes sent)")
    for status, content in failures[:5]:
        print(f"  {status}: {content!r}")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in load_after)}")
    import redis

    redis.Redis.from_url(os.environ["CELERY_BROKER_URL"]).flushdb()


TOKEN = ""

if __name__ == "__main__":
    main()
