"""Error answers that fit the client: JSON for machines (API, webhooks, metrics), pages for people.

Two troubles get their own status instead of a generic 500:
- a request body larger than APPARATE_REQUEST_MAX_BYTES is refused with 413 before anything parses
  it (DRF's parsers ignore Django's upload limits, so the check runs first, in a middleware);
- database trouble (a lock held too long, a statement timeout, a database that does not answer) is
  answered 503 with Retry-After: the request may well succeed a moment later, and registries
  retry webhook deliveries that get a 5xx;
- so is a task queue (message broker) that does not answer when the work a request started, once
  its transaction committed, is handed to a worker.
"""

import logging
import sys

from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.http import HttpResponse, JsonResponse
from django.template import loader

from core.queue import BrokerUnavailable

logger = logging.getLogger(__name__)

# Paths whose clients are programs: they get JSON errors, never an HTML page.
MACHINE_PATH_PREFIXES = ("/api/", "/webhooks/", "/metrics")
# Webhook bodies have their own limit (APPARATE_WEBHOOK_MAX_BYTES), checked after the secret.
OWN_BODY_LIMIT_PREFIXES = ("/webhooks/",)
RETRY_AFTER_SECONDS = 10


def is_machine_client(request) -> bool:
    return request.path.startswith(MACHINE_PATH_PREFIXES)


def error_response(request, status: int, message: str, template: str, headers: dict | None = None,
                   context: dict | None = None):
    """`{"detail": message}` for machine clients (DRF's error shape), else the page `template`.

    Pages of 5xx answers are rendered without the request: its context (the user's role) needs
    the database, which may be what failed.
    """
    if is_machine_client(request):
        response = JsonResponse({"detail": message}, status=status)
    else:
        values = {"message": message, "request_path": request.path, **(context or {})}
        page = loader.get_template(template).render(values, request if status < 500 else None)
        response = HttpResponse(page, status=status)
    for name, value in (headers or {}).items():
        response[name] = value
    return response


class RequestBodyLimitMiddleware:
    """413 for a declared body over APPARATE_REQUEST_MAX_BYTES, before any parser reads it.

    Django reads no more than Content-Length of a body (none without it), so the header bounds
    what a view can be made to parse.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        limit = settings.APPARATE_REQUEST_MAX_BYTES
        try:
            declared = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return error_response(request, 400, "Content-Length is not a number.", "400.html")
        if declared > limit and not request.path.startswith(OWN_BODY_LIMIT_PREFIXES):
            message = f"The request body is {declared} bytes; the largest accepted is {limit} bytes."
            return error_response(request, 413, message, "413.html")
        return self.get_response(request)


def server_error(request):
    """handler500: database trouble becomes 503 + Retry-After; anything else a 500 that fits the client.

    Django calls it while the exception is being handled, so sys.exception() names it, wherever it
    was raised (a view, a serializer, a middleware saving the session).
    """
    error = sys.exception()
    if isinstance(error, (OperationalError, InterfaceError)):
        logger.warning("database trouble on %s %s: %s", request.method, request.path, error)
        return _try_again_later(request, "The database is busy or unavailable right now, so this request could "
                                         "not be completed.")
    if isinstance(error, BrokerUnavailable):
        logger.warning("task queue unavailable on %s %s: %s", request.method, request.path, error)
        return _try_again_later(request, "The task queue (the message broker) is unavailable right now, so the work "
                                         "this request started could not be handed to a worker.")
    return error_response(request, 500, "Server error; it has been logged.", "500.html")


def _try_again_later(request, trouble: str):
    """503 with Retry-After: `trouble`, and when to try again."""
    return error_response(request, 503, f"{trouble} Try again in {RETRY_AFTER_SECONDS} seconds.", "503.html",
                          {"Retry-After": str(RETRY_AFTER_SECONDS)})


def not_found(request, exception=None):
    """handler404: JSON for machine clients, the page for people."""
    return error_response(request, 404, f"Nothing at {request.path}.", "404.html")


def forbidden(request, exception=None):
    """handler403: JSON for machine clients, the page (with the role it needs) for people."""
    message = str(exception) if exception and str(exception) else "You do not have permission to do this."
    return error_response(request, 403, message, "403.html", context={"exception": message})


def bad_request(request, exception=None):
    """handler400: JSON for machine clients, the page for people."""
    return error_response(request, 400, "The request could not be understood.", "400.html")
