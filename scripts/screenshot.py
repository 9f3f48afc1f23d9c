"""Regenerate the README screenshot (docs/screenshot.png): the dashboard with its charts.

    .venv/bin/python scripts/screenshot.py [--output docs/screenshot.png] [--width 1200] [--height 1300]

Seeds a throwaway SQLite database (in a temp directory; nothing else is touched) with two weeks of
made-up activity: instances, rules, pushes, conversions with their times and sizes, a cluster with
nodes and a worker heartbeat. Then it starts `manage.py runserver` on a free loopback port, logs in
as an operator in Debian's chromium (Playwright) and screenshots the dashboard. The figures are
fixed (a seeded random generator), so a new screenshot differs only where the page changed.
"""

import argparse
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
USER, PASSWORD = "alice", "screenshot-password-1"
DAYS = 14
BASE_LAYER = {"platform": "", "digest": "sha256:" + "ba5e" * 16, "size": 30 * 1024 * 1024,
              "startup_bytes": 412 * 1024}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def seed() -> None:
    """Two weeks of activity, the same every run."""
    from django.contrib.auth.models import Group, User
    from django.utils import timezone

    from clusters.models import Cluster, Node
    from core.models import WorkerHeartbeat
    from pipeline.choices import JobStatus, PushOutcome, PushReason
    from pipeline.models import AcceleratedImage, ConversionJob, PushEvent
    from registries.models import Instance
    from rules.models import Rule

    chance = random.Random(9)  # noqa: S311 - made-up figures, the same every run
    now = timezone.now()
    user = User.objects.create_user(USER, password=PASSWORD)
    user.groups.add(Group.objects.get_or_create(name="operator")[0])
    harbor = Instance.objects.create(name="harbor-prod", url="https://harbor.example.com", acceleration_enabled=True)
    Instance.objects.create(name="tcr-staging", url="https://staging.tencentcloudcr.com")
    rule = Rule.objects.create(instance=harbor, name="shop releases", namespace="shop", tag_pattern=r"v\d+\.\d+\.\d+")
    Rule.objects.create(instance=harbor, name="tools", namespace="tools", enabled=False)
    number = 0
    for day in range(DAYS - 1, -1, -1):
        for _ in range(chance.randint(3, 12) if day else 7):
            number += 1
            when = now - timedelta(days=day, hours=chance.uniform(0, 10 if not day else 23))
            repository = chance.choice(["web", "api", "worker", "cart"])
            tag = f"v1.{number // 10}.{number % 10}"
            converts = chance.random() < 0.75
            event = PushEvent.objects.create(
                instance=harbor, source="harbor", delivery_id=f"d{number}", namespace="shop", repository=repository,
                tag=tag if converts else f"{tag}-rc1", digest=f"sha256:{number:064x}",
                outcome=PushOutcome.CONVERSION_REQUESTED if converts else PushOutcome.SKIPPED,
                reason=PushReason.RULE_MATCHED if converts else PushReason.NO_RULE_MATCHED,
                reason_detail="Rule 'shop releases' matched." if converts else (
                    f"No enabled rule matched. Closest rule: 'shop releases', which failed on tag: tag "
                    f"'{tag}-rc1' does not fully match 'v\\d+\\.\\d+\\.\\d+'."),
                matched_rule=rule if converts else None)
            PushEvent.objects.filter(pk=event.pk).update(received_at=when)
            if not converts:
                continue
            failed = chance.random() < 0.08
            seconds = chance.lognormvariate(3.2, 0.5)
            finished = when + timedelta(seconds=seconds + 2)
            job = ConversionJob.objects.create(
                instance=harbor, namespace="shop", repository=repository, source_tag=tag,
                source_digest=event.digest, rule=rule, event=event,
                status=JobStatus.FAILED if failed else JobStatus.SUCCEEDED, attempts=1,
                started_at=finished - timedelta(seconds=seconds), finished_at=finished,
                reason="The registry refused the instance's credentials or denied access." if failed else "",
                result_tag="" if failed else f"{tag}-apparate",
                result_digest="" if failed else f"sha256:{number + 10**6:064x}",
                result_size=None if failed else chance.randint(40, 400) * 1024 * 1024)
            if not failed:
                # A base layer every twin shares, and the image's own layer: what a node fetches to start each.
                own_size = job.result_size - BASE_LAYER["size"]
                own = {"platform": "", "digest": f"sha256:{number + 2 * 10**6:064x}", "size": own_size,
                       "startup_bytes": int(own_size * chance.uniform(0.01, 0.06))}
                layers = [BASE_LAYER, own]
                AcceleratedImage.objects.create(
                    instance=harbor, namespace="shop", repository=repository, source_tag=tag,
                    source_digest=event.digest, twin_tag=f"{tag}-apparate", twin_digest=job.result_digest,
                    job=job, twin_size=job.result_size, media_type="application/vnd.oci.image.manifest.v1+json",
                    startup_layers=layers, startup_bytes=sum(layer["startup_bytes"] for layer in layers),
                    full_pull_bytes=sum(layer["size"] for layer in layers))
    cluster = Cluster.objects.create(name="prod", server="https://10.0.0.1:6443", token="demo")  # noqa: S106
    for index in range(6):
        Node.objects.create(cluster=cluster, name=f"node-{index}", labelled=index < 4)
    WorkerHeartbeat.objects.create(hostname="celery@console-1", seen_at=now)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "screenshot.png")
    parser.add_argument("--width", type=int, default=1200)
    parser.add_argument("--height", type=int, default=1300)
    arguments = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="apparate-screenshot-"))
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{workdir / 'db.sqlite3'}", "APPARATE_VAR_DIR": str(workdir),
           "DJANGO_SETTINGS_MODULE": "console.settings", "CELERY_TASK_ALWAYS_EAGER": "1",
           "APPARATE_IMAGES_REFRESH_AGE": "999999999"}
    os.environ.update(env)
    sys.path.insert(0, str(ROOT))
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)
    seed()
    port = free_port()
    server = subprocess.Popen([sys.executable, "manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"],
                              cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.2)
        from playwright.sync_api import sync_playwright

        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": arguments.width, "height": arguments.height})
            page.goto(f"http://127.0.0.1:{port}/login/")
            page.get_by_label("Username").fill(USER)
            page.get_by_label("Password").fill(PASSWORD)
            page.get_by_role("button", name="Log in").click()
            page.wait_for_selector("#activity-day svg")
            page.screenshot(path=str(arguments.output))
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=20)
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"{arguments.output}: {arguments.output.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
