"""REST API of the console shell: the audit log, read-only for every role."""

from drf_spectacular.utils import extend_schema
from rest_framework import viewsets
from rest_framework.authtoken.views import ObtainAuthToken

from console.serializers import AuditEntrySerializer
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
        "returned unchanged). Scripts send it as `Authorization: Token <key>`; the token acts "
        "with its user's role. An administrator can revoke it in Django admin → Auth Token."
    ),
    auth=[],
)
class ObtainTokenView(ObtainAuthToken):
    """POST username + password → {"token": key}."""
