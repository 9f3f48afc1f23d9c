"""Jobs pages and API: filters, the progress partial that stops polling with 286, actions by role
(a viewer is refused and nothing changes), convert-now and the backfill preview."""

import pytest

from core.roles import Role
from pipeline import actions
from pipeline.choices import JobStatus
from pipeline.models import ConversionJob

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


def test_convert_now_api_and_form(api_as, client_as, instance, push):
    digest = push("team/tool:1")
    api = api_as(Role.OPERATOR)
    created = api.post("/api/v1/jobs/convert-now/", {"instance": instance.pk, "image": "team/tool:1"})
    assert created.status_code == 201 and created.json()["source_digest"] == digest
    again = api.post("/api/v1/jobs/convert-now/", {"instance": instance.pk, "image": "team/tool:1"})
    assert again.status_code == 200 and again.json()["id"] == created.json()["id"]
    bad = api.post("/api/v1/jobs/convert-now/", {"instance": instance.pk, "image": "not an image"})
    assert bad.status_code == 400 and "image" in bad.json()
    missing = api.post("/api/v1/jobs/convert-now/", {"instance": instance.pk, "image": "team/tool:nope"})
    assert missing.status_code == 400 and "does not exist" in str(missing.json())
    form = client_as(Role.OPERATOR).post("/rules/jobs/convert-now/", {"instance": instance.pk, "image": "bad image"},
                                         HTTP_HX_REQUEST="true")
    assert form.status_code == 200 and "spaces" in form.content.decode()
    assert ConversionJob.objects.count() == 1


def test_backfill_preview_and_request_from_rule_page(client_as, instance, make_rule, push):
    rule = make_rule("all")
    push("team/app:1")
    client = client_as(Role.OPERATOR)
    preview = client.get(f"/rules/{rule.pk}/backfill/", HTTP_HX_REQUEST="true").content.decode()
    assert "<strong>1</strong> tag would be converted" in preview
    assert not ConversionJob.objects.exists()
    assert client_as(Role.VIEWER).post(f"/rules/{rule.pk}/backfill/").status_code == 403
    assert not ConversionJob.objects.exists()
    response = client.post(f"/rules/{rule.pk}/backfill/", HTTP_HX_REQUEST="true")
    assert response.status_code == 200 and response.headers["HX-Redirect"].startswith("/rules/jobs/")
    assert ConversionJob.objects.get().source_tag == "1"


def test_backfill_api_previews_then_requests_and_respects_roles(api_as, instance, make_rule, push,
                                                                django_capture_on_commit_callbacks):
    rule = make_rule("all")
    push("team/app:1")
    push("team/app:2")
    viewer, operator = api_as(Role.VIEWER), api_as(Role.OPERATOR)
    preview = viewer.get(f"/api/v1/rules/{rule.pk}/backfill/")
    assert preview.status_code == 200
    assert preview.json() == {"repositories": 1, "tags": 2, "with_twin": 0, "with_job": 0, "requested": 2,
                              "errors": []}
    assert viewer.post(f"/api/v1/rules/{rule.pk}/backfill/").status_code == 403
    assert not ConversionJob.objects.exists()
    with django_capture_on_commit_callbacks() as callbacks:
        response = operator.post(f"/api/v1/rules/{rule.pk}/backfill/")
    assert response.status_code == 202 and response.json()["requested"] == 2 and len(callbacks) == 2
    assert sorted(ConversionJob.objects.values_list("source_tag", flat=True)) == ["1", "2"]
    assert operator.get(f"/api/v1/rules/{rule.pk}/backfill/").json()["with_job"] == 2
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
