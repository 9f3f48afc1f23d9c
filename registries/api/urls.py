"""REST API routes of the registries app, registered on the console's API router (/api/v1/)."""

from registries.api.views import ImageViewSet, InstanceViewSet, PushEventViewSet


def register(router) -> None:
    router.register("instances", InstanceViewSet, basename="instance")
    router.register("events", PushEventViewSet, basename="pushevent")
    router.register("images", ImageViewSet, basename="image")
