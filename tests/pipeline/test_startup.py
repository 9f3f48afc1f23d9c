"""Startup bytes per twin (pipeline/startup.py): the sentence at its boundaries; the figure a
conversion records (per platform, per distinct layer), shared by re-tagged twins and brought by
cached layers; older twins measured from the registry with Range requests only (counted by a proxy
in front of the real docker-registry), equal to what the converter recorded; a twin that is not
eStargz is "unknown" with its reason; a registry failure leaves it waiting; the Images page, the job
page, the dashboard, the API and its schema show it."""

import random

import pytest
import requests
from django.test import Client
from playwright.sync_api import expect

from console.dashboard import gather
from converter.startup import startup_bytes
from core.roles import Role
from pipeline import actions, catalogue, operations, startup
from pipeline.choices import JobStatus, StartupState, TwinState
from pipeline.models import AcceleratedImage, ConversionJob, LayerCacheEntry
from registries.models import Instance
from tests.converter.test_image_conversion import ranged_reader
from tests.pipeline.test_twins import finished_job, finished_operation, wait_for
from tests.support.browser import login
from tests.support.images import Platform, push_image
from tests.support.users import PASSWORD

MB = 1024 * 1024
OCI = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json"
PENDING = "Not known yet what a node fetches to start: it is read from the registry in the background"
FIGURES = ("startup_bytes", "full_pull_bytes", "startup_layers", "startup_error")


def known(startup_figure: int, whole: int) -> startup.Figure:
    return startup.Figure(StartupState.KNOWN, startup_figure, whole)


# --- The sentence -----------------------------------------------------------------------------


@pytest.mark.parametrize(("figure", "text"), [
    (known(1258291, 22 * MB), "A node fetches 1.2 MB of 22.0 MB (5.5%) to start"),
    (known(0, 22 * MB), "A node fetches 0 bytes of 22.0 MB (0%) to start"),
    (known(51, 22 * MB), "A node fetches 51 bytes of 22.0 MB (<0.1%) to start"),
    (known(100 * 1024, 22 * MB), "A node fetches 100.0 KB of 22.0 MB (0.4%) to start"),
    (known(22 * MB, 22 * MB), "A node fetches 22.0 MB of 22.0 MB (100%) to start"),
    (known(22 * MB - 1, 22 * MB), "A node fetches 22.0 MB of 22.0 MB (>99.9%) to start"),
    (known(1, 2), "A node fetches 1 byte of 2 bytes (50%) to start"),
    (known(0, 0), "A node fetches nothing to start: the image has no layers"),
    (startup.Figure(StartupState.PENDING), PENDING),
    (startup.Figure(StartupState.UNKNOWN, reason="layer 1 of 1, sha256:ab, is not eStargz: its media type "
                                                  "'application/vnd.oci.image.layer.v1.tar' is not a gzip layer"),
     "Unknown what a node fetches to start: layer 1 of 1, sha256:ab, is not eStargz: its media type "
     "'application/vnd.oci.image.layer.v1.tar' is not a gzip layer"),
])
def test_the_sentence_at_its_boundaries(figure, text):
    assert figure.sentence == text


def test_the_bar_shows_any_fetch_and_only_known_figures():
    assert [known(*pair).bar_width for pair in [(0, 100), (1, 10**6), (5, 100), (100, 100), (0, 0)]] == [
        0.0, 0.5, 5.0, 100.0, 0.0]
    assert startup.Figure(StartupState.UNKNOWN, reason="x").bar_width == 0.0
    assert known(1, 3).percent == pytest.approx(33.3333, abs=1e-3) and known(0, 0).percent is None
    assert startup.Figure(StartupState.PENDING).percent is None


# --- Recorded while converting ------------------------------------------------------------------


def twin_layers(reg, path: str, reference: str) -> list[dict]:
    response = requests.get(f"{reg.url}/v2/{path}/manifests/{reference}", headers={"Accept": OCI}, timeout=10)
    return response.json()["layers"]


