"""`manage.py runconsole`: the web server and a Celery worker (with beat) in one foreground command.

This is what `make run` starts: one process tree that stops together on Ctrl-C. Production runs
the web server and workers as separate services instead (see README).
"""

import os
import signal
import subprocess
import sys

from django.core.management import call_command
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Start the console web server and a Celery worker with beat, for a single machine."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)

    def handle(self, *args, host, port, **options):
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "console", "worker", "--beat",
             "--loglevel", "INFO", "--concurrency", "2"],
            env=os.environ.copy(),
        )
        shown = f"[{host}]" if ":" in host else host
        self.stdout.write(self.style.SUCCESS(f"apparate is starting: open http://{shown}:{port}/ and log in."))
        try:
            call_command("runserver", f"{shown}:{port}", use_reloader=False, insecure_serving=True)
        finally:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(timeout=20)
            except subprocess.TimeoutExpired:
                worker.kill()
