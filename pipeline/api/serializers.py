"""Serializers of the pipeline API: push events, images, conversion jobs, operations, backfill reports."""

from drf_spectacular.utils import extend_schema_field, extend_schema_serializer
from rest_framework import serializers

from pipeline import startup
from pipeline.catalogue import ROWS_PER_PAGE
from pipeline.choices import StartupState
from pipeline.models import (
    AcceleratedImage,
    ConversionJob,
    Operation,
    PushEvent,
    RefusedDelivery,
    RegistryTag,
    WebhookHealth,
)
from registries.models import Instance
from registries.validators import validate_manifest_digest, validate_repository_path


class PushEventSerializer(serializers.ModelSerializer):
    instance_name = serializers.CharField(source="instance.name", read_only=True)
    matched_rule_name = serializers.CharField(source="matched_rule.name", read_only=True, default=None,
                                              allow_null=True)
    outcome_display = serializers.CharField(source="get_outcome_display", read_only=True)
    reason_display = serializers.CharField(source="get_reason_display", read_only=True)
    job_status = serializers.CharField(source="job.status", read_only=True, default=None, allow_null=True,
                                       help_text="The current state of the job this push asked for or joined.")
    job_reason = serializers.CharField(source="job.reason", read_only=True, default=None, allow_null=True,
                                       help_text="Why that job failed or was skipped, if it did.")

    class Meta:
        model = PushEvent
        fields = [
            "id", "instance", "instance_name", "received_at", "source", "delivery_id", "actor", "namespace",
            "repository", "tag", "digest", "media_type", "outcome", "outcome_display", "reason", "reason_display",
            "reason_detail", "matched_rule", "matched_rule_name", "job", "job_status", "job_reason",
        ]
        read_only_fields = fields


class ImageQuerySerializer(serializers.Serializer):
    """Which images to list: one instance, optionally narrowed by namespace and part of the repository name."""

    instance = serializers.PrimaryKeyRelatedField(queryset=Instance.objects.all())
    namespace = serializers.CharField(required=False, allow_blank=True, max_length=255, default="")
    repository = serializers.CharField(required=False, allow_blank=True, max_length=255, default="",
                                       help_text="Part of the repository name below the namespace.")
    page = serializers.IntegerField(required=False, min_value=1, default=1,
                                    help_text=f"Page of tags ({ROWS_PER_PAGE} per page).")


class OriginalSerializer(serializers.ModelSerializer):
    """A source tag as the last refresh saw it."""

    class Meta:
        model = RegistryTag
        fields = ["tag", "digest", "size", "error", "seen_at"]
        read_only_fields = fields


class StartupSerializer(serializers.Serializer):
    """What a lazy-pulling node fetches before a container of the twin can start (the footer, TOC and
    prioritized region of each distinct layer blob), against a full pull of the same platform (those
    blobs in full). Manifests and config count in neither. For an index: its first platform."""

    state = serializers.ChoiceField(choices=StartupState.choices, help_text=(
        "known; pending: not measured yet (a worker reads it from the registry with Range requests); "
        "unknown: it cannot be known, `reason` says why (e.g. a layer that is not eStargz)."))
    startup_bytes = serializers.IntegerField(allow_null=True, help_text="Bytes fetched to start; null unless known.")
    full_pull_bytes = serializers.IntegerField(allow_null=True,
                                               help_text="Bytes a full pull fetches; null unless known.")
    percent = serializers.FloatField(allow_null=True, help_text="startup_bytes / full_pull_bytes × 100 (not rounded); "
                                                                "null unless known, or when the image has no layers.")
    platform = serializers.CharField(help_text="The platform of the figure, for an index; blank otherwise.")
    text = serializers.CharField(source="sentence", help_text=(
        "The figure in words, as the pages show it: \"A node fetches 1.2 MB of 22.0 MB (5.5%) to start\"."))
    reason = serializers.CharField(help_text="Why the figure is unknown; blank otherwise.")


class StartupLayerSerializer(serializers.Serializer):
    platform = serializers.CharField(help_text="os/arch[/variant] of an index's platform; blank for a "
                                               "single-platform image.")
    digest = serializers.CharField(help_text="The layer blob's digest (listed once per platform).")
    startup_bytes = serializers.IntegerField(allow_null=True, help_text="Bytes of this blob fetched to start.")
    size = serializers.IntegerField(help_text="The blob's size: what a full pull fetches of it.")


