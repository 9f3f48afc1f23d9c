"""Jobs pages and API: filters, the progress partial that stops polling with 286, actions by role
(a viewer is refused and nothing changes), convert-now and the backfill preview."""

import pytest

from core.models import AuditEntry
from core.roles import Role
from pipeline import actions, operations
from pipeline.choices import JobStatus
from pipeline.models import ConversionJob, Operation

DIGEST = "sha256:" + "12" * 32


@pytest.fixture
def job(instance, make_rule, reg):
    job, _ = actions.request_conversion(instance, f"{reg.host}/team/app:1.0", DIGEST, rule=make_rule())
    return job


def test_job_list_filters_and_failed_view(client_as, instance, reg, job):
    other, _ = actions.request_conversion(instance, f"{reg.host}/team/web:2", "sha256:" + "34" * 32)
    ConversionJob.objects.filter(pk=other.pk).update(status=JobStatus.FAILED, reason="The registry refused it.")
    client = client_as(Role.VIEWER)
    page = client.get("/rules/jobs/").content.decode()
    assert "team/app:1.0" in page and "team/web:2" in page
    failed = client.get("/rules/jobs/?status=failed").content.decode()
    assert "team/web:2" in failed and "team/app:1.0" not in failed and "The registry refused it." in failed
    searched = client.get("/rules/jobs/?q=app").content.decode()
    assert "team/app:1.0" in searched and "team/web:2" not in searched
    assert client.get("/rules/jobs/?status=bogus&instance=x&sort=;drop").status_code == 200
    assert "Convert now" not in page  # viewers see no actions
    empty = client.get("/rules/jobs/?q=nothing-like-this").content.decode()
    assert "No jobs match" in empty


def test_progress_partial_polls_until_terminal(client_as, job):
    client = client_as(Role.VIEWER)
    live = client.get(f"/rules/jobs/{job.pk}/?partial=progress", HTTP_HX_REQUEST="true")
    assert live.status_code == 200 and 'hx-trigger="every 1s"' in live.content.decode()
    ConversionJob.objects.filter(pk=job.pk).update(status=JobStatus.SUCCEEDED)
    done = client.get(f"/rules/jobs/{job.pk}/?partial=progress", HTTP_HX_REQUEST="true")
    assert done.status_code == 286 and "every 1s" not in done.content.decode()
    full = client.get(f"/rules/jobs/{job.pk}/")
    assert full.status_code == 200 and "Succeeded" in full.content.decode()
    assert client.get("/rules/jobs/999999/").status_code == 404


def test_job_list_rows_refresh_while_a_job_is_live(client_as, job):
    client = client_as(Role.VIEWER)
    page = client.get("/rules/jobs/?status=queued").content.decode()
    assert 'hx-get="/rules/jobs/?status=queued&amp;partial=rows"' in page and 'hx-trigger="every 2s"' in page
    rows = client.get("/rules/jobs/?status=queued&partial=rows", HTTP_HX_REQUEST="true")
    assert rows.status_code == 200 and rows.content.decode().lstrip().startswith('<tbody id="job-rows"')
    assert "Queued" in rows.content.decode() and "<thead>" not in rows.content.decode()
    ConversionJob.objects.filter(pk=job.pk).update(status=JobStatus.SUCCEEDED)
    done = client.get("/rules/jobs/?partial=rows", HTTP_HX_REQUEST="true")
    assert done.status_code == 286 and "Succeeded" in done.content.decode() and "every 2s" not in done.content.decode()
    assert "every 2s" not in client.get("/rules/jobs/").content.decode()  # nothing live: no polling


