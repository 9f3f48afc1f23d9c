"""REST API routes of the rules app (mounted under /api/v1/)."""

from rest_framework.routers import DefaultRouter

from rules.api.views import RuleViewSet

router = DefaultRouter()
router.register("rules", RuleViewSet, basename="rule")
urlpatterns = router.urls