def measured_directly(reg, path: str, layers: list[dict], platform: str = "") -> list[dict]:
    """Each layer's figure computed from the blob in the registry, independently of the console."""
    return [{"platform": platform, "digest": layer["digest"], "size": layer["size"],
             "startup_bytes": startup_bytes(ranged_reader(reg.url, path, layer["digest"]), layer["size"]).total}
            for layer in layers]


def figures_of(row: AcceleratedImage) -> dict:
    row.refresh_from_db()
    return {name: getattr(row, name) for name in FIGURES}


def convert(instance, reg, image: str, digest: str, rule) -> ConversionJob:
    job, _ = actions.request_conversion(instance, f"{reg.host}/{image}", digest, rule=rule)
    actions.run_conversion(job.pk)
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED, job.reason
    return job


def test_a_conversion_records_the_figure_and_retagged_and_cached_twins_share_it(instance, make_rule, reg, push):
    rule = make_rule(prioritized_files=["/app/run"])
    digest = push("team/app:1.0", seed=7)
    push("team/app:latest", seed=7)
    job = convert(instance, reg, "team/app:1.0", digest, rule)
    row = AcceleratedImage.objects.get(twin_tag="1.0-apparate")
    expected = measured_directly(reg, "team/app", twin_layers(reg, "team/app", "1.0-apparate"))
    assert row.startup_layers == expected
    assert row.startup_bytes == sum(layer["startup_bytes"] for layer in expected)
    assert row.full_pull_bytes == sum(layer["size"] for layer in expected)
    assert row.startup_error == "" and 0 < row.startup_bytes < row.full_pull_bytes
    # the prioritized /app/run is prefetched: its layer's figure is more than footer and TOC
    assert [startup_bytes(ranged_reader(reg.url, "team/app", layer["digest"]), layer["size"]).prefetch > 0
            for layer in expected] == [False, True]
    figure = startup.figure(row)
    assert figure.state == StartupState.KNOWN and figure.platforms == 1 and figure.platform == ""
    assert figure.sentence.startswith("A node fetches ") and figure.sentence.endswith(") to start")

    # the twin made by re-tagging the same manifest gets the same figure, without measuring
    actions.add_twin_tag(job, "latest")
    assert actions.push_twin_tags(job.pk) == ["latest-apparate"]
    assert figures_of(AcceleratedImage.objects.get(twin_tag="latest-apparate")) == figures_of(row)

    # the same layers in another repository come from the layer cache, with their figure
    copy = convert(instance, reg, "team/copy:1.0", push("team/copy:1.0", seed=7), rule)
    assert "0 layer(s) converted, 2 reused" in copy.log[-1]["message"]
    assert figures_of(AcceleratedImage.objects.get(repository="copy")) == figures_of(row)


def test_cached_layers_without_their_figure_take_the_manifests_or_are_measured_after_the_conversion(
        instance, make_rule, reg, push, django_capture_on_commit_callbacks):
    rule = make_rule()
    one = AcceleratedImage.objects.get(pk=convert(instance, reg, "team/one:1", push("team/one:1", seed=9),
                                                  rule).twins.get().pk)
    recorded = figures_of(one)
    LayerCacheEntry.objects.update(startup_bytes=None)  # entries made before the figure was recorded
    digest = push("team/two:1", seed=9)
    job, _ = actions.request_conversion(instance, f"{reg.host}/team/two:1", digest, rule=rule)
    with django_capture_on_commit_callbacks() as callbacks:
        actions.run_conversion(job.pk)
    two = AcceleratedImage.objects.get(repository="two")
    assert figures_of(two) == recorded and callbacks == []  # the manifest's figure, known from team/one

    AcceleratedImage.objects.update(startup_bytes=None, full_pull_bytes=None, startup_layers=None)
    three, _ = actions.request_conversion(instance, f"{reg.host}/team/three:1", push("team/three:1", seed=9),
                                          rule=rule)
    with django_capture_on_commit_callbacks() as callbacks:
        actions.run_conversion(three.pk)
    assert startup.figure(AcceleratedImage.objects.get(repository="three")).sentence == PENDING
    assert len(callbacks) == 1  # the measuring task, enqueued once the job is saved
    assert startup.measure_pending(instance).as_dict() == {"measured": 1, "unknown": 0, "failed": 0, "remaining": 0}
    assert [figures_of(row) for row in AcceleratedImage.objects.order_by("repository")] == [recorded] * 3