def test_viewer_cannot_cancel_retry_or_convert(client_as, api_as, instance, job,
                                               django_capture_on_commit_callbacks):
    client, api = client_as(Role.VIEWER), api_as(Role.VIEWER)
    with django_capture_on_commit_callbacks() as callbacks:
        assert client.post(f"/rules/jobs/{job.pk}/cancel/").status_code == 403
        assert api.post(f"/api/v1/jobs/{job.pk}/cancel/").status_code == 403
        assert api.post(f"/api/v1/jobs/{job.pk}/retry/").status_code == 403
        payload = {"instance": instance.pk, "image": "team/app:1.0"}
        assert api.post("/api/v1/jobs/convert-now/", payload).status_code == 403
        assert client.post("/rules/jobs/convert-now/", payload).status_code == 403
    assert callbacks == []
    job.refresh_from_db()
    assert job.status == JobStatus.QUEUED and ConversionJob.objects.count() == 1


def test_operator_cancels_then_retries_through_ui_and_api(client_as, api_as, job):
    client = client_as(Role.OPERATOR)
    response = client.post(f"/rules/jobs/{job.pk}/cancel/")
    assert response.status_code == 302
    job.refresh_from_db()
    assert job.status == JobStatus.CANCELLED
    api = api_as(Role.OPERATOR)
    assert api.post(f"/api/v1/jobs/{job.pk}/cancel/").status_code == 409
    answer = api.post(f"/api/v1/jobs/{job.pk}/retry/")
    assert answer.status_code == 200 and answer.json()["status"] == "queued"
    listing = api.get("/api/v1/jobs/?status=queued").json()
    assert [row["id"] for row in listing["results"]] == [job.pk]


def test_convert_now_api_and_form_answer_at_once_with_an_operation(api_as, client_as, instance, push,
                                                                   django_capture_on_commit_callbacks):
    digest = push("team/tool:1")
    api = api_as(Role.OPERATOR)
    with django_capture_on_commit_callbacks() as callbacks:
        started = api.post("/api/v1/jobs/convert-now/", {"instance": instance.pk, "image": "team/tool:1"})
    assert started.status_code == 202 and len(callbacks) == 1  # the digest is read by a worker
    body = started.json()
    assert (body["kind"], body["status"], body["params"], body["job"]) == (
        "convert_now", "queued", {"image": f"{instance.host}/team/tool:1"}, None)
    assert not ConversionJob.objects.exists()
    operations.run_operation(body["id"])  # the task body
    assert operations.run_operation(body["id"]) is None  # a second delivery does nothing
    done = api.get(f"/api/v1/operations/{body['id']}/").json()
    job = ConversionJob.objects.get()
    assert (done["status"], done["job"], done["result"]["outcome"]) == ("succeeded", job.pk, "created")
    assert done["result"]["detail"] == f"Conversion of team/tool:1 requested: job #{job.pk}."
    assert job.source_digest == digest
    again = api.post("/api/v1/jobs/convert-now/", {"instance": instance.pk, "image": "team/tool:1"}).json()
    operations.run_operation(again["id"])
    assert api.get(f"/api/v1/operations/{again['id']}/").json()["result"]["detail"] == (
        f"Job #{job.pk} is already converting team/tool:1.")
    audited = AuditEntry.objects.filter(model="operation", action="create")
    assert audited.count() == 2 and {entry.source for entry in audited} == {"api"}
    assert audited.first().changes["image"]["new"] == f"{instance.host}/team/tool:1"

    bad = api.post("/api/v1/jobs/convert-now/", {"instance": instance.pk, "image": "not an image"})
    assert bad.status_code == 400 and "image" in bad.json()
    twin = api.post("/api/v1/jobs/convert-now/", {"instance": instance.pk, "image": "team/tool:1-apparate"})
    assert twin.status_code == 400 and "already an accelerated image" in str(twin.json())
    missing = api.post("/api/v1/jobs/convert-now/", {"instance": instance.pk, "image": "team/tool:nope"}).json()
    operations.run_operation(missing["id"])
    failed = api.get(f"/api/v1/operations/{missing['id']}/").json()
    assert failed["status"] == "failed" and failed["error"] == f"{instance.host}/team/tool:nope does not exist in " \
        "the registry."
    assert ConversionJob.objects.count() == 1

    client = client_as(Role.OPERATOR)
    form = client.post("/rules/jobs/convert-now/", {"instance": instance.pk, "image": "bad image"},
                       HTTP_HX_REQUEST="true")
    assert form.status_code == 200 and "spaces" in form.content.decode()
    watched = client.post("/rules/jobs/convert-now/", {"instance": instance.pk, "image": "team/tool:1"},
                          HTTP_HX_REQUEST="true")
    operation = Operation.objects.latest("id")
    assert watched.status_code == 200 and f'hx-get="/rules/jobs/operations/{operation.pk}/"' in watched.content.decode()
    operations.run_operation(operation.pk)
    finished = client.get(f"/rules/jobs/operations/{operation.pk}/", HTTP_HX_REQUEST="true")
    assert finished.status_code == 286 and finished["HX-Redirect"] == f"/rules/jobs/{job.pk}/"
    plain = client.post("/rules/jobs/convert-now/", {"instance": instance.pk, "image": "team/tool:1"})
    assert plain.status_code == 302 and plain["Location"] == f"/rules/jobs/operations/{operation.pk + 1}/"
    assert "Reading the digest of" in client.get(plain["Location"]).content.decode()
    assert AuditEntry.objects.filter(model="operation", source="ui").count() == 2


