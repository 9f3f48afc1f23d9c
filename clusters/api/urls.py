"""REST API routes of the clusters app, registered on the console's API router (/api/v1/)."""

from clusters.api import views


def register(router) -> None:
    router.register("clusters", views.ClusterViewSet, basename="cluster")
    router.register("nodes", views.NodeViewSet, basename="node")
    router.register("label-jobs", views.LabelJobViewSet, basename="label-job")
    router.register("suites", views.SuiteViewSet, basename="suite")
    router.register("deploys", views.DeployViewSet, basename="deploy")
