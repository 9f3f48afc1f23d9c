"""REST API routes of the rules app (mounted under /api/v1/)."""

from rest_framework.routers import DefaultRouter

from rules.api.views import JobViewSet, RuleViewSet

router = DefaultRouter()
router.register("rules", RuleViewSet, basename="rule")
router.register("jobs", JobViewSet, basename="job")
urlpatterns = router.urls
