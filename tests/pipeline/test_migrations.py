"""The upgrade to twin records: the data migration gives every twin the succeeded jobs made a row
(present until the first refresh says otherwise), pairs it with its source tag, and links push
events to their jobs; failed jobs make no twin."""

from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from pipeline.models import AcceleratedImage, PushEvent, RegistryTag, options_key
from rules.models import default_options

BEFORE = [("pipeline", "0002_conversionjob_worker")]


def test_an_upgrade_shows_the_twins_succeeded_jobs_made(transactional_db):
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)
    old = executor.loader.project_state(BEFORE).apps
    instance = old.get_model("registries", "Instance").objects.create(name="old", url="http://registry.example:5000")
    Job, Event = old.get_model("pipeline", "ConversionJob"), old.get_model("pipeline", "PushEvent")
    options = default_options()

    def job(tag: str, digest: str, status: str, **fields):
        return Job.objects.create(instance=instance, namespace="team", repository="app", source_tag=tag,
                                  source_digest=digest, status=status, options=options,
                                  options_key=options_key(options), **fields)

    pushed = Event.objects.create(instance=instance, source="distribution", delivery_id="d-1", namespace="team",
                                  repository="app", tag="1.0", digest="sha256:" + "1" * 64,
                                  outcome="conversion_requested", reason="rule_matched", reason_detail="matched")
    done = job("1.0", "sha256:" + "1" * 64, "succeeded", result_tag="1.0-apparate",
               result_digest="sha256:" + "a" * 64, result_size=1234, twin_tags=["latest"], event=pushed)
    seen = Event.objects.create(instance=instance, source="distribution", delivery_id="d-2", namespace="team",
                                repository="app", tag="latest", digest="sha256:" + "1" * 64, outcome="skipped",
                                reason="already_seen", reason_detail="seen",
                                matched_rule=old.get_model("rules", "Rule").objects.create(
                                    instance=instance, name="team", namespace="team"))
    job("2.0", "sha256:" + "2" * 64, "failed")

    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())

    rows = AcceleratedImage.objects.order_by("twin_tag")
    assert [(row.source_tag, row.twin_tag, row.twin_digest, row.job_id, row.state, row.twin_size) for row in rows] == [
        ("1.0", "1.0-apparate", "sha256:" + "a" * 64, done.pk, "present", 1234),
        ("latest", "latest-apparate", "sha256:" + "a" * 64, done.pk, "present", 1234),
    ]
    assert sorted(RegistryTag.objects.values_list("tag", "digest")) == [("1.0", "sha256:" + "1" * 64),
                                                                       ("latest", "sha256:" + "1" * 64)]
    assert PushEvent.objects.get(pk=pushed.pk).job_id == done.pk
    assert PushEvent.objects.get(pk=seen.pk).job_id == done.pk
