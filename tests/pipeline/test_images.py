"""Images page: pairs of original and accelerated image with sizes and job status, orphans, and
deletion by digest that never touches the other image; a registry with deletion disabled says so."""

import requests

from console.roles import Role
from registries.models import Instance
from rules import actions

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
    from tests.support.images import push_image

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
