"""Top-level routes: the shell, each app's pages, the REST API and its schema, admin."""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from console import views
from pipeline.metrics import metrics_view

api_patterns = [
    path("", include("console.api_urls")),
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    # The split view serves Swagger UI's settings as a script file: no inline script under the CSP.
    path("docs/", SpectacularSwaggerSplitView.as_view(url_name="api-schema"), name="api-docs"),
]

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("audit/", views.audit_log, name="audit"),
    path("account/api/", views.api_access, name="api-access"),
    path("help/", views.help_page, name="help"),
    path("help/<slug:slug>/", views.help_page, name="help-section"),
    path("", include("pipeline.urls")),
    path("instances/", include("registries.urls")),
    path("rules/", include("rules.urls")),
    path("clusters/", include("clusters.urls")),
    path("api/v1/", include(api_patterns)),
    path("admin/", admin.site.urls),
    path("metrics", metrics_view, name="metrics"),
]

# Errors fit the client (JSON for the API, webhooks and metrics); database trouble answers 503.
handler400 = "core.errors.bad_request"
handler403 = "core.errors.forbidden"
handler404 = "core.errors.not_found"
handler500 = "core.errors.server_error"
