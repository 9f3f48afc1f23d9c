"""Web routes of the pipeline, mounted at the site root so that every path stays where it was
when these pages lived in the registries and rules apps (/instances/events/, /rules/jobs/, ...)."""

from django.urls import path

from pipeline import views

app_name = "pipeline"
urlpatterns = [
    path("webhooks/registry/<str:instance_id>/", views.webhook_intake, name="webhook"),
    path("instances/<int:pk>/webhook/test/", views.webhook_test, name="webhook-test"),
    path("instances/events/", views.event_list, name="events"),
    path("instances/images/", views.image_list, name="images"),
    path("instances/<int:pk>/images/delete/", views.image_delete, name="image-delete"),
    path("instances/<int:pk>/images/refresh/", views.image_refresh, name="image-refresh"),
    path("instances/<int:pk>/images/why/", views.image_why, name="image-why"),
    path("instances/<int:pk>/images/reconvert/", views.image_reconvert, name="image-reconvert"),
    path("rules/jobs/operations/<int:pk>/", views.operation_detail, name="operation"),
    path("rules/jobs/", views.job_list, name="jobs"),
    path("rules/jobs/convert-now/", views.job_convert_now, name="convert-now"),
    path("rules/jobs/<int:pk>/", views.job_detail, name="job-detail"),
    path("rules/jobs/<int:pk>/retry/", views.job_retry, name="job-retry"),
    path("rules/jobs/<int:pk>/cancel/", views.job_cancel, name="job-cancel"),
    path("rules/<int:pk>/backfill/", views.rule_backfill, name="backfill"),
    path("rules/preview/", views.rule_preview, name="rule-preview"),
]
