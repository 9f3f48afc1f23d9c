"""Logging in and API tokens: tokens that expire, tokens revoked with a password change, and the
answer when django-axes has locked out a username or client address after failed logins.

- API tokens live APPARATE_TOKEN_LIFETIME_DAYS after they were issued; an expired one answers 401
  and `POST /api/v1/auth/token/` then issues a new one.
- Changing a user's password deletes their tokens (sessions end already: Django checks the
  password hash stored in each session).
- Failed logins, on the login page, Django admin and the token endpoint alike, are counted by
  django-axes per username and per client address; its backend refuses a locked-out attempt before
  any password is hashed. `lockout_response` answers: 429 with Retry-After, JSON for machines, the
  login page with the reason for people.
"""

from datetime import timedelta

from axes.backends import AxesStandaloneBackend
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.forms import AuthenticationForm
from django.db import transaction
from django.db.models.signals import pre_save
from django.http import JsonResponse
from django.shortcuts import render
from django.utils import timezone
from rest_framework.authentication import TokenAuthentication
from rest_framework.authtoken.models import Token
from rest_framework.exceptions import AuthenticationFailed

from core.errors import is_machine_client


def token_expired(token: Token, now=None) -> bool:
    lifetime = timedelta(days=settings.APPARATE_TOKEN_LIFETIME_DAYS)
    return (now or timezone.now()) - token.created >= lifetime


def issue_token(user) -> Token:
    """The user's API token: the current one while it is valid, otherwise a new one."""
    token, created = Token.objects.get_or_create(user=user)
    if not created and token_expired(token):
        token.delete()
        token = Token.objects.create(user=user)
    return token


def regenerate_token(user) -> Token:
    """A new API token for `user`; the old one stops working at once. Both changes are audited
    (core/audit.py names the token by its user and masks its key)."""
    with transaction.atomic():
        Token.objects.filter(user=user).delete()
        return Token.objects.create(user=user)


def token_expires_at(token: Token):
    return token.created + timedelta(days=settings.APPARATE_TOKEN_LIFETIME_DAYS)


class ExpiringTokenAuthentication(TokenAuthentication):
    """`Authorization: Token <key>`, refused with 401 once the token is older than its lifetime."""

    def authenticate_credentials(self, key):
        user, token = super().authenticate_credentials(key)
        if token_expired(token):
            raise AuthenticationFailed("The token has expired; get a new one from POST /api/v1/auth/token/.")
        return user, token


def _revoke_tokens_on_password_change(sender, instance, update_fields=None, **kwargs):
    """Delete the user's tokens when their password is set to a new one.

    `_password` holds the new raw password between set_password() and save(); Django's own rehash
    on login (same password, new hash parameters) clears it first, so it revokes nothing.
    """
    if instance.pk is None or getattr(instance, "_password", None) is None:
        return
    if update_fields is not None and "password" not in update_fields:
        return
    Token.objects.filter(user_id=instance.pk).delete()


def connect_signals() -> None:
    pre_save.connect(_revoke_tokens_on_password_change, sender=get_user_model(),
                     dispatch_uid="core.auth.revoke_tokens")


class LockoutBackend(AxesStandaloneBackend):
    """django-axes' check, first in AUTHENTICATION_BACKENDS: a locked-out username or address is refused
    before a password is hashed. A check without a request (a management command, Django's test
    client `login()`) comes from no client, so there is nothing to count it against."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        if request is None:
            return None
        return super().authenticate(request, username=username, password=password, **kwargs)


def lockout_message() -> str:
    minutes = max(1, round(settings.APPARATE_LOGIN_LOCKOUT_SECONDS / 60))
    return (f"Too many failed logins for this username or from this address. Try again in {minutes} minute"
            f"{'s' if minutes != 1 else ''}, or ask an administrator to unlock it (Django admin → Access attempts).")


def lockout_response(request, original_response=None, credentials=None):
    """django-axes' AXES_LOCKOUT_CALLABLE: 429 + Retry-After, JSON or the login page with the reason."""
    retry_after = str(int(settings.APPARATE_LOGIN_LOCKOUT_SECONDS))
    if is_machine_client(request):
        response = JsonResponse({"detail": lockout_message()}, status=429)
    else:
        form = AuthenticationForm(request)
        response = render(request, "registration/login.html", {"form": form, "lockout": lockout_message()},
                          status=429)
    response["Retry-After"] = retry_after
    return response


def client_ip(request) -> str | None:
    """The client address failed logins are counted by: the peer, or behind a trusted proxy
    (USE_X_FORWARDED_HEADERS) the address that proxy appended last to X-Forwarded-For."""
    if settings.USE_X_FORWARDED_HEADERS:
        forwarded = [part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if part.strip()]
        if forwarded:
            return forwarded[-1]
    return request.META.get("REMOTE_ADDR")
