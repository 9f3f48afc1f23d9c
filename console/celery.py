"""The Celery application shared by the web process and the workers."""

import os

from celery import Celery
from celery.signals import worker_ready

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "console.settings")

app = Celery("apparate")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_ready.connect
def _report_in(sender, **kwargs):
    """A worker that just started reports in at once, not only at the next beat."""
    sender.app.send_task("core.tasks.heartbeat")
