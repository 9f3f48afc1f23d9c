"""Images page and API: rows kept up to date by a background refresh of the real registry (pairs
with sizes and job status, orphans, twins found or missing), an "as of" time and Refresh now, and
deletion by digest that never touches the other image, marks the twin deleted and is audited; a
registry with deletion disabled says so."""

import shutil

import requests

from core.models import AuditEntry
from core.roles import Role
from pipeline import actions, catalogue, operations
from pipeline.choices import OperationKind, OperationStatus, TwinState
from pipeline.models import AcceleratedImage, Operation, RegistryTag
from registries.models import Instance
from tests.support.images import push_image

OCI = "application/vnd.oci.image.manifest.v1+json"


def status_of(registry, path, reference):
    return requests.get(f"{registry.url}/v2/{path}/manifests/{reference}", headers={"Accept": OCI},
                        timeout=10).status_code


def convert(instance, registry, push, image: str):
    digest = push(image)
    job, _ = actions.request_conversion(instance, f"{registry.host}/{image}", digest)
    actions.run_conversion(job.pk)
    job.refresh_from_db()
    return job


def refresh(instance) -> Operation:
    """What the worker does for a refresh request (the task body, run here)."""
    operation = operations.request_refresh(instance)
    operations.run_operation(operation.pk)
    operation.refresh_from_db()
    return operation


def test_pairs_orphans_and_independent_deletion(instance, reg, push, client_as):
    kept = convert(instance, reg, push, "team/app:1.0")
    orphaned = convert(instance, reg, push, "team/app:2.0")
    push("team/app:3.0")  # not converted
    push("other/web:1")
    refresh(instance)
    operator = client_as(Role.OPERATOR)
    # delete the original of 2.0: its twin stays and becomes an orphan
    source_digest = orphaned.source_digest
    confirm = operator.get(f"/instances/{instance.pk}/images/delete/?path=team/app&digest={source_digest}&tag=2.0")
    assert confirm.status_code == 200 and "Delete this image?" in confirm.content.decode()
    assert status_of(reg, "team/app", "2.0") == 200  # the confirmation page deletes nothing
    operator.post(f"/instances/{instance.pk}/images/delete/", {"path": "team/app", "digest": source_digest})
    assert status_of(reg, "team/app", "2.0") == 404
    assert status_of(reg, "team/app", "2.0-apparate") == 200
    assert not RegistryTag.objects.filter(tag="2.0").exists()  # the rows follow at once, no refresh needed

    page = client_as(Role.VIEWER).get(f"/instances/images/?instance={instance.pk}&namespace=team").content.decode()
    assert "team/app" in page and "other/web" not in page
    assert kept.result_digest[:20] in page and "orphan" in page and "Succeeded" in page and "no job" in page
    assert "accelerated twins" in page and "Delete" not in page  # viewers get no delete buttons
    assert 'id="images-as-of"' in page and "Refresh now" in page

    # delete the accelerated image of 1.0: the original stays, the twin row says who deleted it
    operator.post(f"/instances/{instance.pk}/images/delete/", {"path": "team/app", "digest": kept.result_digest})
    assert status_of(reg, "team/app", "1.0-apparate") == 404
    assert status_of(reg, "team/app", "1.0") == 200
    twin = AcceleratedImage.objects.get(twin_tag="1.0-apparate")
    assert twin.state == TwinState.DELETED and twin.deleted_by.username == "web-operator"
    assert twin.state_reason.startswith("Deleted through the web UI by web-operator on ")
    entry = AuditEntry.objects.get(model="acceleratedimage", action="delete")
    assert (entry.actor, entry.source) == (twin.deleted_by, "ui")
    assert entry.changes["state"] == {"old": "present", "new": "deleted"}
    assert AuditEntry.objects.get(model="registrytag", action="delete").changes["digest"]["old"] == source_digest
    row = operator.get(f"/instances/images/?instance={instance.pk}").content.decode()
    assert "Deleted through the console" in row and "Re-create" in row


