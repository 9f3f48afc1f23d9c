"""App configuration for the console shell."""

from django.apps import AppConfig


class ConsoleConfig(AppConfig):
    name = "console"
    verbose_name = "Console"

    def ready(self):
        from console.audit import connect_signals

        connect_signals()