def test_an_index_records_every_platform_and_headlines_the_first(instance, make_rule, reg, tmp_path, client_as):
    rule = make_rule()
    amd64 = [{"bin/": None, "bin/tool": b"amd64\n" * 4000}, {"app/": None, "app/run": b"run\n" * 500}]
    arm64 = [{"bin/": None, "bin/tool": b"arm64\n" * 9000}, {"app/": None, "app/run": b"run\n" * 500}]
    digest = push_image(tmp_path, f"{reg.host}/team/multi:1.0",
                        [Platform(layers=amd64), Platform(architecture="arm64", variant="v8", layers=arm64)])
    job = convert(instance, reg, "team/multi:1.0", digest, rule)
    index = requests.get(f"{reg.url}/v2/team/multi/manifests/1.0-apparate", headers={"Accept": OCI},
                         timeout=10).json()
    expected = []
    for entry in index["manifests"]:
        name = "/".join(filter(None, [entry["platform"]["os"], entry["platform"]["architecture"],
                                      entry["platform"].get("variant")]))
        expected += measured_directly(reg, "team/multi", twin_layers(reg, "team/multi", entry["digest"]), name)
    row = AcceleratedImage.objects.get(twin_tag="1.0-apparate")
    assert [layer["platform"] for layer in row.startup_layers] == ["linux/amd64"] * 2 + ["linux/arm64/v8"] * 2
    assert row.startup_layers == expected
    first = [layer for layer in expected if layer["platform"] == "linux/amd64"]
    assert (row.startup_bytes, row.full_pull_bytes) == (sum(layer["startup_bytes"] for layer in first),
                                                        sum(layer["size"] for layer in first))
    figure = startup.figure(row)
    assert (figure.platform, figure.platforms) == ("linux/amd64", 2)
    page = client_as(Role.VIEWER).get(f"/rules/jobs/{job.pk}/").content.decode()
    assert f"{figure.sentence} (linux/amd64, the first of its 2 platforms)" in page
    per_layer = page[page.index('id="job-startup-layers"'):]
    per_layer = per_layer[:per_layer.index("</details>")]
    assert per_layer.count("<td>linux/arm64/v8</td>") == per_layer.count("<td>linux/amd64</td>") == 2


# --- Measured from the registry for older twins -------------------------------------------------


def blob_requests(proxy) -> list[tuple[str, str, str | None]]:
    return [request for request in proxy.requests if "/blobs/" in request[1]]


def test_an_older_twin_is_measured_with_ranges_only_and_equals_what_the_converter_recorded(
        instance, make_rule, reg, push, counting_proxy):
    rule = make_rule(prioritized_files=["/app/run"])
    job = convert(instance, reg, "team/app:1.0", push("team/app:1.0", seed=3), rule)
    row = AcceleratedImage.objects.get(twin_tag="1.0-apparate")
    recorded = figures_of(row)
    layers = twin_layers(reg, "team/app", "1.0-apparate")
    proxy = counting_proxy(reg.url)
    Instance.objects.filter(pk=instance.pk).update(url=f"http://127.0.0.1:{proxy.port}")
    instance.refresh_from_db()
    # a twin made before the figure was recorded
    AcceleratedImage.objects.filter(pk=row.pk).update(startup_bytes=None, full_pull_bytes=None, startup_layers=None)
    assert startup.figure(AcceleratedImage.objects.get(pk=row.pk)).sentence == PENDING

    # its layers are in the layer cache with their figures: no blob is read at all
    report = startup.measure_pending(instance)
    assert report.as_dict() == {"measured": 1, "unknown": 0, "failed": 0, "remaining": 0}
    assert figures_of(row) == recorded and blob_requests(proxy) == []

    # neither the twin nor the cache knows: the footer, then the TOC, of each layer, by Range requests
    AcceleratedImage.objects.filter(pk=row.pk).update(startup_bytes=None, full_pull_bytes=None, startup_layers=None,
                                                      startup_checked_at=None)
    LayerCacheEntry.objects.update(startup_bytes=None)
    proxy.reset()
    assert startup.measure_pending(instance).measured == 1
    assert figures_of(row) == recorded
    served = proxy.blob_bytes()
    requested = blob_requests(proxy)
    assert requested and all(method == "GET" and range_header for method, _, range_header in requested)
    for layer in layers:
        figure = startup_bytes(ranged_reader(reg.url, "team/app", layer["digest"]), layer["size"])
        assert served[layer["digest"]] == figure.footer + figure.toc < layer["size"]
        footer_range = f"bytes={layer['size'] - 51}-{layer['size'] - 1}"
        assert [r for _, path, r in requested if layer["digest"] in path] == [
            footer_range, f"bytes={layer['size'] - 51 - figure.toc}-{layer['size'] - 52}"]
    assert set(served) == {layer["digest"] for layer in layers}
    # the cache learnt the figures again, for later conversions that reuse the layers
    assert {entry.digest: entry.startup_bytes for entry in LayerCacheEntry.objects.all()} == {
        layer["digest"]: layer["startup_bytes"] for layer in recorded["startup_layers"]}

    # idempotent: nothing waits any more, nothing is read
    proxy.reset()
    assert startup.measure_pending(instance).as_dict() == {"measured": 0, "unknown": 0, "failed": 0,
                                                           "remaining": 0}
    assert proxy.requests == []
    assert startup.figure(startup.twin_of_job(ConversionJob.objects.get(pk=job.pk))).state == StartupState.KNOWN


