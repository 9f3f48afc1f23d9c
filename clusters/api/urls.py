"""REST API routes of the clusters app (mounted under /api/v1/)."""

from rest_framework.routers import DefaultRouter

router = DefaultRouter()
urlpatterns = router.urls
