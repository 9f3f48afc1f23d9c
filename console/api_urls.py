"""REST API routes of the console shell (audit log)."""

from rest_framework.routers import DefaultRouter

router = DefaultRouter()
urlpatterns = router.urls
