"""Images page: pairs of original and accelerated image with sizes and job status, orphans, and
deletion by digest that never touches the other image; a registry with deletion disabled says so."""

import requests

from core.roles import Role
from pipeline import actions, catalogue
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


def test_pairs_orphans_and_independent_deletion(instance, reg, push, client_as):
    kept = convert(instance, reg, push, "team/app:1.0")
    orphaned = convert(instance, reg, push, "team/app:2.0")
    push("team/app:3.0")  # not converted
    push("other/web:1")
    operator = client_as(Role.OPERATOR)
    # delete the original of 2.0: its twin stays and becomes an orphan
    source_digest = orphaned.source_digest
    confirm = operator.get(f"/instances/{instance.pk}/images/delete/?path=team/app&digest={source_digest}&tag=2.0")
    assert confirm.status_code == 200 and "Delete this image?" in confirm.content.decode()
    assert status_of(reg, "team/app", "2.0") == 200  # the confirmation page deletes nothing
    operator.post(f"/instances/{instance.pk}/images/delete/", {"path": "team/app", "digest": source_digest})
    assert status_of(reg, "team/app", "2.0") == 404
    assert status_of(reg, "team/app", "2.0-apparate") == 200

    page = client_as(Role.VIEWER).get(f"/instances/images/?instance={instance.pk}&namespace=team").content.decode()
    assert "team/app" in page and "other/web" not in page
    assert kept.result_digest[:20] in page and "orphan" in page and "Succeeded" in page and "no job" in page
    assert "accelerated twins" in page and "Delete" not in page  # viewers get no delete buttons

    # delete the accelerated image of 1.0: the original stays
    operator.post(f"/instances/{instance.pk}/images/delete/", {"path": "team/app", "digest": kept.result_digest})
    assert status_of(reg, "team/app", "1.0-apparate") == 404
    assert status_of(reg, "team/app", "1.0") == 200


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


def test_deletion_disabled_is_shown_as_such(db, registry_factory, tmp_path, client_as):
    registry = registry_factory(delete=False)
    instance = Instance.objects.create(name="no-delete", url=registry.url, acceleration_enabled=True)
    digest = push_image(tmp_path, f"{registry.host}/team/app:1.0")
    response = client_as(Role.OPERATOR).post(f"/instances/{instance.pk}/images/delete/",
                                             {"path": "team/app", "digest": digest}, follow=True)
    assert "deletion disabled" in response.content.decode()
    assert status_of(registry, "team/app", "1.0") == 200


def test_unreachable_registry_and_no_instances(db, client_as):
    viewer = client_as(Role.VIEWER)
    assert "No registry instances yet" in viewer.get("/instances/images/").content.decode()
    Instance.objects.create(name="down", url="http://127.0.0.1:9")
    page = viewer.get("/instances/images/")
    assert page.status_code == 200 and "Could not list the images" in page.content.decode()


def test_images_api_lists_pairs_and_deletes_one_side_by_digest(instance, reg, push, api_as):
    kept = convert(instance, reg, push, "team/app:1.0")
    push("team/app:2.0")  # not converted
    push("other/web:1")
    viewer, operator = api_as(Role.VIEWER), api_as(Role.OPERATOR)
    listing = viewer.get("/api/v1/images/", {"instance": instance.pk, "namespace": "team"})
    assert listing.status_code == 200
    body = listing.json()
    assert [r["path"] for r in body["repositories"]] == ["team/app"]
    assert (body["page"], body["pages"], body["repository_count"]) == (1, 1, 1)
    rows = {row["tag"]: row for row in body["repositories"][0]["tags"]}
    assert rows["1.0"]["original"]["digest"] == kept.source_digest
    assert rows["1.0"]["accelerated"]["digest"] == kept.result_digest
    assert rows["1.0"]["accelerated"]["tag"] == "1.0-apparate"
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
    again = operator.post("/api/v1/images/delete/", delete, format="json")
    assert again.status_code == 404 and "No such image" in again.json()["detail"]

    for bad, field in [({**delete, "digest": "1.0"}, "digest"), ({**delete, "repository": "../etc"}, "repository"),
                       ({**delete, "instance": 999999}, "instance")]:
        refused = operator.post("/api/v1/images/delete/", bad, format="json")
        assert refused.status_code == 400 and field in refused.json(), bad
    assert status_of(reg, "team/app", "1.0") == 200
    assert viewer.get("/api/v1/images/").status_code == 400


def test_images_api_reports_deletion_disabled_and_unreachable_registries(db, registry_factory, tmp_path, api_as):
    registry = registry_factory(delete=False)
    instance = Instance.objects.create(name="no-delete", url=registry.url)
    digest = push_image(tmp_path, f"{registry.host}/team/app:1.0")
    refused = api_as(Role.OPERATOR).post("/api/v1/images/delete/",
                                         {"instance": instance.pk, "repository": "team/app", "digest": digest},
                                         format="json")
    assert refused.status_code == 409 and "deletion disabled" in refused.json()["detail"]
    assert status_of(registry, "team/app", "1.0") == 200
    down = Instance.objects.create(name="down", url="http://127.0.0.1:9")
    listing = api_as(Role.VIEWER).get("/api/v1/images/", {"instance": down.pk})
    assert listing.status_code == 502 and "Could not list the images of down" in listing.json()["detail"]


def test_repositories_are_paged_on_the_page_and_in_the_api(instance, push, client_as, api_as, monkeypatch):
    monkeypatch.setattr(catalogue, "MAX_REPOSITORIES", 2)  # our own page size, to page three repositories
    for name in ("alpha", "beta", "gamma"):
        push(f"team/{name}:1")
    viewer = client_as(Role.VIEWER)
    first = viewer.get(f"/instances/images/?instance={instance.pk}").content.decode()
    assert "team/alpha" in first and "team/beta" in first and "team/gamma" not in first
    assert "Page 1 of 2" in first and f"instance={instance.pk}&amp;page=2" in first
    second = viewer.get(f"/instances/images/?instance={instance.pk}&page=2").content.decode()
    assert "team/gamma" in second and "team/alpha" not in second
    api = api_as(Role.VIEWER)
    body = api.get("/api/v1/images/", {"instance": instance.pk, "page": 2}).json()
    assert [r["path"] for r in body["repositories"]] == ["team/gamma"]
    assert (body["page"], body["pages"], body["repository_count"]) == (2, 2, 3)
    assert api.get("/api/v1/images/", {"instance": instance.pk, "page": 0}).status_code == 400
