"""REST API routes of the rules app, registered on the console's API router (/api/v1/)."""

from rules.api.views import JobViewSet, RuleViewSet


def register(router) -> None:
    router.register("rules", RuleViewSet, basename="rule")
    router.register("jobs", JobViewSet, basename="job")
