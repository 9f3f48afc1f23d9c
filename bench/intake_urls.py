"""URLconf of the webhook intake benchmark: the console's routes plus `POST /bench/empty/`.

The empty view goes through everything an API request pays for (token authentication, the role
check, DRF's request and response) and does nothing else: the baseline the webhook is compared
with. Bench only (bench/intake_settings.py); never mounted in production.
"""

from django.urls import include, path
from rest_framework.response import Response
from rest_framework.views import APIView

from console.urls import handler400, handler403, handler404, handler500
from core.roles import Role

__all__ = ["handler400", "handler403", "handler404", "handler500", "urlpatterns"]


class EmptyView(APIView):
    """Accepts a POST from any viewer and answers 202 with an empty object."""

    write_role = Role.VIEWER

    def post(self, request):
        return Response({}, status=202)


urlpatterns = [
    path("bench/empty/", EmptyView.as_view()),
    path("", include("console.urls")),
]
