"""Images page, per row: the artifact type of the original and of the twin (recorded by the refresh
and by conversions, from the manifest media type), Convert / Re-convert for operators (through
Convert now, with a confirmation that says what re-converting would do), and from "no twin" a link
to the reason: the tag's latest push event, or how the rules judge it when no push was received."""

import re

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from core.roles import Role
from pipeline import actions, operations
from pipeline.choices import OperationKind, PushOutcome, PushReason, artifact_type
from pipeline.intake import PushRecord
from pipeline.models import AcceleratedImage, ConversionJob, Operation, PushEvent, RegistryTag
from registries.models import Instance
from rules.models import Rule
from tests.pipeline.test_images import convert, refresh
from tests.support.browser import login
from tests.support.images import Platform, push_image
from tests.support.users import PASSWORD

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
TWO_PLATFORMS = [Platform(architecture="amd64"), Platform(architecture="arm64")]


def row_of(page: str, tag: str) -> str:
    """The HTML of the Images row of one tag."""
    found = re.search(rf'<tr data-tag="{re.escape(tag)}">(.*?)</tr>', page, re.S)
    assert found, f"no row for {tag}"
    return found[1]


def artifact_types(row: str) -> dict[str, str]:
    return dict(re.findall(r'<span class="artifact-type" data-artifact="(\w+)">([^<]+)</span>', row))


def test_artifact_type_names():
    assert [artifact_type(t) for t in (DOCKER_MANIFEST, DOCKER_LIST, OCI_MANIFEST, OCI_INDEX)] == [
        "Docker v2 schema 2", "Docker manifest list", "OCI manifest", "OCI index"]
    assert artifact_type("application/vnd.example+json") == "application/vnd.example+json"
    assert artifact_type("") == ""


def test_artifact_types_of_originals_and_twins(instance, reg, push, tmp_path, client_as):
    push_image(tmp_path / "d", f"{reg.host}/team/app:docker", docker=True)
    push_image(tmp_path / "l", f"{reg.host}/team/app:list", TWO_PLATFORMS, docker=True)
    index_digest = push_image(tmp_path / "i", f"{reg.host}/team/app:index", TWO_PLATFORMS)
    job = convert(instance, reg, push, "team/app:1.0")
    # the conversion recorded both media types already, before any refresh
    assert RegistryTag.objects.get(tag="1.0").media_type == OCI_MANIFEST
    assert AcceleratedImage.objects.get(twin_tag="1.0-apparate").media_type == OCI_MANIFEST
    refresh(instance)
    assert dict(RegistryTag.objects.values_list("tag", "media_type")) == {
        "docker": DOCKER_MANIFEST, "list": DOCKER_LIST, "index": OCI_INDEX, "1.0": OCI_MANIFEST}
    index_job, _ = actions.request_conversion(instance, f"{reg.host}/team/app:index", index_digest)
    assert actions.run_conversion(index_job.pk).status == "succeeded"  # a converted index is an OCI index
    page = client_as(Role.VIEWER).get(f"/instances/images/?instance={instance.pk}").content.decode()
    assert artifact_types(row_of(page, "docker")) == {"source": "Docker v2 schema 2"}
    assert artifact_types(row_of(page, "list")) == {"source": "Docker manifest list"}
    assert artifact_types(row_of(page, "index")) == {"source": "OCI index", "twin": "OCI index"}
    assert artifact_types(row_of(page, "1.0")) == {"source": "OCI manifest", "twin": "OCI manifest"}
    assert job.result_digest[:20] in row_of(page, "1.0")


def test_rows_recorded_before_media_types_get_them_at_the_next_refresh(instance, reg, push):
    convert(instance, reg, push, "team/app:1.0")
    push("team/app:2.0")
    refresh(instance)
    RegistryTag.objects.update(media_type="")
    AcceleratedImage.objects.update(media_type="")
    refresh(instance)
    assert set(RegistryTag.objects.values_list("media_type", flat=True)) == {OCI_MANIFEST}
    assert AcceleratedImage.objects.get().media_type == OCI_MANIFEST