def test_a_twin_that_is_not_estargz_is_unknown_with_the_reason(instance, reg, push, counting_proxy, client_as,
                                                                api_as):
    push("team/foreign:1.0", seed=5)
    digest = push("team/foreign:1.0-apparate", seed=6)  # a plain image under a twin name: not made by the console
    proxy = counting_proxy(reg.url)
    Instance.objects.filter(pk=instance.pk).update(url=f"http://127.0.0.1:{proxy.port}")
    instance.refresh_from_db()
    catalogue.refresh_images(instance)
    row = AcceleratedImage.objects.get(twin_tag="1.0-apparate")
    assert row.twin_digest == digest and row.job is None and startup.figure(row).state == StartupState.PENDING
    proxy.reset()

    assert startup.measure_pending(instance).as_dict() == {"measured": 0, "unknown": 1, "failed": 0, "remaining": 0}
    first = twin_layers(reg, "team/foreign", "1.0-apparate")[0]
    reason = (f"layer 1 of 2, {first['digest']}, is not eStargz: the last 51 bytes are not a gzip member with an "
              "Extra field: not an eStargz blob")
    row.refresh_from_db()
    assert (row.startup_bytes, row.startup_error) == (None, reason)
    assert startup.figure(row).sentence == f"Unknown what a node fetches to start: {reason}"
    assert blob_requests(proxy) == [("GET", f"/v2/team/foreign/blobs/{first['digest']}",
                                     f"bytes={first['size'] - 51}-{first['size'] - 1}")]
    # settled: not read again
    proxy.reset()
    assert startup.measure_pending(instance).unknown == 0 and proxy.requests == []

    page = client_as(Role.VIEWER).get(f"/instances/images/?instance={instance.pk}")
    assert page.status_code == 200 and 'data-startup-state="unknown"' in page.content.decode()
    answer = api_as(Role.VIEWER).get("/api/v1/images/", {"instance": instance.pk}).json()
    twin = next(tag["accelerated"] for repo in answer["repositories"] for tag in repo["tags"]
                if tag["accelerated"] and tag["accelerated"]["tag"] == "1.0-apparate")
    assert twin["startup"] == {"state": "unknown", "startup_bytes": None, "full_pull_bytes": None, "percent": None,
                               "platform": "", "text": f"Unknown what a node fetches to start: {reason}",
                               "reason": reason}
    assert twin["startup_layers"] is None


