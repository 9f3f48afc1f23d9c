"""Conversion jobs: uniqueness, the guarded task body, failures, skips, actions and the layer cache,
against a real docker-registry and PostgreSQL (the task body runs in-process here; the real worker
is exercised in test_worker.py)."""

import json
import threading

import pytest
import requests
from django.db import connection

from converter.image import TOC_DIGEST_ANNOTATION
from core.roles import Role
from pipeline import actions
from pipeline.choices import TERMINAL, JobStatus, JobTrigger
from pipeline.models import AcceleratedImage, ConversionJob, LayerCacheEntry, options_key
from rules.models import options_of
from tests.converter.estargz_support import read_toc
from tests.support.images import Platform, push_image

OCI = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json"


def manifest(reg, path, reference):
    response = requests.get(f"{reg.url}/v2/{path}/manifests/{reference}", headers={"Accept": OCI}, timeout=10)
    return response


def test_duplicate_requests_and_rules_make_one_job(instance, make_rule, reg, push,
                                                   django_capture_on_commit_callbacks):
    digest = push("team/app:1.0")
    first = make_rule("first", repository_pattern="app", chunk_size=1 << 20)
    make_rule("second")
    make_rule("third", tag_pattern=r"\d+\.\d+")
    with django_capture_on_commit_callbacks() as callbacks:
        results = [actions.request_conversion(instance, f"{reg.host}/team/app:1.0", digest, rule=first)
                   for _ in range(20)]
    assert [created for _, created in results] == [True] + [False] * 19
    assert len({job.pk for job, _ in results}) == 1
    assert len(callbacks) == 1  # enqueued once, after commit
    job = ConversionJob.objects.get()
    assert job.options["chunk_size"] == 1 << 20 and job.rule == first and job.status == JobStatus.QUEUED
    # the same content pushed under another tag is the same conversion
    again, created = actions.request_conversion(instance, f"{reg.host}/team/app:latest", digest, rule=first)
    assert not created and again.pk == job.pk
    # other options are another conversion
    _, created = actions.request_conversion(instance, f"{reg.host}/team/app:1.0", digest, rule=None)
    assert created and ConversionJob.objects.count() == 2