def test_convert_and_reconvert_from_the_images_page(instance, reg, push, make_rule, client_as):
    rule = make_rule()
    converted = convert(instance, reg, push, "team/app:1.0")
    push("team/app:2.0")
    refresh(instance)
    operator = client_as(Role.OPERATOR)
    page = operator.get(f"/instances/images/?instance={instance.pk}").content.decode()
    assert 'aria-label="Convert team/app:2.0">Convert</button>' in row_of(page, "2.0")
    assert "Re-convert" not in row_of(page, "2.0")
    reconvert = f"/instances/{instance.pk}/images/reconvert/?path=team/app&amp;tag=1.0"
    assert f'href="{reconvert}" aria-label="Re-convert team/app:1.0"' in row_of(page, "1.0")
    viewer = client_as(Role.VIEWER)
    viewer_page = viewer.get(f"/instances/images/?instance={instance.pk}").content.decode()
    assert ">Convert</button>" not in viewer_page and "Re-convert" not in viewer_page  # viewers get neither
    assert viewer.get(f"/instances/{instance.pk}/images/reconvert/?path=team/app&tag=1.0").status_code == 403

    # the twin was made with the options that apply now: re-converting would change nothing
    confirm = operator.get(f"/instances/{instance.pk}/images/reconvert/?path=team/app&tag=1.0").content.decode()
    assert ("The twin was made from this content with the options that apply now: converting again would change "
            "nothing.") in confirm
    assert "pipeline:convert-now" not in confirm and 'action="/rules/jobs/convert-now/"' not in confirm

    # the rule's options changed since: the confirmation says what differs and offers Re-convert
    rule.chunk_size = 1 << 20
    rule.save()
    confirm = operator.get(f"/instances/{instance.pk}/images/reconvert/?path=team/app&tag=1.0").content.decode()
    assert "What differs: chunk size 4 MiB → 1 MiB." in confirm
    assert 'action="/rules/jobs/convert-now/"' in confirm and 'name="image" value="team/app:1.0"' in confirm
    answer = operator.post("/rules/jobs/convert-now/", {"instance": instance.pk, "image": "team/app:1.0"})
    operation = Operation.objects.get(kind=OperationKind.CONVERT_NOW)
    assert answer.status_code == 302 and answer["Location"] == operation.get_absolute_url()
    operations.run_operation(operation.pk)
    operation.refresh_from_db()
    assert operation.result["outcome"] == actions.Outcome.CREATED, operation.error
    new_job = ConversionJob.objects.exclude(pk=converted.pk).get()
    assert (new_job.source_tag, new_job.options["chunk_size"]) == ("1.0", 1 << 20)


def test_reconvert_of_a_tag_without_twin_sends_back_and_bad_parameters_are_refused(instance, client_as):
    operator, viewer = client_as(Role.OPERATOR), client_as(Role.VIEWER)
    answer = operator.get(f"/instances/{instance.pk}/images/reconvert/?path=team/app&tag=9.9", follow=True)
    assert "team/app:9.9 has no accelerated twin: use Convert." in answer.content.decode()
    for query in ("path=team/app&tag=bad tag", "path=/etc&tag=1", "tag=1"):
        refused = operator.get(f"/instances/{instance.pk}/images/reconvert/?{query}")
        assert refused.status_code == 400
        assert viewer.get(f"/instances/{instance.pk}/images/why/?{query}").status_code == 400


def test_no_twin_links_to_the_latest_push_event(instance, reg, push, make_rule, client_as):
    make_rule(tag_pattern=r"\d+\.\d+")
    digest = push("team/app:nightly")
    instance.acceleration_enabled = False
    instance.save()
    first = actions.record_push(instance, PushRecord("distribution", "d-1", "team", "app", "nightly", digest,
                                                     OCI_MANIFEST))
    instance.acceleration_enabled = True
    instance.save()
    event = actions.record_push(instance, PushRecord("distribution", "d-2", "team", "app", "nightly", digest,
                                                     OCI_MANIFEST))
    assert (first.reason, event.reason) == (PushReason.ACCELERATION_OFF, PushReason.NO_RULE_MATCHED)
    refresh(instance)
    viewer = client_as(Role.VIEWER)
    row = row_of(viewer.get(f"/instances/images/?instance={instance.pk}").content.decode(), "nightly")
    assert (f'<a class="why-no-twin" href="/instances/{instance.pk}/images/why/?path=team/app&amp;tag=nightly">'
            "Skipped: no enabled rule matched</a>") in row  # the latest push, not the first
    why = viewer.get(f"/instances/{instance.pk}/images/why/?path=team/app&tag=nightly").content.decode()
    detail = re.search(r'<dd id="why-detail">(.*?)</dd>', why, re.S)[1]
    assert detail == ("No enabled rule matched. Closest rule: &#x27;team&#x27;, which failed on tag: tag "
                      "&#x27;nightly&#x27; does not fully match &#x27;\\d+\\.\\d+&#x27;.")
    assert 'id="why-rules"' not in why  # the push says it; no evaluation of the rules as they are now


