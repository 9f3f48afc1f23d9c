"""REST API routes of the registries app (mounted under /api/v1/)."""

from rest_framework.routers import DefaultRouter

from registries.api.views import InstanceViewSet, PushEventViewSet

router = DefaultRouter()
router.register("instances", InstanceViewSet, basename="instance")
router.register("events", PushEventViewSet, basename="pushevent")
urlpatterns = router.urls
