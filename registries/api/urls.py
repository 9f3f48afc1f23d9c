"""REST API routes of the registries app, registered on the console's API router (/api/v1/)."""

from registries.api.views import InstanceViewSet


def register(router) -> None:
    router.register("instances", InstanceViewSet, basename="instance")
