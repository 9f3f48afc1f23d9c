"""Webhook intake routes (mounted at /webhooks/): no login, authenticated by each instance's secret."""

from django.urls import path

from registries import views

app_name = "webhooks"
urlpatterns = [
    path("registry/<str:instance_id>/", views.webhook_intake, name="registry"),
]