def test_refresh_records_twins_found_and_missing_and_reads_only_what_changed(db, reg, push, faulty_proxy):
    proxy = faulty_proxy(reg.url)  # counts the requests the refresh makes
    instance = Instance.objects.create(name="counted", url=proxy.url, acceleration_enabled=True)
    job = convert(instance, reg, push, "team/app:1.0")
    push("team/app:2.0", seed=5)
    push("team/app:two", seed=5)  # same digest under a second tag
    # a twin the console never recorded (pushed by hand under the twin name): the refresh finds it
    requests.put(f"{reg.url}/v2/team/app/manifests/2.0-apparate",
                 data=requests.get(f"{reg.url}/v2/team/app/manifests/1.0-apparate", headers={"Accept": OCI},
                                   timeout=10).content, headers={"Content-Type": OCI}, timeout=10).raise_for_status()
    done = refresh(instance)
    assert done.status == OperationStatus.SUCCEEDED, done.error
    assert (done.result["tags"], done.result["twins"], done.result["found"], done.result["missing"]) == (3, 2, 1, 0)
    found = AcceleratedImage.objects.get(twin_tag="2.0-apparate")
    # it names its source in the manifest annotation, and the job whose result it is
    assert (found.state, found.source_digest, found.job) == (TwinState.PRESENT, job.source_digest, job)
    assert found.state_reason == "Found in the registry by the Images refresh."
    sizes = dict(RegistryTag.objects.values_list("tag", "size"))
    assert sizes["2.0"] == sizes["two"] > 0
    # nothing changed: the next refresh only HEADs each tag, it reads no manifest again
    before = len(proxy.requests(r"/manifests/", "GET"))
    assert refresh(instance).result["found"] == 0
    assert len(proxy.requests(r"/manifests/", "GET")) == before
    assert len(proxy.requests(r"/manifests/", "HEAD")) >= 8  # 4 tags, two refreshes

    # deleted in the registry, not through the console: the next refresh marks it missing
    tags = reg.root / "data/docker/registry/v2/repositories/team/app/_manifests/tags"
    shutil.rmtree(tags / "1.0-apparate")
    again = refresh(instance)
    assert again.result["missing"] == 1
    gone = AcceleratedImage.objects.get(twin_tag="1.0-apparate")
    assert gone.state == TwinState.MISSING and "Not in the registry at the Images refresh of" in gone.state_reason
    assert "deleted outside the console" in gone.state_reason
    assert catalogue.refresh_state(instance).as_of == again.finished_at


def test_a_page_view_reads_rows_and_starts_a_refresh_when_they_are_stale(instance, reg, push, client_as, settings,
                                                                         django_capture_on_commit_callbacks):
    push("team/app:1.0")
    viewer = client_as(Role.VIEWER)
    with django_capture_on_commit_callbacks() as callbacks:
        first = viewer.get(f"/instances/images/?instance={instance.pk}").content.decode()
    assert "has not been read yet" in first and "Reading the registry" in first  # nothing read in the request
    assert len(callbacks) == 1  # the refresh, for a worker
    operation = Operation.objects.get(kind=OperationKind.REFRESH_IMAGES)
    assert f'hx-get="/rules/jobs/operations/{operation.pk}/?reload=1"' in first
    with django_capture_on_commit_callbacks() as callbacks:
        viewer.get(f"/instances/images/?instance={instance.pk}")  # one refresh at a time
    assert callbacks == [] and Operation.objects.count() == 1
    polled = viewer.get(f"/rules/jobs/operations/{operation.pk}/?reload=1", HTTP_HX_REQUEST="true")
    assert polled.status_code == 200 and "HX-Refresh" not in polled
    operations.run_operation(operation.pk)
    assert operations.run_operation(operation.pk) is None  # a second delivery does nothing
    done = viewer.get(f"/rules/jobs/operations/{operation.pk}/?reload=1", HTTP_HX_REQUEST="true")
    assert done.status_code == 286 and done["HX-Refresh"] == "true"  # the page reloads with the new rows
    page = viewer.get(f"/instances/images/?instance={instance.pk}").content.decode()
    assert 'data-tag="1.0"' in page and "As of" in page and "Reading the registry" not in page
    settings.APPARATE_IMAGES_REFRESH_AGE = 0  # rows older than that: the next view asks for a refresh
    with django_capture_on_commit_callbacks() as callbacks:
        viewer.get(f"/instances/images/?instance={instance.pk}")
    assert len(callbacks) == 1 and Operation.objects.count() == 2
    # "Refresh now" joins the refresh under way
    answer = viewer.post(f"/instances/{instance.pk}/images/refresh/", HTTP_HX_REQUEST="true")
    assert answer.status_code == 200 and Operation.objects.count() == 2
    assert client_as(Role.NONE).post(f"/instances/{instance.pk}/images/refresh/").status_code == 403


