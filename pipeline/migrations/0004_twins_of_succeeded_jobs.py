"""Data migration: a twin row for every accelerated tag the succeeded jobs made, so an upgraded
console shows what it showed before. The rows are `present` until the first Images refresh or
reconciler pass says otherwise. Push events are linked to the job they asked for or joined."""

from django.db import migrations

from pipeline.naming import twin_tag


def forwards(apps, schema_editor):
    ConversionJob = apps.get_model("pipeline", "ConversionJob")
    AcceleratedImage = apps.get_model("pipeline", "AcceleratedImage")
    RegistryTag = apps.get_model("pipeline", "RegistryTag")
    PushEvent = apps.get_model("pipeline", "PushEvent")
    twins, sources = {}, {}
    succeeded = ConversionJob.objects.filter(status="succeeded").exclude(result_digest="").order_by("created_at", "id")
    for job in succeeded.iterator():
        when = job.finished_at or job.updated_at
        # The newest succeeded job of a tag wins, as the tag's latest push did.
        for number, tag in enumerate([job.source_tag, *job.twin_tags]):
            key = (job.instance_id, job.namespace, job.repository, tag)
            twins[key] = AcceleratedImage(
                instance_id=job.instance_id, namespace=job.namespace, repository=job.repository, source_tag=tag,
                source_digest=job.source_digest, twin_tag=job.result_tag if number == 0 and job.result_tag
                else twin_tag(tag), twin_digest=job.result_digest, job_id=job.pk, twin_size=job.result_size,
                state="present", state_changed_at=when,
            )
            sources[key] = RegistryTag(instance_id=job.instance_id, namespace=job.namespace,
                                       repository=job.repository, tag=tag, digest=job.source_digest, seen_at=when)
    AcceleratedImage.objects.bulk_create(twins.values(), batch_size=500, ignore_conflicts=True)
    RegistryTag.objects.bulk_create(sources.values(), batch_size=500, ignore_conflicts=True)

    for job in ConversionJob.objects.exclude(event=None).only("pk", "event_id").iterator():
        PushEvent.objects.filter(pk=job.event_id).update(job=job.pk)
    seen = PushEvent.objects.filter(reason="already_seen", job=None, matched_rule__isnull=False).exclude(digest="")
    for event in seen.iterator():
        job = ConversionJob.objects.filter(instance_id=event.instance_id, namespace=event.namespace,
                                           repository=event.repository, source_digest=event.digest).order_by("id")
        PushEvent.objects.filter(pk=event.pk).update(job=job.values("pk")[:1])


class Migration(migrations.Migration):

    dependencies = [
        ("pipeline", "0003_accelerated_images_and_operations"),
    ]

    operations = [
        migrations.RunPython(forwards, migrations.RunPython.noop),
    ]
