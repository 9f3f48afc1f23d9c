"""App configuration for registry instances: credentials, the acceleration switch, the webhook secret."""

from django.apps import AppConfig


class RegistriesConfig(AppConfig):
    name = "registries"
    verbose_name = "Registries"
