"""Serializers of the pipeline API: push events, images, conversion jobs, backfill reports."""

from rest_framework import serializers

from pipeline.models import ConversionJob, PushEvent
from registries.models import Instance
from registries.validators import validate_manifest_digest, validate_repository_path


class PushEventSerializer(serializers.ModelSerializer):
    instance_name = serializers.CharField(source="instance.name", read_only=True)
    matched_rule_name = serializers.CharField(source="matched_rule.name", read_only=True, default=None)
    outcome_display = serializers.CharField(source="get_outcome_display", read_only=True)
    reason_display = serializers.CharField(source="get_reason_display", read_only=True)

    class Meta:
        model = PushEvent
        fields = [
            "id", "instance", "instance_name", "received_at", "source", "delivery_id", "actor", "namespace",
            "repository", "tag", "digest", "media_type", "outcome", "outcome_display", "reason", "reason_display",
            "reason_detail", "matched_rule", "matched_rule_name",
        ]
        read_only_fields = fields


class ImageQuerySerializer(serializers.Serializer):
    """Which images to list: one instance, optionally narrowed by namespace and part of the repository name."""

    instance = serializers.PrimaryKeyRelatedField(queryset=Instance.objects.all())
    namespace = serializers.CharField(required=False, allow_blank=True, max_length=255, default="")
    repository = serializers.CharField(required=False, allow_blank=True, max_length=255, default="",
                                       help_text="Part of the repository name below the namespace.")
    page = serializers.IntegerField(required=False, min_value=1, default=1,
                                    help_text="Page of repositories (50 per page).")


class ImageInfoSerializer(serializers.Serializer):
    tag = serializers.CharField()
    digest = serializers.CharField(help_text="Manifest digest; delete by this.")
    size = serializers.IntegerField(allow_null=True, help_text="Config and layers, in bytes.")
    error = serializers.CharField(help_text="Why the image could not be read, if it could not.")


class TagRowSerializer(serializers.Serializer):
    tag = serializers.CharField(help_text="The source tag (for an orphan: its twin's tag without the suffix).")
    orphan = serializers.BooleanField(help_text="The accelerated image remains but its source tag is gone.")
    original = ImageInfoSerializer(source="source", allow_null=True)
    accelerated = ImageInfoSerializer(source="twin", allow_null=True)
    job = serializers.IntegerField(source="job.pk", allow_null=True, default=None,
                                   help_text="The latest conversion job of the tag.")
    job_status = serializers.CharField(source="job.status", allow_null=True, default=None)


class RepositoryImagesSerializer(serializers.Serializer):
    path = serializers.CharField(help_text="namespace/repository")
    error = serializers.CharField()
    tags = TagRowSerializer(source="rows", many=True)


class CatalogueSerializer(serializers.Serializer):
    page = serializers.IntegerField(source="page.number", help_text="This page of repositories.")
    pages = serializers.IntegerField(source="page.paginator.num_pages", help_text="Pages of repositories in all.")
    repository_count = serializers.IntegerField(source="page.paginator.count",
                                                help_text="Repositories matching the filters, on all pages.")
    original_bytes = serializers.IntegerField()
    accelerated_bytes = serializers.IntegerField()
    repositories = RepositoryImagesSerializer(many=True)


class ImageDeleteSerializer(serializers.Serializer):
    """One image to delete, by manifest digest. Its twin (or source) is another manifest and stays."""

    instance = serializers.PrimaryKeyRelatedField(queryset=Instance.objects.all())
    repository = serializers.CharField(max_length=1024, validators=[validate_repository_path],
                                       help_text="namespace/repository")
    digest = serializers.CharField(max_length=71, validators=[validate_manifest_digest])


class JobSerializer(serializers.ModelSerializer):
    """A conversion job, read-only: progress, result and why it failed or was skipped."""

    instance_name = serializers.CharField(source="instance.name", read_only=True)
    source = serializers.CharField(read_only=True, help_text="host/namespace/repository:tag")
    accelerated = serializers.CharField(read_only=True, help_text="The accelerated image, once pushed.")
    percent = serializers.IntegerField(read_only=True)
    is_terminal = serializers.BooleanField(read_only=True)

    class Meta:
        model = ConversionJob
        fields = [
            "id", "instance", "instance_name", "namespace", "repository", "source_tag", "source_digest", "source",
            "rule", "event", "trigger", "format", "options", "status", "is_terminal", "percent", "attempts",
            "retries", "last_error", "reason", "created_at", "started_at", "finished_at", "bytes_in", "bytes_out",
            "bytes_total", "layers", "log", "result_tag", "result_digest", "result_size", "accelerated",
        ]
        read_only_fields = fields


class BackfillReportSerializer(serializers.Serializer):
    """What "Convert existing images" found (GET) or requested (POST) for one rule."""

    repositories = serializers.IntegerField(help_text="Repositories of the rule's namespace that were walked.")
    tags = serializers.IntegerField(help_text="Tags looked at.")
    with_twin = serializers.IntegerField(help_text="Matching tags that already have an accelerated twin.")
    with_job = serializers.IntegerField(help_text="Matching tags that already have a conversion job.")
    requested = serializers.IntegerField(help_text="Tags that would be (GET) or were (POST) requested.")
    errors = serializers.ListField(child=serializers.CharField(), help_text="Registry errors met on the way.")


class ConvertNowSerializer(serializers.Serializer):
    """Convert one tag of an instance now, with or without a matching rule."""

    instance = serializers.PrimaryKeyRelatedField(queryset=Instance.objects.all())
    image = serializers.CharField(max_length=4096, help_text="namespace/repository:tag, or the full address.")
