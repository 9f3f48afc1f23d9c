"""Web UI routes of the registries app."""

app_name = "registries"
urlpatterns: list = []
