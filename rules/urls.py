"""Web UI routes of the rules app."""

from django.urls import path

from rules import views

app_name = "rules"
urlpatterns = [
    path("", views.rule_list, name="list"),
    path("new/", views.rule_create, name="create"),
    path("check-pattern/", views.check_pattern, name="check-pattern"),
    path("<int:pk>/", views.rule_detail, name="detail"),
    path("<int:pk>/edit/", views.rule_edit, name="edit"),
    path("<int:pk>/delete/", views.rule_delete, name="delete"),
    path("<int:pk>/toggle/", views.rule_toggle, name="toggle"),
    path("<int:pk>/move/<str:direction>/", views.rule_move, name="move"),
    path("<int:pk>/validate/", views.rule_validate, name="validate"),
    path("<int:pk>/backfill/", views.rule_backfill, name="backfill"),
    path("jobs/", views.job_list, name="jobs"),
    path("jobs/convert-now/", views.job_convert_now, name="convert-now"),
    path("jobs/<int:pk>/", views.job_detail, name="job-detail"),
    path("jobs/<int:pk>/retry/", views.job_retry, name="job-retry"),
    path("jobs/<int:pk>/cancel/", views.job_cancel, name="job-cancel"),
]
