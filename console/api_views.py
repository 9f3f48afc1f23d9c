"""REST API of the console shell: the audit log, read-only for every role, and the token endpoint."""

from django.conf import settings
from drf_spectacular.utils import extend_schema
from rest_framework import viewsets
from rest_framework.authtoken.views import ObtainAuthToken
from rest_framework.exceptions import Throttled, ValidationError
from rest_framework.response import Response

from console.serializers import AuditEntrySerializer
from core.auth import issue_token, lockout_message
from core.filters import AuditEntryFilter
from core.models import AuditEntry


class AuditEntryViewSet(viewsets.ReadOnlyModelViewSet):
    """Every change made through the UI, the API or Django admin, newest first.

    Filter with `actor`, `source`, `action`, `object_type` (`app_label.model`), `object_id`,
    `date_from`/`date_to` (YYYY-MM-DD), `q` (object name contains) and `sort` (`timestamp` or
    `-timestamp`); `search` looks in object names and actor names.
    """

    queryset = AuditEntry.objects.all()
    serializer_class = AuditEntrySerializer
    filterset_class = AuditEntryFilter
    search_fields = ["object_repr", "actor_name"]
    ordering_fields = ["timestamp"]


@extend_schema(
    summary="Obtain an API token",
    description=(
        "Exchange a username and password for the user's API token (created on first use, then "
        "returned unchanged until it expires, APPARATE_TOKEN_LIFETIME_DAYS after it was issued; then a "
        "new one). Scripts send it as `Authorization: Token <key>`; the token acts with its user's "
        "role. Changing the password revokes it; an administrator can revoke it in Django admin → "
        "Auth Token. Repeated wrong passwords lock the username and the client address out for a "
        "while (429 with Retry-After)."
    ),
    auth=[],
)
class ObtainTokenView(ObtainAuthToken):
    """POST username + password → {"token": key}."""

    def post(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        try:
            serializer.is_valid(raise_exception=True)
        except ValidationError:
            # django-axes flags the request (DRF's wrapper) when this attempt is, or reached, a lockout.
            if getattr(request, "axes_locked_out", False):
                raise Throttled(wait=settings.APPARATE_LOGIN_LOCKOUT_SECONDS, detail=lockout_message()) from None
            raise
        return Response({"token": issue_token(serializer.validated_data["user"]).key})
