"""Web UI routes of the registries app (mounted at /instances/)."""

from django.urls import path

from registries import views

app_name = "registries"
urlpatterns = [
    path("", views.instance_list, name="list"),
    path("new/", views.instance_create, name="create"),
    path("<int:pk>/", views.instance_detail, name="detail"),
    path("<int:pk>/edit/", views.instance_edit, name="edit"),
    path("<int:pk>/delete/", views.instance_delete, name="delete"),
    path("<int:pk>/test-connection/", views.test_connection, name="test-connection"),
    path("<int:pk>/acceleration/", views.acceleration, name="acceleration"),
    path("<int:pk>/rotate-secret/", views.rotate_secret, name="rotate-secret"),
]
