"""App configuration of the shared layer at the bottom: roles, audit log, encrypted fields, worker heartbeat."""

from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "core"
    verbose_name = "Console core"

    def ready(self):
        from core import audit, auth

        audit.connect_signals()
        auth.connect_signals()