def test_viewer_cannot_delete_and_bad_input_is_refused(instance, reg, push, client_as):
    digest = push("team/app:1.0")
    viewer = client_as(Role.VIEWER)
    assert viewer.post(f"/instances/{instance.pk}/images/delete/",
                       {"path": "team/app", "digest": digest}).status_code == 403
    assert status_of(reg, "team/app", "1.0") == 200
    operator = client_as(Role.OPERATOR)
    assert operator.post(f"/instances/{instance.pk}/images/delete/",
                         {"path": "../etc", "digest": digest}).status_code == 400
    assert operator.post(f"/instances/{instance.pk}/images/delete/",
                         {"path": "team/app", "digest": "latest"}).status_code == 400
    assert status_of(reg, "team/app", "1.0") == 200
    assert not AuditEntry.objects.filter(model__in=["acceleratedimage", "registrytag"]).exists()


def test_deletion_disabled_is_shown_as_such(db, registry_factory, tmp_path, client_as):
    registry = registry_factory(delete=False)
    instance = Instance.objects.create(name="no-delete", url=registry.url, acceleration_enabled=True)
    digest = push_image(tmp_path, f"{registry.host}/team/app:1.0")
    refresh(instance)
    response = client_as(Role.OPERATOR).post(f"/instances/{instance.pk}/images/delete/",
                                             {"path": "team/app", "digest": digest}, follow=True)
    assert "deletion disabled" in response.content.decode()
    assert status_of(registry, "team/app", "1.0") == 200
    assert RegistryTag.objects.filter(tag="1.0").exists()  # nothing changed in the rows either
    assert not AuditEntry.objects.filter(model="registrytag").exists()


def test_unreachable_registry_and_no_instances(db, client_as):
    viewer = client_as(Role.VIEWER)
    assert "No registry instances yet" in viewer.get("/instances/images/").content.decode()
    down = Instance.objects.create(name="down", url="http://127.0.0.1:9")
    failed = refresh(down)
    assert failed.status == OperationStatus.FAILED and failed.error.startswith("The registry could not be read:")
    page = viewer.get("/instances/images/")
    assert page.status_code == 200 and f"The last refresh failed: {failed.error}" in page.content.decode()


