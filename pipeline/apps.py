"""App configuration for the conversion pipeline: push intake, events, jobs, twins, reconciler, images."""

from django.apps import AppConfig


class PipelineConfig(AppConfig):
    name = "pipeline"
    verbose_name = "Conversion pipeline"