def test_backfill_preview_and_request_from_rule_page(client_as, instance, make_rule, push):
    rule = make_rule("all")
    push("team/app:1")
    client = client_as(Role.OPERATOR)
    started = client.post(f"/rules/{rule.pk}/backfill/", {"preview": "1"}, HTTP_HX_REQUEST="true")
    preview = Operation.objects.get(kind="backfill_preview")
    assert started.status_code == 200 and f'hx-get="/rules/jobs/operations/{preview.pk}/"' in started.content.decode()
    assert "Walking the registry" in started.content.decode()
    operations.run_operation(preview.pk)
    shown = client.get(f"/rules/jobs/operations/{preview.pk}/", HTTP_HX_REQUEST="true")
    assert shown.status_code == 286 and "<strong>1</strong> tag would be converted" in shown.content.decode()
    assert not ConversionJob.objects.exists()
    assert not AuditEntry.objects.filter(model="operation").exists()  # a preview changes nothing
    assert client_as(Role.VIEWER).post(f"/rules/{rule.pk}/backfill/").status_code == 403
    assert not ConversionJob.objects.exists() and Operation.objects.count() == 1
    response = client.post(f"/rules/{rule.pk}/backfill/")
    request = Operation.objects.get(kind="backfill")
    assert response.status_code == 302 and response["Location"] == f"/rules/jobs/operations/{request.pk}/"
    operations.run_operation(request.pk)
    assert ConversionJob.objects.get().source_tag == "1"
    page = client.get(response["Location"]).content.decode()
    assert "<strong>1</strong> conversion requested for existing images" in page
    assert AuditEntry.objects.get(model="operation").changes["rule"]["new"] == "all"


def test_backfill_api_previews_then_requests_and_respects_roles(api_as, instance, make_rule, push,
                                                                django_capture_on_commit_callbacks):
    rule = make_rule("all")
    push("team/app:1")
    push("team/app:2")
    viewer, operator = api_as(Role.VIEWER), api_as(Role.OPERATOR)
    started = viewer.get(f"/api/v1/rules/{rule.pk}/backfill/")
    assert started.status_code == 202 and started.json()["kind"] == "backfill_preview"
    operations.run_operation(started.json()["id"])
    preview = viewer.get(f"/api/v1/operations/{started.json()['id']}/").json()
    assert preview["result"] == {"repositories": 1, "tags": 2, "with_twin": 0, "with_job": 0, "requested": 2,
                                 "recreate": 0, "missing": 0, "left_alone": [], "errors": []}
    assert viewer.post(f"/api/v1/rules/{rule.pk}/backfill/").status_code == 403
    assert not ConversionJob.objects.exists()
    with django_capture_on_commit_callbacks() as callbacks:
        response = operator.post(f"/api/v1/rules/{rule.pk}/backfill/")
        operations.run_operation(response.json()["id"])
    assert response.status_code == 202 and len(callbacks) == 3  # the operation, then two conversions
    assert operator.get(f"/api/v1/operations/{response.json()['id']}/").json()["result"]["requested"] == 2
    assert sorted(ConversionJob.objects.values_list("source_tag", flat=True)) == ["1", "2"]
    rule.enabled = False
    rule.save()
    refused = operator.post(f"/api/v1/rules/{rule.pk}/backfill/")
    assert refused.status_code == 409 and "not active" in refused.json()["detail"]