def test_images_api_lists_pairs_and_deletes_one_side_by_digest(instance, reg, push, api_as):
    kept = convert(instance, reg, push, "team/app:1.0")
    push("team/app:2.0")  # not converted
    push("other/web:1")
    refresh(instance)
    viewer, operator = api_as(Role.VIEWER), api_as(Role.OPERATOR)
    listing = viewer.get("/api/v1/images/", {"instance": instance.pk, "namespace": "team"})
    assert listing.status_code == 200
    body = listing.json()
    assert [r["path"] for r in body["repositories"]] == ["team/app"]
    assert (body["page"], body["pages"], body["tag_count"]) == (1, 1, 2)
    assert body["as_of"] is not None and body["refreshing"] is None and body["refresh_error"] is None
    rows = {row["tag"]: row for row in body["repositories"][0]["tags"]}
    assert rows["1.0"]["original"]["digest"] == kept.source_digest
    assert rows["1.0"]["accelerated"]["digest"] == kept.result_digest
    assert (rows["1.0"]["accelerated"]["tag"], rows["1.0"]["accelerated"]["state"]) == ("1.0-apparate", "present")
    assert (rows["1.0"]["job"], rows["1.0"]["job_status"]) == (kept.pk, "succeeded")
    assert rows["2.0"]["accelerated"] is None and rows["2.0"]["job"] is None
    assert body["accelerated_bytes"] == rows["1.0"]["accelerated"]["size"] > 0
    assert viewer.get("/api/v1/images/", {"instance": instance.pk, "repository": "we"}).json()[
        "repositories"][0]["path"] == "other/web"

    delete = {"instance": instance.pk, "repository": "team/app", "digest": kept.result_digest}
    assert viewer.post("/api/v1/images/delete/", delete, format="json").status_code == 403
    assert status_of(reg, "team/app", "1.0-apparate") == 200
    deleted = operator.post("/api/v1/images/delete/", delete, format="json")
    assert deleted.status_code == 200 and kept.result_digest in deleted.json()["detail"]
    assert status_of(reg, "team/app", "1.0-apparate") == 404 and status_of(reg, "team/app", "1.0") == 200
    twin = viewer.get("/api/v1/images/", {"instance": instance.pk, "namespace": "team"}).json()[
        "repositories"][0]["tags"][0]["accelerated"]
    assert (twin["state"], twin["deleted_by"]) == ("deleted", "api-operator")
    assert twin["state_reason"].startswith("Deleted through the API by api-operator on ")
    assert AuditEntry.objects.get(model="acceleratedimage").source == "api"
    again = operator.post("/api/v1/images/delete/", delete, format="json")
    assert again.status_code == 404 and "No such image" in again.json()["detail"]

    for bad, field in [({**delete, "digest": "1.0"}, "digest"), ({**delete, "repository": "../etc"}, "repository"),
                       ({**delete, "instance": 999999}, "instance")]:
        refused = operator.post("/api/v1/images/delete/", bad, format="json")
        assert refused.status_code == 400 and field in refused.json(), bad
    assert status_of(reg, "team/app", "1.0") == 200
    assert viewer.get("/api/v1/images/").status_code == 400


def test_images_api_refresh_and_deletion_disabled_and_unreachable_registries(db, registry_factory, tmp_path,
                                                                             api_as):
    registry = registry_factory(delete=False)
    instance = Instance.objects.create(name="no-delete", url=registry.url)
    digest = push_image(tmp_path, f"{registry.host}/team/app:1.0")
    refused = api_as(Role.OPERATOR).post("/api/v1/images/delete/",
                                         {"instance": instance.pk, "repository": "team/app", "digest": digest},
                                         format="json")
    assert refused.status_code == 409 and "deletion disabled" in refused.json()["detail"]
    assert status_of(registry, "team/app", "1.0") == 200
    down = Instance.objects.create(name="down", url="http://127.0.0.1:9")
    viewer = api_as(Role.VIEWER)
    started = viewer.post("/api/v1/images/refresh/", {"instance": down.pk}, format="json")
    assert started.status_code == 202 and started.json()["kind"] == "refresh_images"
    assert started.json()["status"] == "queued" and started.json()["is_done"] is False
    operations.run_operation(started.json()["id"])
    polled = viewer.get(f"/api/v1/operations/{started.json()['id']}/").json()
    assert polled["status"] == "failed" and polled["error"].startswith("The registry could not be read:")
    listing = viewer.get("/api/v1/images/", {"instance": down.pk}).json()
    assert listing["refresh_error"] == polled["error"] and listing["repositories"] == []


