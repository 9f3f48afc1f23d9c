"""The apparate console: Django project, shell (layout, auth, roles, audit) and Celery app."""

from .celery import app as celery_app

__all__ = ("celery_app",)
