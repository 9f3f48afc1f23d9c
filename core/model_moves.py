"""Data-migration helper for models that moved from one app to another with their tables."""


def move_content_types(old_app: str, new_app: str, models: tuple[str, ...]):
    """A RunPython function that moves the content types (and so the permissions and admin log
    entries) of `models` from `old_app` to `new_app`, unless the new app has them already."""

    def move(apps, schema_editor):
        content_types = apps.get_model("contenttypes", "ContentType")
        content_types.objects.filter(app_label=old_app, model__in=models).exclude(
            model__in=content_types.objects.filter(app_label=new_app).values("model")
        ).update(app_label=new_app)

    return move