class TwinSerializer(serializers.ModelSerializer):
    """An accelerated twin and whether it is still in the registry."""

    tag = serializers.CharField(source="twin_tag")
    digest = serializers.CharField(source="twin_digest", help_text="Manifest digest; delete by this.")
    size = serializers.IntegerField(source="twin_size", allow_null=True, help_text="Manifests, config and layers.")
    deleted_by = serializers.CharField(source="deleted_by.username", default=None, allow_null=True)
    startup = serializers.SerializerMethodField()
    startup_layers = StartupLayerSerializer(many=True, allow_null=True, help_text=(
        "Per platform, per distinct layer blob; null while not measured or unknown."))

    class Meta:
        model = AcceleratedImage
        fields = ["tag", "digest", "size", "source_digest", "state", "state_reason", "state_changed_at",
                  "deleted_by", "job", "startup_bytes", "full_pull_bytes", "startup", "startup_layers"]
        read_only_fields = fields

    @extend_schema_field(StartupSerializer)
    def get_startup(self, row) -> dict:
        return StartupSerializer(startup.figure(row)).data


class TagRowSerializer(serializers.Serializer):
    tag = serializers.CharField(help_text="The source tag (for an orphan: its twin's tag without the suffix).")
    orphan = serializers.BooleanField(help_text="The accelerated image remains but its source tag is gone.")
    original = OriginalSerializer(source="source", allow_null=True)
    accelerated = TwinSerializer(source="twin", allow_null=True,
                                 help_text="The twin of the tag, in any state (present, deleted, missing).")
    job = serializers.IntegerField(source="job.pk", allow_null=True, default=None,
                                   help_text="The latest conversion job of the tag.")
    job_status = serializers.CharField(source="job.status", allow_null=True, default=None)


class RepositoryImagesSerializer(serializers.Serializer):
    path = serializers.CharField(help_text="namespace/repository")
    tags = TagRowSerializer(source="rows", many=True)


class OperationSerializer(serializers.ModelSerializer):
    """Slow work a request started (Images refresh, backfill, Convert now): poll it until `is_done`."""

    is_done = serializers.BooleanField(read_only=True)
    requested_by = serializers.CharField(source="requested_by.username", default=None, allow_null=True,
                                         read_only=True)
    result = serializers.JSONField(read_only=True, help_text=(
        "What the work found or did: for Convert now `outcome`, `detail` and `job`; for a backfill the "
        "report (requested, recreate, with_twin, with_job, left_alone…); for a refresh its counts."))

    class Meta:
        model = Operation
        fields = ["id", "kind", "instance", "rule", "requested_by", "params", "status", "is_done", "result", "error",
                  "job", "created_at", "started_at", "finished_at"]
        read_only_fields = fields


class CatalogueSerializer(serializers.Serializer):
    page = serializers.IntegerField(source="page.number", help_text="This page of tags.")
    pages = serializers.IntegerField(source="page.paginator.num_pages", help_text="Pages of tags in all.")
    tag_count = serializers.IntegerField(source="page.paginator.count",
                                         help_text="Tags (and orphaned twins) matching the filters, on all pages.")
    original_bytes = serializers.IntegerField(help_text="Originals matching the filters (a digest counts once).")
    accelerated_bytes = serializers.IntegerField(help_text="Present twins matching the filters (a digest counts once).")
    as_of = serializers.DateTimeField(source="refresh.as_of", allow_null=True,
                                      help_text="When the rows were last read from the registry; null: never.")
    refreshing = OperationSerializer(source="refresh.active", allow_null=True,
                                     help_text="The refresh under way, if any.")
    refresh_error = serializers.CharField(source="refresh.failed.error", allow_null=True, default=None,
                                          help_text="Why the last refresh failed, when it failed after the last "
                                                    "success.")
    repositories = RepositoryImagesSerializer(many=True)


class ImageDeleteSerializer(serializers.Serializer):
    """One image to delete, by manifest digest. Its twin (or source) is another manifest and stays."""

    instance = serializers.PrimaryKeyRelatedField(queryset=Instance.objects.all())
    repository = serializers.CharField(max_length=1024, validators=[validate_repository_path],
                                       help_text="namespace/repository")
    digest = serializers.CharField(max_length=71, validators=[validate_manifest_digest])


