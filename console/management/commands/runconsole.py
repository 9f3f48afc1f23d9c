"""`manage.py runconsole`: the web server and a Celery worker (with beat) in one foreground command.

This is what `make run` starts: one process tree that stops together on Ctrl-C or SIGTERM.
Production runs the web server and workers as separate services instead (see README).
"""

import os
import signal
import socket
import subprocess
import sys

from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError


def _stop(signum, frame):
    # SIGTERM would end Python without running `finally`, orphaning the worker: exit cleanly instead.
    raise SystemExit(0)


class Command(BaseCommand):
    help = "Start the console web server and a Celery worker with beat, for a single machine."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--concurrency", type=int, default=2, help="Worker processes (default 2).")

    def handle(self, *args, host, port, concurrency, **options):
        self._check_port_free(host, port)
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "console", "worker", "--beat",
             "--loglevel", "INFO", "--concurrency", str(concurrency)],
            env=os.environ.copy(),
        )
        signal.signal(signal.SIGTERM, _stop)
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
                worker.wait()

    def _check_port_free(self, host, port):
        """Refuse early (before starting the worker) when the web server could not bind."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError as error:
                message = f"Cannot listen on {host}:{port}: {error.strerror}. Choose another --port."
                raise CommandError(message) from None
