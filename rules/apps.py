"""App configuration for acceleration rules, their matching and the validation box."""

from django.apps import AppConfig


class RulesConfig(AppConfig):
    name = "rules"
    verbose_name = "Acceleration rules"
