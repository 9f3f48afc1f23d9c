"""Generated manifests validate against the Kubernetes schemas; the Helm chart renders the same objects."""

import io
import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from django.core.exceptions import ValidationError

from clusters import helm, manifests
from clusters.validators import validate_image_tag

HERE = Path(__file__).parent
PARAMS = manifests.SuiteParams(
    namespace="apparate-system", registry_host="registry.example.com:5000", username="robot",
    password='p&ss<w>"rd', insecure_registry=True, image="ghcr.io/containerd/stargz-snapshotter",
    version="0.15.1", label_key="cloud.tencent.com/apparate", label_value="true",
)
SCHEMA_VERSION = "1.33.0"


def all_generated() -> list[dict]:
    return [
        *manifests.suite_objects(PARAMS),
        manifests.pull_secret("web", "registry.example.com", "u", "p"),
        manifests.deployment("web", "shop", 3, "registry.example.com/team/shop:1.0-apparate",
                             {"cloud.tencent.com/apparate": "true"}, manifests.PULL_SECRET),
        manifests.deployment("web", "shop", 1, "registry.example.com/team/shop:1.0", None, None),
    ]


@pytest.mark.parametrize("obj", all_generated(), ids=lambda o: f"{o['kind']}-{o['metadata']['name']}")
def test_every_manifest_validates_strictly(obj):
    kubernetes_validate.validate(obj, SCHEMA_VERSION, strict=True)


def test_invalid_manifest_is_caught_by_the_validator():
    broken = manifests.daemonset(PARAMS)
    broken["spec"]["template"]["spec"]["containers"][0]["privileged"] = True  # belongs in securityContext
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, SCHEMA_VERSION, strict=True)


def test_daemonset_runs_only_on_labelled_nodes_with_host_paths_and_privileges():
    ds = manifests.daemonset(PARAMS)
    pod = ds["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"cloud.tencent.com/apparate": "true"}
    assert pod["containers"][0]["securityContext"] == {"privileged": True}
    assert {v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v} == {
        "/var/lib/containerd-stargz-grpc", "/run/containerd-stargz-grpc", "/run/containerd", "/dev/fuse"}
    changed = manifests.daemonset(manifests.SuiteParams(**{**PARAMS.__dict__, "password": "new"}))
    # new credentials roll the agent pods
    assert changed["spec"]["template"]["metadata"]["annotations"] != ds["spec"]["template"]["metadata"]["annotations"]


def chart_member(archive_bytes: bytes, name: str) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(archive_bytes), mode="r:gz") as archive:
        return archive.extractfile(name).read()


def test_chart_archive_holds_values_with_registry_credentials():
    with tarfile.open(fileobj=io.BytesIO(helm.chart_archive(PARAMS)), mode="r:gz") as archive:
        names = set(archive.getnames())
    assert {"apparate/Chart.yaml", "apparate/values.yaml", "apparate/templates/daemonset.yaml"} <= names
    values = yaml.safe_load(chart_member(helm.chart_archive(PARAMS), "apparate/values.yaml"))
    assert values["imagePullSecretsCrs"] == {"dockerServer": "registry.example.com:5000", "dockerUsername": "robot",
                                             "dockerPassword": 'p&ss<w>"rd'}
    assert values["image"] == {"repository": "ghcr.io/containerd/stargz-snapshotter", "tag": "0.15.1"}
    assert values["nodeSelector"] == {"cloud.tencent.com/apparate": "true"}
    assert yaml.safe_load(chart_member(helm.chart_archive(PARAMS), "apparate/Chart.yaml"))["appVersion"] == "0.15.1"
    without = yaml.safe_load(chart_member(helm.chart_archive(PARAMS, include_password=False), "apparate/values.yaml"))
    assert without["imagePullSecretsCrs"]["dockerPassword"] == ""


@pytest.fixture(scope="module")
def render(tmp_path_factory):
    """Render the chart archive: `helm template` if installed, else Go's text/template with Helm's functions."""
    work = tmp_path_factory.mktemp("chart")
    with tarfile.open(fileobj=io.BytesIO(helm.chart_archive(PARAMS)), mode="r:gz") as archive:
        archive.extractall(work, filter="data")
    chart = work / "apparate"
    if shutil.which("helm"):
        out = subprocess.run(["helm", "template", "apparate", str(chart), "--namespace", PARAMS.namespace],
                             check=True, capture_output=True, text=True).stdout
    else:
        binary = work / "render"
        subprocess.run(["go", "build", "-o", str(binary), "."], cwd=HERE / "helm_render", check=True,
                       env={"GO111MODULE": "off", "GOCACHE": str(work / "gocache"), "HOME": str(work),
                            "PATH": "/usr/bin:/bin"})
        context = {"Values": yaml.safe_load((chart / "values.yaml").read_text()),
                   "Release": {"Name": "apparate", "Namespace": PARAMS.namespace}}
        out = subprocess.run([str(binary), str(chart / "templates")], input=json.dumps(context), check=True,
                             capture_output=True, text=True).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


@pytest.mark.go
def test_helm_chart_renders_the_same_objects_as_the_one_click_install(render):
    expected = {(o["kind"], o["metadata"]["name"]): o for o in manifests.suite_objects(PARAMS)
                if o["kind"] != "Namespace"}
    rendered = {(o["kind"], o["metadata"]["name"]): o for o in render}
    assert rendered.keys() == expected.keys()
    for key, obj in expected.items():
        assert rendered[key] == obj, key


def test_chart_yaml_is_serialized_so_a_version_cannot_inject_lines():
    # A version that slipped past validation (a row stored before it existed) still stays one value.
    hostile = manifests.SuiteParams(**{**PARAMS.__dict__, "version": '1.0"\nmaintainers: [{name: evil}]\n#'})
    chart = yaml.safe_load(chart_member(helm.chart_archive(hostile), "apparate/Chart.yaml"))
    assert chart == {"apiVersion": "v2", "name": "apparate", "type": "application", "version": "1.0.0",
                     "description": chart["description"], "appVersion": hostile.version}
    values = yaml.safe_load(chart_member(helm.chart_archive(hostile), "apparate/values.yaml"))
    assert values["image"]["tag"] == hostile.version


@pytest.mark.parametrize("version", ["0.15.1", "v2.0.0-rc.1", "latest", "1_2", "A" * 128])
def test_suite_versions_are_image_tags(version):
    validate_image_tag(version)


@pytest.mark.parametrize("version", ["0.15.1\nmaintainers: x", "1.0 evil", ".hidden", "-x", "a:b", "a/b",
                                     "A" * 129, "1.0+build"])
def test_other_suite_versions_are_refused(version):
    with pytest.raises(ValidationError, match="not a valid image tag"):
        validate_image_tag(version)