def test_no_twin_without_any_push_explains_the_rules_now(instance, reg, push, make_rule, client_as):
    push("team/app:3.0")
    refresh(instance)
    viewer = client_as(Role.VIEWER)
    url = f"/instances/{instance.pk}/images/why/?path=team/app&tag=3.0"
    row = row_of(viewer.get(f"/instances/images/?instance={instance.pk}").content.decode(), "3.0")
    assert f'<a class="why-no-twin" href="{url.replace("&", "&amp;")}">Why no twin?</a>' in row
    page = viewer.get(url).content.decode()
    assert "No push of this tag was received" in page
    assert re.search(r'id="why-rules-verdict">local has no acceleration rules', page)

    make_rule(name="releases", tag_pattern=r"1\.\d+")
    make_rule(name="other team", namespace="other")
    page = viewer.get(url).content.decode()
    assert 'id="why-rules-verdict">No enabled rule matches it.' in page
    failed = re.findall(r'data-criterion="([^"]+)" data-passed="false"><strong>[^<]+</strong> <span>([^<]+)</span>',
                        page)
    assert failed == [("tag", "tag &#x27;3.0&#x27; does not fully match &#x27;1\\.\\d+&#x27;"),
                      ("namespace", "namespace &#x27;team&#x27; is not the rule&#x27;s namespace &#x27;other&#x27;")]

    make_rule(name="all of team")
    page = viewer.get(url).content.decode()
    assert "Rule <a" in page and "all of team</a> matches it now" in page


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_the_images_and_rules_lists_fit_1280_pixels_with_the_new_columns(page, live_server, make_user):
    make_user(Role.OPERATOR, "wide-operator")
    instance = Instance.objects.create(name="local", url="http://registry.example.com:5000", acceleration_enabled=True)
    rule = Rule.objects.create(instance=instance, name="releases of the shop team", namespace="shop-team",
                               repository_pattern="frontend/web-.*", tag_pattern=r"v\d+\.\d+\.\d+(-rc\d+)?")
    job = ConversionJob.objects.create(instance=instance, namespace="shop-team", repository="frontend/web-app",
                                       source_tag="v1.20.300-rc1", source_digest="sha256:" + "a" * 64,
                                       status="succeeded", result_digest="sha256:" + "b" * 64)
    for tag, media_type in (("v1.20.300-rc1", DOCKER_LIST), ("v1.20.301-rc1", DOCKER_MANIFEST)):
        RegistryTag.objects.create(instance=instance, namespace="shop-team", repository="frontend/web-app", tag=tag,
                                   digest="sha256:" + "a" * 64, size=123456789, media_type=media_type)
    AcceleratedImage.objects.create(instance=instance, namespace="shop-team", repository="frontend/web-app",
                                    source_tag="v1.20.300-rc1", source_digest="sha256:" + "a" * 64,
                                    twin_tag="v1.20.300-rc1-apparate", twin_digest=job.result_digest, job=job,
                                    twin_size=123456789, media_type=OCI_INDEX)
    PushEvent.objects.create(instance=instance, source="distribution", delivery_id="d", namespace="shop-team",
                             repository="frontend/web-app", tag="v1.20.301-rc1", digest="sha256:" + "c" * 64,
                             outcome=PushOutcome.SKIPPED, reason=PushReason.ALREADY_SEEN, reason_detail="seen",
                             matched_rule=rule)
    Operation.objects.create(kind=OperationKind.REFRESH_IMAGES, instance=instance, status="succeeded",
                             finished_at=timezone.now())
    assert rule.push_events.count() == 1
    login(page, live_server.url, "wide-operator", PASSWORD)
    page.set_viewport_size({"width": 1280, "height": 800})
    overflow = ("Math.max(...[...document.querySelectorAll('table')]"
                ".map(t => t.scrollWidth - t.parentElement.clientWidth))")
    for url in (f"/instances/images/?instance={instance.pk}", "/rules/"):
        page.goto(f"{live_server.url}{url}")
        expect(page.locator("table").first).to_be_visible()
        assert page.evaluate(overflow) <= 0, url
        assert page.evaluate("document.documentElement.scrollWidth") <= 1280, url
