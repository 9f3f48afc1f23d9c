"""REST API routes of the pipeline, registered on the console's API router (/api/v1/)."""

from pipeline.api.views import (
    ImageViewSet,
    JobViewSet,
    OperationViewSet,
    PushEventViewSet,
    RuleBackfillViewSet,
    WebhookHealthViewSet,
)


def register(router) -> None:
    router.register("events", PushEventViewSet, basename="pushevent")
    router.register("images", ImageViewSet, basename="image")
    router.register("jobs", JobViewSet, basename="job")
    router.register("operations", OperationViewSet, basename="operation")
    router.register("rules", RuleBackfillViewSet, basename="rule-backfill")
    router.register(r"instances/(?P<instance_pk>[0-9]+)/webhook-health", WebhookHealthViewSet,
                    basename="webhook-health")