def test_dashboard_and_menu_show_jobs(client_as, instance, job):
    ConversionJob.objects.filter(pk=job.pk).update(status=JobStatus.FAILED, reason="The registry refused it.")
    page = client_as(Role.VIEWER).get("/").content.decode()
    assert "Recent failed conversions" in page and "The registry refused it." in page
    assert "Failed: 1" in page and "Images accelerated" in page
    assert 'href="/rules/jobs/"' in page and 'href="/instances/images/"' in page


def test_job_page_actions_follow_the_job_state(client_as, job):
    """Cancel shows while the job is queued; the polled progress carries the actions out of band, so
    Cancel goes once the job ran and Retry comes when it failed (issue 9: stale buttons)."""
    client = client_as(Role.OPERATOR)
    page = client.get(f"/rules/jobs/{job.pk}/").content.decode()
    assert '<div class="actions" id="job-actions">' in page and ">Cancel</button>" in page
    queued = client.get(f"/rules/jobs/{job.pk}/?partial=progress", HTTP_HX_REQUEST="true").content.decode()
    assert 'id="job-actions" hx-swap-oob="true"' in queued and ">Cancel</button>" in queued
    ConversionJob.objects.filter(pk=job.pk).update(status=JobStatus.RUNNING)
    running = client.get(f"/rules/jobs/{job.pk}/?partial=progress", HTTP_HX_REQUEST="true").content.decode()
    assert 'id="job-actions" hx-swap-oob="true"' in running and "Cancel" not in running and "Retry" not in running
    ConversionJob.objects.filter(pk=job.pk).update(status=JobStatus.FAILED, reason="The registry refused it.")
    failed = client.get(f"/rules/jobs/{job.pk}/?partial=progress", HTTP_HX_REQUEST="true")
    assert failed.status_code == 286
    assert ">Retry</button>" in failed.content.decode() and "Cancel" not in failed.content.decode()
    viewer = client_as(Role.VIEWER).get(f"/rules/jobs/{job.pk}/?partial=progress", HTTP_HX_REQUEST="true")
    assert 'id="job-actions" hx-swap-oob="true"' in viewer.content.decode() and "Retry" not in viewer.content.decode()


def test_a_retried_jobs_duration_counts_from_its_new_run(client_as, job):
    from datetime import timedelta

    from django.utils import timezone

    long_ago = timezone.now() - timedelta(hours=5)
    ConversionJob.objects.filter(pk=job.pk).update(status=JobStatus.FAILED, started_at=long_ago,
                                                   finished_at=long_ago + timedelta(seconds=0.449388))
    job.refresh_from_db()
    page = client_as(Role.VIEWER).get(f"/rules/jobs/{job.pk}/").content.decode()
    assert '(<span id="job-duration">0.4 s</span>)' in page and "0:00:00.449388" not in page
    actions.retry_job(job)
    job.refresh_from_db()
    assert job.status == JobStatus.QUEUED and job.started_at is None and job.finished_at is None
    assert actions._start(job.pk).started_at > long_ago + timedelta(hours=4)  # the first attempt of the new run
