"""App configuration of the shared layer at the bottom: roles, audit log, encrypted fields, worker heartbeat."""

from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "core"
    verbose_name = "Console core"

    def ready(self):
        from django.db.backends.signals import connection_created

        from core import audit, auth
        from core.aggregates import register_sqlite_functions

        audit.connect_signals()
        auth.connect_signals()
        connection_created.connect(register_sqlite_functions, dispatch_uid="apparate-sqlite-functions")
