"""Redirect and htmx helpers shared by the apps' views."""

from django.shortcuts import redirect
from django.utils.http import url_has_allowed_host_and_scheme
from django_htmx.http import HTMX_STOP_POLLING, HttpResponseClientRedirect


def success_redirect(request, url: str):
    """After a successful form or action: a client redirect for htmx requests, a plain redirect otherwise."""
    return HttpResponseClientRedirect(url) if request.htmx else redirect(url)


def next_url(request, fallback: str) -> str:
    """The `next` the request names (POST, then GET) when it stays on this site, else `fallback`.

    Django's own check: no other host (`https://evil…`, `//evil…`, `\\\\evil…`), no scheme change
    from https to http, nothing but http(s).
    """
    candidate = request.POST.get("next") or request.GET.get("next") or ""
    safe = url_has_allowed_host_and_scheme(candidate, allowed_hosts={request.get_host()},
                                           require_https=request.is_secure())
    return candidate if safe else fallback


def stop_polling_when(response, done: bool):
    """Answer 286 once the polled thing is finished: htmx then stops polling."""
    if done:
        response.status_code = HTMX_STOP_POLLING
    return response
