"""`manage.py runconsole`: the web server, a Celery worker and beat in one foreground command.

This is what `make run` starts: one process tree that stops together on Ctrl-C or SIGTERM.
The command supervises its children: a worker or beat that dies (killed, crashed) is started
again after a backoff (1 s, doubling up to 30 s, back to 1 s once it has run for a minute), in a
fresh process group so that nothing of the dead one lingers. Files it creates are private to its
user (umask 077). Production runs the web server, workers and beat as separate services (README).
"""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

BACKOFF_FIRST, BACKOFF_MAX, HEALTHY_AFTER = 1.0, 30.0, 60.0
STOP_TIMEOUT = 20


def _stop(signum, frame):
    # SIGTERM would end Python without running `finally`, orphaning the children: exit cleanly instead.
    raise SystemExit(0)


@dataclass
class Child:
    """One supervised process: its command, the running Popen, and when it may be started again."""

    name: str
    command: list[str]
    process: subprocess.Popen | None = None
    started: float = 0.0
    backoff: float = BACKOFF_FIRST
    restart_at: float | None = None

    def start(self) -> None:
        # Its own process group: stopping or clearing up after it reaches its pool processes too.
        self.process = subprocess.Popen(self.command, env=os.environ.copy(), start_new_session=True)
        self.started = time.monotonic()

    def signal_group(self, signum: int) -> None:
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signum)


class Supervisor:
    """Starts the children, restarts the ones that die, and stops them all together."""

    def __init__(self, children: list[Child], say):
        self.children = children
        self.say = say
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._watch, name="runconsole-supervisor", daemon=True)

    def start(self) -> None:
        for child in self.children:
            child.start()
        self.thread.start()

    def _watch(self) -> None:
        while not self.stopping.wait(0.5):
            now = time.monotonic()
            for child in self.children:
                if child.restart_at is None and child.process.poll() is not None:
                    code = child.process.returncode
                    child.signal_group(signal.SIGKILL)  # whatever it left behind
                    child.backoff = BACKOFF_FIRST if now - child.started >= HEALTHY_AFTER else child.backoff
                    child.restart_at = now + child.backoff
                    self.say(f"The {child.name} exited ({code}); starting it again in {child.backoff:.0f}s.")
                    child.backoff = min(BACKOFF_MAX, child.backoff * 2)
                elif child.restart_at is not None and now >= child.restart_at and not self.stopping.is_set():
                    child.restart_at = None
                    child.start()

    def stop(self) -> None:
        """SIGTERM to every child's group; SIGKILL to what is still there after STOP_TIMEOUT seconds."""
        self.stopping.set()
        self.thread.join(timeout=5)
        for child in self.children:
            child.signal_group(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for child in self.children:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            child.signal_group(signal.SIGKILL)
            child.process.wait()


class Command(BaseCommand):
    help = "Start the console web server, a Celery worker and beat, for a single machine."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--concurrency", type=int, default=2, help="Worker processes (default 2).")

    def handle(self, *args, host, port, concurrency, **options):
        os.umask(0o077)  # the SQLite file, broker messages and beat's schedule are private (inherited)
        self._check_port_free(host, port)
        celery = [sys.executable, "-m", "celery", "-A", "console"]
        supervisor = Supervisor([
            Child("worker", [*celery, "worker", "--loglevel", "INFO", "--concurrency", str(concurrency)]),
            Child("beat", [*celery, "beat", "--loglevel", "INFO"]),
        ], say=lambda text: self.stderr.write(self.style.WARNING(text)))
        supervisor.start()
        signal.signal(signal.SIGTERM, _stop)
        shown = f"[{host}]" if ":" in host else host
        self.stdout.write(self.style.SUCCESS(f"apparate is starting: open http://{shown}:{port}/ and log in."))
        try:
            call_command("runserver", f"{shown}:{port}", use_reloader=False, insecure_serving=True)
        finally:
            supervisor.stop()

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
