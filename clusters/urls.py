"""Web UI routes of the clusters app."""

app_name = "clusters"
urlpatterns: list = []
