"""htmx helpers shared by the apps' views."""

from django.shortcuts import redirect
from django_htmx.http import HTMX_STOP_POLLING, HttpResponseClientRedirect


def success_redirect(request, url: str):
    """After a successful form or action: a client redirect for htmx requests, a plain redirect otherwise."""
    return HttpResponseClientRedirect(url) if request.htmx else redirect(url)


def stop_polling_when(response, done: bool):
    """Answer 286 once the polled thing is finished: htmx then stops polling."""
    if done:
        response.status_code = HTMX_STOP_POLLING
    return response