class ImageRefreshSerializer(serializers.Serializer):
    instance = serializers.PrimaryKeyRelatedField(queryset=Instance.objects.all())


class JobSerializer(serializers.ModelSerializer):
    """A conversion job, read-only: progress, result and why it failed or was skipped."""

    instance_name = serializers.CharField(source="instance.name", read_only=True)
    source = serializers.CharField(read_only=True, help_text="host/namespace/repository:tag")
    accelerated = serializers.CharField(read_only=True, help_text="The accelerated image, once pushed.")
    percent = serializers.IntegerField(read_only=True)
    is_terminal = serializers.BooleanField(read_only=True)
    option_changes = serializers.ListField(child=serializers.CharField(), read_only=True,
                                           help_text="What the last Retry changed in the options, if anything.")
    events = serializers.PrimaryKeyRelatedField(source="push_events", many=True, read_only=True,
                                                help_text="Push events that asked for this job or joined it.")
    twins = TwinSerializer(many=True, read_only=True, help_text="The accelerated images it made, and their state.")
    startup = serializers.SerializerMethodField(help_text=(
        "What a node fetches to start the accelerated image the job made; null until it made one."))

    class Meta:
        model = ConversionJob
        fields = [
            "id", "instance", "instance_name", "namespace", "repository", "source_tag", "source_digest", "source",
            "twin_tags", "rule", "event", "events", "trigger", "format", "options", "previous_options",
            "option_changes", "status", "is_terminal", "percent", "attempts", "retries", "last_error", "reason",
            "warnings", "created_at", "started_at", "finished_at", "bytes_in", "bytes_out", "bytes_total", "layers",
            "log", "result_tag", "result_digest", "result_size", "accelerated", "twins", "startup",
        ]
        read_only_fields = fields

    @extend_schema_field(StartupSerializer(allow_null=True))
    def get_startup(self, job) -> dict | None:
        twin = startup.twin_of_job(job)
        return StartupSerializer(startup.figure(twin)).data if twin else None


class ConvertNowSerializer(serializers.Serializer):
    """Convert one tag of an instance now, with or without a matching rule."""

    instance = serializers.PrimaryKeyRelatedField(queryset=Instance.objects.all())
    image = serializers.CharField(max_length=4096, help_text="namespace/repository:tag, or the full address.")


class RefusedDeliverySerializer(serializers.ModelSerializer):
    """A refused delivery: when, the status answered, the console's short reason, the sender's address."""

    class Meta:
        model = RefusedDelivery
        fields = ["received_at", "status", "reason", "client"]
        read_only_fields = fields


@extend_schema_serializer(many=False)  # one object, although served by a ViewSet's list
class WebhookHealthSerializer(serializers.ModelSerializer):
    """What the instance's webhook endpoint received: counters, the last delivery and its result, and
    the last refused deliveries (newest first)."""

    last_received_at = serializers.DateTimeField(allow_null=True, read_only=True)
    last_status = serializers.IntegerField(allow_null=True, read_only=True, help_text="HTTP status of the answer.")
    last_accepted_at = serializers.DateTimeField(allow_null=True, read_only=True)
    last_refused_at = serializers.DateTimeField(allow_null=True, read_only=True)
    recent_refusals = RefusedDeliverySerializer(many=True, read_only=True)

    class Meta:
        model = WebhookHealth
        fields = ["instance", "accepted", "refused", "refused_unauthorized", "refused_malformed", "refused_too_large",
                  "last_received_at", "last_status", "last_result", "last_accepted_at", "last_refused_at",
                  "recent_refusals"]
        read_only_fields = fields


class WebhookTestSerializer(serializers.Serializer):
    """What Send test event got from the console's own webhook URL."""

    ok = serializers.BooleanField(help_text="The intake accepted the test delivery (202).")
    status = serializers.IntegerField(allow_null=True, help_text="HTTP status it answered; null: no answer.")
    summary = serializers.CharField()
    event_id = serializers.IntegerField(allow_null=True, help_text="The test event recorded, when accepted.")