def test_unique_constraint_holds_under_concurrent_requests(transactional_db, instance, make_rule, reg):
    rule = make_rule("all")
    digest = "sha256:" + "ab" * 32
    barrier = threading.Barrier(8)
    outcomes = []

    def request():
        barrier.wait()
        try:
            outcomes.append(actions.request_conversion(instance, f"{reg.host}/team/app:1.0", digest, rule=rule)[1])
        finally:
            connection.close()

    threads = [threading.Thread(target=request) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == [False] * 7 + [True]
    assert ConversionJob.objects.count() == 1


def test_run_conversion_pushes_twin_and_is_idempotent(instance, make_rule, reg, push):
    digest = push("team/app:1.0")
    job, _ = actions.request_conversion(instance, f"{reg.host}/team/app:1.0", digest, rule=make_rule())
    assert manifest(reg, "team/app", "1.0-apparate").status_code == 404
    actions.run_conversion(job.pk)
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED, job.reason
    assert job.attempts == 1 and job.result_tag == "1.0-apparate" and job.percent == 100
    twin = manifest(reg, "team/app", "1.0-apparate")
    assert twin.status_code == 200 and twin.headers["Docker-Content-Digest"] == job.result_digest
    assert all(TOC_DIGEST_ANNOTATION in layer["annotations"] for layer in twin.json()["layers"])
    assert len(job.layers) == 2 and all(layer["phase"] == "done" for layer in job.layers)
    assert job.bytes_in > 0 and job.bytes_out > 0 and job.started_at <= job.finished_at
    assert any("Pushed" in line["message"] for line in job.log)
    # a second run (duplicate or redelivered message) changes nothing
    before = (job.updated_at, job.attempts)
    assert actions.run_conversion(job.pk) is None
    job.refresh_from_db()
    assert (job.updated_at, job.attempts) == before
    assert actions.run_conversion(999999) is None  # a job that is gone


def test_suffixed_tag_and_accelerated_image_are_skipped(instance, make_rule, reg, push):
    rule = make_rule()
    digest = push("team/app:2.0")
    job, _ = actions.request_conversion(instance, f"{reg.host}/team/app:2.0", digest, rule=rule)
    actions.run_conversion(job.pk)
    job.refresh_from_db()
    twin_digest = job.result_digest
    # the twin, converted again under a plain tag, is refused as already accelerated
    requests.put(f"{reg.url}/v2/team/app/manifests/copy", data=manifest(reg, "team/app", twin_digest).content,
                 headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"}, timeout=10).raise_for_status()
    copy, _ = actions.request_conversion(instance, f"{reg.host}/team/app:copy", twin_digest, rule=rule)
    actions.run_conversion(copy.pk)
    copy.refresh_from_db()
    assert copy.status == JobStatus.SKIPPED and "already accelerated" in copy.reason
    assert manifest(reg, "team/app", "copy-apparate").status_code == 404
    plain_digest = push("team/app:9-apparate")  # an ordinary image under a suffixed tag
    suffixed, _ = actions.request_conversion(instance, f"{reg.host}/team/app:9-apparate", plain_digest, rule=rule)
    actions.run_conversion(suffixed.pk)
    suffixed.refresh_from_db()
    assert suffixed.status == JobStatus.SKIPPED and "-apparate" in suffixed.reason


def test_missing_image_fails_at_once_with_reason(instance, make_rule, reg):
    job, _ = actions.request_conversion(instance, f"{reg.host}/team/ghost:1.0", "sha256:" + "cd" * 32,
                                        rule=make_rule())
    actions.run_conversion(job.pk)
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED and job.attempts == 1 and job.retries == 0
    assert "not in the registry any more" in job.reason and "not found" in job.last_error


def test_acceleration_turned_off_skips_queued_jobs(instance, make_rule, reg, push):
    digest = push("team/app:3.0")
    job, _ = actions.request_conversion(instance, f"{reg.host}/team/app:3.0", digest, rule=make_rule())
    instance.acceleration_enabled = False
    instance.save()
    actions.run_conversion(job.pk)
    job.refresh_from_db()
    assert job.status == JobStatus.SKIPPED and "turned off" in job.reason
    assert manifest(reg, "team/app", "3.0-apparate").status_code == 404


def test_cancel_only_queued_and_retry_only_finished(instance, make_rule, reg, push,
                                                    django_capture_on_commit_callbacks):
    digest = push("team/app:4.0")
    job, _ = actions.request_conversion(instance, f"{reg.host}/team/app:4.0", digest, rule=make_rule())
    with pytest.raises(actions.JobActionRefused):
        actions.retry_job(job)
    actions.cancel_job(job)
    job.refresh_from_db()
    assert job.status == JobStatus.CANCELLED and job.status in TERMINAL
    assert actions.run_conversion(job.pk) is None  # a cancelled job never runs
    assert manifest(reg, "team/app", "4.0-apparate").status_code == 404
    with pytest.raises(actions.JobActionRefused):
        actions.cancel_job(job)
    with django_capture_on_commit_callbacks() as callbacks:
        actions.retry_job(job)
    assert len(callbacks) == 1
    job.refresh_from_db()
    assert job.status == JobStatus.QUEUED and job.attempts == 0
    actions.run_conversion(job.pk)
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED


def test_convert_now_without_rule_uses_defaults_and_requeues_failed(instance, reg, push,
                                                                    django_capture_on_commit_callbacks):
    digest = push("other/tool:edge")
    with django_capture_on_commit_callbacks() as callbacks:
        job, outcome = actions.convert_now(instance, actions.check_convert_now(instance, "other/tool:edge"))
    assert outcome == actions.Outcome.CREATED and len(callbacks) == 1
    assert job.source_digest == digest and job.rule is None and job.trigger == JobTrigger.MANUAL
    assert job.options_key == options_key(options_of(None))
    assert actions.convert_now(instance, actions.check_convert_now(instance, "other/tool:edge"))[1] == (
        actions.Outcome.IN_PROGRESS)
    ConversionJob.objects.filter(pk=job.pk).update(status=JobStatus.FAILED)
    again, outcome = actions.convert_now(instance, actions.check_convert_now(instance, f"{reg.host}/other/tool:edge"))
    assert outcome == actions.Outcome.QUEUED_AGAIN and again.pk == job.pk and again.status == JobStatus.QUEUED
    assert "queued again; the rule's options are unchanged" in again.log[-1]["message"]
    with pytest.raises(actions.ValidationError, match="does not exist"):
        actions.convert_now(instance, actions.check_convert_now(instance, "other/tool:missing"))
    with pytest.raises(actions.ValidationError, match="already an accelerated image"):
        actions.check_convert_now(instance, "other/tool:edge-apparate")


def test_layer_cache_reuses_layers_across_repositories(instance, make_rule, reg, push):
    rule = make_rule()
    digest_a = push("team/one:1", seed=42)
    digest_b = push("team/two:1", seed=42)  # same layers in another repository
    assert digest_a == digest_b
    first, _ = actions.request_conversion(instance, f"{reg.host}/team/one:1", digest_a, rule=rule)
    actions.run_conversion(first.pk)
    assert LayerCacheEntry.objects.filter(instance=instance, repository="team/one").count() == 2
    second, _ = actions.request_conversion(instance, f"{reg.host}/team/two:1", digest_b, rule=rule)
    actions.run_conversion(second.pk)
    second.refresh_from_db()
    first.refresh_from_db()
    assert second.status == JobStatus.SUCCEEDED
    assert [layer["phase"] for layer in second.layers] == ["done", "done"]
    assert any("0 layer(s) converted, 2 reused" in line["message"] for line in second.log)
    assert second.result_digest == first.result_digest
    assert sum(LayerCacheEntry.objects.values_list("hits", flat=True)) == 2
    twin = manifest(reg, "team/two", "1-apparate").json()
    for layer in twin["layers"]:  # mounted, so the blob is really in the second repository
        assert requests.head(f"{reg.url}/v2/team/two/blobs/{layer['digest']}", timeout=10).status_code == 200
    assert json.loads(json.dumps(second.options)) == second.options


def test_further_tags_of_the_same_content_get_their_own_twin(instance, make_rule, reg, push,
                                                             django_capture_on_commit_callbacks):
    rule = make_rule()
    digest = push("team/app:1.0", seed=41)
    push("team/app:latest", seed=41)  # the same content under a second tag, before the conversion ran
    job, _ = actions.request_conversion(instance, f"{reg.host}/team/app:1.0", digest, rule=rule)
    again, created = actions.request_conversion(instance, f"{reg.host}/team/app:latest", digest, rule=rule)
    assert not created and again.pk == job.pk
    job.refresh_from_db()
    assert job.twin_tags == ["latest"]
    assert actions.add_twin_tag(job, "latest") is False and actions.add_twin_tag(job, "1.0") is False

    with django_capture_on_commit_callbacks() as callbacks:
        actions.run_conversion(job.pk)
    assert len(callbacks) == 1  # the twin-tag task, enqueued on success
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED, job.reason
    assert manifest(reg, "team/app", "latest-apparate").status_code == 404
    # recorded when it exists, never before: only the tag the converter pushed has a row yet
    assert list(AcceleratedImage.objects.values_list("twin_tag", flat=True)) == ["1.0-apparate"]
    assert actions.push_twin_tags(job.pk) == ["latest-apparate"]  # the task's body
    for tag in ("1.0-apparate", "latest-apparate"):
        assert manifest(reg, "team/app", tag).headers["Docker-Content-Digest"] == job.result_digest

    # a tag added after success is tagged right away, with no second conversion
    push("team/app:stable", seed=41)
    with django_capture_on_commit_callbacks() as callbacks:
        assert actions.add_twin_tag(job, "stable") is True
    assert len(callbacks) == 1
    assert actions.push_twin_tags(job.pk) == ["stable-apparate"]  # only twins not in the registry yet
    assert actions.push_twin_tags(job.pk) == []  # run twice: nothing left to tag
    assert manifest(reg, "team/app", "stable-apparate").headers["Docker-Content-Digest"] == job.result_digest
    job.refresh_from_db()
    assert job.attempts == 1 and ConversionJob.objects.count() == 1
    assert any("stable-apparate" in line["message"] for line in job.log)
    # each twin is a record once its tag is in the registry, all three on the one accelerated manifest
    rows = AcceleratedImage.objects.filter(job=job).order_by("source_tag")
    assert [(row.source_tag, row.twin_tag, row.state) for row in rows] == [
        ("1.0", "1.0-apparate", "present"), ("latest", "latest-apparate", "present"),
        ("stable", "stable-apparate", "present")]
    assert {row.twin_digest for row in rows} == {job.result_digest}
    assert all(row.twin_size > 0 and row.source_size > 0 for row in rows)


def test_prioritized_files_apply_per_image_and_a_file_in_no_layer_is_a_warning(instance, make_rule, reg, tmp_path,
                                                                                client_as):
    rule = make_rule(prioritized_files=["/usr/bin/python3", "app/main.py", "/app/missing.py"])
    layers = [{"usr/": None, "usr/bin/": None, "usr/bin/python3": b"\x7fELF" + bytes(5000)},
              {"app/": None, "app/main.py": b"print('hi')\n", "app/util.py": b"x = 1\n"}]
    digest = push_image(tmp_path / "a", f"{reg.host}/team/app:1.0", [Platform(layers=layers)])
    job, _ = actions.request_conversion(instance, f"{reg.host}/team/app:1.0", digest, rule=rule)
    actions.run_conversion(job.pk)
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED, job.reason
    assert job.warnings == ["linux/amd64: prioritized file '/app/missing.py' is in none of the 2 layers; it is not "
                            "prioritized"]
    assert [line["message"] for line in job.log if line["level"] == "warning"] == [
        "Warning: linux/amd64: prioritized file '/app/missing.py' is in none of the 2 layers; it is not prioritized."]
    # each listed file is put first in the layer where it lives
    twin = manifest(reg, "team/app", "1.0-apparate").json()
    fronts = []
    for layer in twin["layers"]:
        blob = requests.get(f"{reg.url}/v2/team/app/blobs/{layer['digest']}", timeout=30).content
        names = [entry["name"] for entry in read_toc(blob)[0]["entries"] if entry["type"] == "reg"]
        fronts.append(names[:names.index(".prefetch.landmark")] if ".prefetch.landmark" in names else [])
    assert fronts == [["usr/bin/python3"], ["app/main.py"]]
    page = client_as(Role.VIEWER).get(f"/rules/jobs/{job.pk}/").content.decode()
    assert 'id="job-warnings"' in page and "prioritized file &#x27;/app/missing.py&#x27; is in none" in page
    assert "standard tar layers" not in page
    # the same layers in another repository come from the layer cache, prioritized files and all
    again = push_image(tmp_path / "b", f"{reg.host}/team/copy:1.0", [Platform(layers=layers)])
    copy, _ = actions.request_conversion(instance, f"{reg.host}/team/copy:1.0", again, rule=rule)
    actions.run_conversion(copy.pk)
    copy.refresh_from_db()
    assert copy.status == JobStatus.SUCCEEDED and copy.result_digest == job.result_digest
    assert "0 layer(s) converted, 2 reused" in copy.log[-1]["message"]
    entry = LayerCacheEntry.objects.filter(instance=instance, prioritized__isnull=False).first()
    assert entry is not None and entry.startup_bytes > 0
