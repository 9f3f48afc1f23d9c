"""App configuration for acceleration rules and conversion jobs."""

from django.apps import AppConfig


class RulesConfig(AppConfig):
    name = "rules"
    verbose_name = "Acceleration rules"
