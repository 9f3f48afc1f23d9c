"""REST API routes of the pipeline, registered on the console's API router (/api/v1/)."""

from pipeline.api.views import ImageViewSet, JobViewSet, OperationViewSet, PushEventViewSet, RuleBackfillViewSet


def register(router) -> None:
    router.register("events", PushEventViewSet, basename="pushevent")
    router.register("images", ImageViewSet, basename="image")
    router.register("jobs", JobViewSet, basename="job")
    router.register("operations", OperationViewSet, basename="operation")
    router.register("rules", RuleBackfillViewSet, basename="rule-backfill")