def test_a_registry_failure_leaves_the_twin_waiting_until_it_is_due_again(instance, make_rule, reg, push, settings):
    convert(instance, reg, "team/app:1.0", push("team/app:1.0"), make_rule())
    AcceleratedImage.objects.update(startup_bytes=None, full_pull_bytes=None, startup_layers=None)
    settings.APPARATE_REGISTRY_RETRIES = 0
    Instance.objects.filter(pk=instance.pk).update(url="http://127.0.0.1:9")  # nothing listens there
    instance.refresh_from_db()
    assert startup.measure_pending(instance).as_dict() == {"measured": 0, "unknown": 0, "failed": 1, "remaining": 1}
    row = AcceleratedImage.objects.get()
    assert row.startup_checked_at is not None and startup.figure(row).sentence == PENDING
    assert startup.measure_pending(instance).failed == 0  # not due again yet: no loop on a failing registry
    settings.APPARATE_STARTUP_RETRY_AFTER = 0
    Instance.objects.filter(pk=instance.pk).update(url=reg.url)
    instance.refresh_from_db()
    assert startup.measure_pending(instance).measured == 1


def test_deleted_and_missing_twins_are_not_measured_and_beat_asks_only_for_waiting_ones(
        instance, make_rule, reg, push, django_capture_on_commit_callbacks):
    convert(instance, reg, "team/app:1.0", push("team/app:1.0"), make_rule())
    with django_capture_on_commit_callbacks() as callbacks:
        assert startup.measure_all() == 0  # every twin has its figure
    assert callbacks == []
    AcceleratedImage.objects.update(startup_bytes=None, full_pull_bytes=None, startup_layers=None,
                                    state=TwinState.DELETED)
    assert startup.measure_pending(instance).as_dict() == {"measured": 0, "unknown": 0, "failed": 0, "remaining": 0}
    with django_capture_on_commit_callbacks() as callbacks:
        assert startup.measure_all() == 0
    assert callbacks == []
    AcceleratedImage.objects.update(state=TwinState.PRESENT)
    with django_capture_on_commit_callbacks() as callbacks:
        assert startup.measure_all() == 1
    assert len(callbacks) == 1


def test_an_images_refresh_has_a_worker_measure_the_waiting_twins(transactional_db, reg, push, celery_worker):
    instance = Instance.objects.create(name="local", url=reg.url, acceleration_enabled=True)
    rule = instance.rules.create(name="team", namespace="team")
    job, _ = actions.request_conversion(instance, f"{reg.host}/team/app:1.0", push("team/app:1.0"), rule=rule)
    assert finished_job(job.pk).status == JobStatus.SUCCEEDED, celery_worker.log()[-2000:]
    row = AcceleratedImage.objects.get()
    recorded = figures_of(row)
    AcceleratedImage.objects.update(startup_bytes=None, full_pull_bytes=None, startup_layers=None)
    LayerCacheEntry.objects.update(startup_bytes=None)
    operation = operations.request_refresh(instance)
    assert finished_operation(operation.pk).status == "succeeded"
    wait_for(lambda: AcceleratedImage.objects.filter(pk=row.pk, startup_bytes__isnull=False).exists(),
             timeout=60, what="the worker to measure the twin")
    assert figures_of(row) == recorded, celery_worker.log()[-2000:]


# --- Shown on the pages, the dashboard and the API --------------------------------------------


