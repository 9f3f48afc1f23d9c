"""Web UI routes of the clusters app."""

from django.urls import path

from clusters import views

app_name = "clusters"
urlpatterns = [
    path("", views.cluster_list, name="list"),
    path("new/", views.cluster_create, name="create"),
    path("nodes/", views.node_list, name="nodes"),
    path("label/", views.label_create, name="label"),
    path("jobs/", views.job_list, name="jobs"),
    path("jobs/<int:pk>/", views.job_detail, name="job"),
    path("deploy/", views.deploy, name="deploy"),
    path("deploys/<int:pk>/", views.deploy_detail, name="deploy-detail"),
    path("deploys/<int:pk>/rollout/", views.deploy_rollout_watch, name="deploy-rollout"),
    path("<int:pk>/", views.cluster_detail, name="detail"),
    path("<int:pk>/edit/", views.cluster_edit, name="edit"),
    path("<int:pk>/delete/", views.cluster_delete, name="delete"),
    path("<int:pk>/test/", views.cluster_test, name="test"),
    path("<int:pk>/sync/", views.cluster_sync, name="sync"),
    path("<int:pk>/sync/status/", views.cluster_sync_status, name="sync-status"),
    path("<int:pk>/suite/", views.suite_operate, name="suite"),
    path("<int:pk>/suite/status/", views.suite_status, name="suite-status"),
    path("<int:pk>/helm-chart/", views.helm_chart, name="helm-chart"),
]
