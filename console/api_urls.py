"""REST API routes of the console shell: audit log and API tokens for scripts."""

from django.urls import path
from rest_framework.routers import DefaultRouter

from console.api_views import AuditEntryViewSet, ObtainTokenView

router = DefaultRouter()
router.register("audit", AuditEntryViewSet, basename="audit")
urlpatterns = [
    path("auth/token/", ObtainTokenView.as_view(), name="api-token"),
    *router.urls,
]
