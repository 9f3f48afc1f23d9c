"""REST API routes (mounted at /api/v1/): one router for every app, so its root view lists them all.

Each app contributes its viewsets through `register(router)` in its api/urls.py; the console adds
the audit log and the token endpoint for scripts.
"""

from django.urls import path
from rest_framework.routers import DefaultRouter

from clusters.api.urls import register as register_clusters
from console.api_views import AuditEntryViewSet, ObtainTokenView
from pipeline.api.urls import register as register_pipeline
from registries.api.urls import register as register_registries
from rules.api.urls import register as register_rules

router = DefaultRouter()
register_registries(router)
# The pipeline adds /rules/{id}/backfill/ under the rules prefix; the rules app registers after it so
# that the API root's "rules" entry names the rules list.
register_pipeline(router)
register_rules(router)
register_clusters(router)
router.register("audit", AuditEntryViewSet, basename="audit")
urlpatterns = [
    path("auth/token/", ObtainTokenView.as_view(), name="api-token"),
    *router.urls,
]
