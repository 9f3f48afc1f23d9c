"""App configuration for registry instances, webhook intake and push events."""

from django.apps import AppConfig


class RegistriesConfig(AppConfig):
    name = "registries"
    verbose_name = "Registries"
