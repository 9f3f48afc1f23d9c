"""The Celery application shared by the web process and the workers.

A worker gets its run identity when it starts (before its pool forks), reports in at once when it
is ready and then every APPARATE_HEARTBEAT_INTERVAL seconds from its main process, clears the
spool directories that jobs of dead worker runs left on this machine, and (on PostgreSQL) hands
the jobs of webhook deliveries to the queue from its main process (pipeline.dispatch).
"""

import os

from celery import Celery
from celery.signals import celeryd_init, worker_ready

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "console.settings")

app = Celery("apparate")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@celeryd_init.connect
def _start_session(sender, **kwargs):
    from core.actions import start_worker_session

    start_worker_session(sender)


@worker_ready.connect
def _report_in(sender, **kwargs):
    """A worker that just started reports in at once, not only at the next beat, and keeps reporting."""
    from django.db import connection

    from core.actions import record_heartbeat, start_heartbeat_thread
    from pipeline.dispatch import start_dispatcher_thread
    from pipeline.reconciler import sweep_job_workdirs

    try:
        record_heartbeat(sender.hostname)
        sweep_job_workdirs()
    finally:
        connection.close()  # the pool's processes never share the main process's connection
    start_heartbeat_thread()
    start_dispatcher_thread()
