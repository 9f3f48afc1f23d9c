"""REST API routes of the clusters app (mounted under /api/v1/)."""

from rest_framework.routers import DefaultRouter

from clusters.api import views

router = DefaultRouter()
router.register("clusters", views.ClusterViewSet, basename="cluster")
router.register("nodes", views.NodeViewSet, basename="node")
router.register("label-jobs", views.LabelJobViewSet, basename="label-job")
router.register("suites", views.SuiteViewSet, basename="suite")
router.register("deploys", views.DeployViewSet, basename="deploy")
urlpatterns = router.urls
