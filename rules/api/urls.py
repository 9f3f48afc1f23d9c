"""REST API routes of the rules app (mounted under /api/v1/)."""

from rest_framework.routers import DefaultRouter

router = DefaultRouter()
urlpatterns = router.urls