def test_pages_dashboard_and_api_show_the_figure(instance, make_rule, reg, push, client_as, api_as):
    rule = make_rule()
    first = convert(instance, reg, "team/app:1.0", push("team/app:1.0", seed=1), rule)
    convert(instance, reg, "team/app:2.0", push("team/app:2.0", seed=2), rule)  # shares the app/ layer
    rows = {row.source_tag: row for row in AcceleratedImage.objects.all()}
    sentence = startup.figure(rows["1.0"]).sentence
    viewer = client_as(Role.VIEWER)

    page = viewer.get(f"/instances/images/?instance={instance.pk}").content.decode()
    assert page.count('data-startup-state="known"') == 2 and sentence in page
    assert f"<title>{sentence}</title>" in page and 'class="startup-bar"' in page

    job_page = viewer.get(f"/rules/jobs/{first.pk}/").content.decode()
    assert 'id="job-startup"' in job_page and sentence in job_page and 'id="job-startup-layers"' in job_page

    # the dashboard: over present twins, a layer they share counts once
    layers = {layer["digest"]: layer for row in rows.values() for layer in row.startup_layers}
    assert len(layers) == 3
    total = gather().jobs["startup"]
    assert (total.images, total.pending, total.unknown) == (2, 0, 0)
    assert (total.figure.startup_bytes, total.figure.full_pull_bytes) == (
        sum(layer["startup_bytes"] for layer in layers.values()), sum(layer["size"] for layer in layers.values()))
    AcceleratedImage.objects.filter(pk=rows["2.0"].pk).update(startup_bytes=None, full_pull_bytes=None)
    total = gather().jobs["startup"]
    assert (total.images, total.pending) == (1, 1)
    assert total.figure.startup_bytes == rows["1.0"].startup_bytes
    dashboard = viewer.get("/").content.decode()
    assert total.figure.sentence in dashboard and "1 not measured yet" in dashboard
    assert "Over the 1 accelerated image measured" in dashboard

    api = api_as(Role.VIEWER)
    job = api.get(f"/api/v1/jobs/{first.pk}/").json()
    expected = {"state": "known", "startup_bytes": rows["1.0"].startup_bytes,
                "full_pull_bytes": rows["1.0"].full_pull_bytes,
                "percent": 100 * rows["1.0"].startup_bytes / rows["1.0"].full_pull_bytes, "platform": "",
                "text": sentence, "reason": ""}
    assert job["startup"] == expected
    assert job["twins"][0]["startup"] == expected and job["twins"][0]["startup_layers"] == rows["1.0"].startup_layers
    queued, _ = actions.request_conversion(instance, f"{reg.host}/team/app:3.0", "sha256:" + "c" * 64, rule=rule)
    assert api.get(f"/api/v1/jobs/{queued.pk}/").json()["startup"] is None

    schema = api.get("/api/v1/schema/?format=json").json()["components"]["schemas"]
    assert set(schema["Startup"]["properties"]) == {"state", "startup_bytes", "full_pull_bytes", "percent",
                                                    "platform", "text", "reason"}
    assert schema["Job"]["properties"]["startup"]["nullable"] is True
    assert set(schema["StartupLayer"]["properties"]) == {"platform", "digest", "startup_bytes", "size"}
    assert "startup" in schema["Twin"]["properties"] and "startup_layers" in schema["Twin"]["properties"]
    assert Client().get(f"/api/v1/jobs/{first.pk}/").status_code in {401, 403}


@pytest.mark.browser
def test_the_bar_is_drawn_to_scale_named_and_fits_the_page(live_server, page, registry, make_user, tmp_path):
    instance = Instance.objects.create(name="browser-reg", url=registry.url, acceleration_enabled=True)
    rule = instance.rules.create(name="team", namespace="team", prioritized_files=["/data/first"])
    layers = [{"data/": None, "data/first": random.Random(1).randbytes(100_000),
               "data/rest": random.Random(2).randbytes(200_000)}]
    digest = push_image(tmp_path, f"{registry.host}/team/app:1.0", [Platform(layers=layers)])
    job = convert(instance, registry, "team/app:1.0", digest, rule)
    figure = startup.figure(AcceleratedImage.objects.get())
    assert 20 < figure.bar_width < 50  # the prioritized third of the layer, its TOC and footer
    login(page, live_server.url, make_user(Role.VIEWER).username, PASSWORD)

    page.goto(f"{live_server.url}/instances/images/?instance={instance.pk}")
    row = page.locator("tr[data-tag='1.0']")
    bar = row.get_by_role("img", name=f"{figure.share_text} of the image is fetched to start")
    expect(bar).to_be_visible()
    expect(row.locator(".startup-text")).to_have_text(figure.sentence)
    drawn = bar.locator(".startup-bar-start").bounding_box()["width"] / bar.bounding_box()["width"]
    assert drawn == pytest.approx(figure.bar_width / 100, abs=0.01)
    assert page.evaluate("document.documentElement.scrollWidth") <= 1280  # no sideways scrolling

    page.goto(f"{live_server.url}/rules/jobs/{job.pk}/")
    expect(page.locator("#job-startup .startup-text")).to_have_text(figure.sentence)
    expect(page.locator("#job-startup").get_by_role("img")).to_be_visible()
