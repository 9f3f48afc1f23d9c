"""REST API routes of the rules app, registered on the console's API router (/api/v1/)."""

from rules.api.views import RuleViewSet


def register(router) -> None:
    router.register("rules", RuleViewSet, basename="rule")