def test_tags_are_paged_on_the_page_and_in_the_api(instance, push, client_as, api_as, monkeypatch):
    monkeypatch.setattr(catalogue, "ROWS_PER_PAGE", 2)  # our own page size, to page three tags
    for name in ("alpha", "beta", "gamma"):
        push(f"team/{name}:1")
    refresh(instance)
    viewer = client_as(Role.VIEWER)
    first = viewer.get(f"/instances/images/?instance={instance.pk}").content.decode()
    assert "team/alpha" in first and "team/beta" in first and "team/gamma" not in first
    assert "Page 1 of 2" in first and f"instance={instance.pk}&amp;page=2" in first
    second = viewer.get(f"/instances/images/?instance={instance.pk}&page=2").content.decode()
    assert "team/gamma" in second and "team/alpha" not in second
    api = api_as(Role.VIEWER)
    body = api.get("/api/v1/images/", {"instance": instance.pk, "page": 2}).json()
    assert [r["path"] for r in body["repositories"]] == ["team/gamma"]
    assert (body["page"], body["pages"], body["tag_count"]) == (2, 2, 3)
    assert api.get("/api/v1/images/", {"instance": instance.pk, "page": 0}).status_code == 400


def test_storage_counts_a_digest_shared_by_several_tags_once(instance, reg, push):
    job = convert(instance, reg, push, "team/app:1.0")
    push("team/app:latest", seed=None)
    actions.add_twin_tag(job, "stable")  # a further tag of the same content
    push_same = job.source_digest
    requests.put(f"{reg.url}/v2/team/app/manifests/stable",
                 data=requests.get(f"{reg.url}/v2/team/app/manifests/{push_same}", headers={"Accept": OCI},
                                   timeout=10).content, headers={"Content-Type": OCI}, timeout=10).raise_for_status()
    actions.push_twin_tags(job.pk)
    refresh(instance)
    found = catalogue.list_images(instance)
    sources = {row.tag: row.source.size for repo in found.repositories for row in repo.rows}
    twin_size = AcceleratedImage.objects.get(twin_tag="1.0-apparate").twin_size
    assert AcceleratedImage.objects.get(twin_tag="stable-apparate").twin_size == twin_size
    assert found.accelerated_bytes == twin_size  # two twin tags, one manifest
    assert found.original_bytes == sources["1.0"] + sources["latest"]  # 1.0 and stable are one image


def test_only_the_latest_refreshes_of_an_instance_are_kept(instance, push):
    push("team/app:1.0")
    Operation.objects.bulk_create(Operation(kind=OperationKind.REFRESH_IMAGES, instance=instance,
                                            status=OperationStatus.SUCCEEDED) for _ in range(30))
    oldest = Operation.objects.order_by("id").first()
    latest = refresh(instance)
    kept = Operation.objects.filter(instance=instance, kind=OperationKind.REFRESH_IMAGES)
    assert kept.count() == operations.KEEP_REFRESHES + 1 and kept.filter(pk=latest.pk).exists()
    assert not kept.filter(pk=oldest.pk).exists()


def test_deleting_an_image_names_the_other_tags_that_go_with_it(db, client_as):
    instance = Instance.objects.create(name="quiet", url="https://registry.example.com")
    shared, alone = "sha256:" + "aa" * 32, "sha256:" + "bb" * 32
    for tag in ("1.0", "latest", "stable"):
        RegistryTag.objects.create(instance=instance, namespace="team", repository="app", tag=tag, digest=shared)
    RegistryTag.objects.create(instance=instance, namespace="team", repository="app", tag="2.0", digest=alone)
    RegistryTag.objects.create(instance=instance, namespace="team", repository="web", tag="1.0", digest=shared)
    operator = client_as(Role.OPERATOR)
    page = operator.get(f"/instances/{instance.pk}/images/delete/?path=team/app&digest={shared}&tag=1.0")
    text = page.content.decode()
    assert "2 other tags of team/app point at the same image and go with it:" in text
    assert "<li>team/app:latest</li><li>team/app:stable</li></ul>" in text
    assert "team/web" not in text and "team/app:2.0" not in text
    single = operator.get(f"/instances/{instance.pk}/images/delete/?path=team/app&digest={alone}&tag=2.0")
    assert 'id="shared-digest"' not in single.content.decode()
    assert "the console knows of no other tag pointing at it" in single.content.decode()
