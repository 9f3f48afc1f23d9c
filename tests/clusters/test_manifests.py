"""Generated manifests validate against the Kubernetes schemas; the Helm chart renders the same objects."""

import base64
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
    password='p&ss<w>"rd', insecure_registry=True, image="registry.example.com:5000/apparate/agent",
    version="1.0.0", label_key="cloud.tencent.com/apparate", label_value="true",
)
CA = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\n-----END CERTIFICATE-----\n"
# An https registry with a private CA, anonymous.
TLS_PARAMS = manifests.SuiteParams(**{**PARAMS.__dict__, "insecure_registry": False, "registry_ca": CA,
                                      "username": "", "password": ""})
SCHEMA_VERSION = "1.33.0"


def all_generated() -> list[dict]:
    return [
        *manifests.suite_objects(PARAMS),
        *manifests.uninstall_hook_objects(PARAMS, 240),
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


def test_the_daemonset_runs_the_agent_on_labelled_nodes_with_the_host_and_its_config():
    ds = manifests.daemonset(PARAMS)
    pod = ds["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["nodeSelector"] == {"cloud.tencent.com/apparate": "true"}
    assert (pod["hostPID"], container["securityContext"]) == (True, {"privileged": True})
    assert pod["serviceAccountName"] == "apparate-agent"
    assert pod["terminationGracePeriodSeconds"] == 180  # a containerd restart (up to 60 s) and the cleanup fit
    assert (container["image"], container["args"]) == ("registry.example.com:5000/apparate/agent:1.0.0", ["run"])
    assert "command" not in container  # the image's entrypoint: python -m agent
    assert container["readinessProbe"]["exec"]["command"] == ["python", "-m", "agent", "status"]
    assert container["resources"] == {"requests": {"cpu": "20m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}}
    assert [v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v] == ["/"]
    assert {m["name"]: m["mountPath"] for m in container["volumeMounts"]} == {
        "host": "/host", "config": "/etc/apparate/agent"}
    sources = next(v for v in pod["volumes"] if v["name"] == "config")["projected"]["sources"]
    assert sources == [
        {"configMap": {"name": "apparate-agent-config", "items": [{"key": "agent.json", "path": "agent.json"}]}},
        {"secret": {"name": "apparate-registry-credentials",
                    "items": [{"key": ".dockerconfigjson", "path": "dockerconfig.json"}]}}]
    env = {e["name"]: e.get("value") or e["valueFrom"]["fieldRef"]["fieldPath"] for e in container["env"]}
    assert env == {
        "APPARATE_HOST_ROOT": "/host", "APPARATE_AGENT_CONFIG_DIR": "/etc/apparate/agent",
        "APPARATE_AGENT_CONFIGMAP": "apparate-agent-config", "APPARATE_NODE_LABEL": "cloud.tencent.com/apparate=true",
        "APPARATE_NODE_NAME": "spec.nodeName", "APPARATE_POD_NAME": "metadata.name",
        "APPARATE_NAMESPACE": "metadata.namespace",
        "APPARATE_AGENT_REVISION": "metadata.annotations['apparate.io/config-hash']"}
    revision = ds["spec"]["template"]["metadata"]["annotations"]["apparate.io/config-hash"]
    assert revision == manifests.config_hash(PARAMS)
    # new credentials, configuration or image: a new revision, which rolls the agent pods
    for change in ({"password": "new"}, {"insecure_registry": False}, {"version": "1.0.1"}):
        assert manifests.config_hash(manifests.SuiteParams(**{**PARAMS.__dict__, **change})) != revision, change


def test_the_agent_may_read_and_annotate_nodes_and_read_its_config_map_only():
    rbac = {o["kind"]: o for o in manifests.suite_objects(PARAMS)
            if o["apiVersion"].startswith("rbac.authorization.k8s.io")}
    assert rbac["ClusterRole"]["rules"] == [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "patch"]}]
    assert rbac["Role"]["rules"] == [{"apiGroups": [""], "resources": ["configmaps"],
                                      "resourceNames": ["apparate-agent-config"], "verbs": ["get"]}]
    assert rbac["Role"]["metadata"]["namespace"] == "apparate-system"
    for binding, role in (("ClusterRoleBinding", "ClusterRole"), ("RoleBinding", "Role")):
        assert rbac[binding]["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": role,
                                            "name": "apparate-agent"}
        assert rbac[binding]["subjects"] == [{"kind": "ServiceAccount", "name": "apparate-agent",
                                              "namespace": "apparate-system"}]


def test_agent_json_and_the_pull_secret_come_from_the_instance():
    config = {o["kind"]: o for o in manifests.suite_objects(PARAMS)}["ConfigMap"]
    assert set(config["data"]) == {"agent.json"}  # no `mode`: the agents install
    assert json.loads(config["data"]["agent.json"]) == {
        "no_background_fetch": False, "registries": [{"url": "http://registry.example.com:5000"}]}
    assert json.loads(manifests.agent_json(TLS_PARAMS)) == {
        "no_background_fetch": False, "registries": [{"ca": CA, "url": "https://registry.example.com:5000"}]}
    # The agent reads what the console writes.
    from agent.inputs import Registry, parse_registry
    entry = json.loads(manifests.agent_json(TLS_PARAMS))["registries"][0]
    assert parse_registry(entry, "agent.json") == Registry("registry.example.com:5000", "https", CA)
    secret = {o["kind"]: o for o in manifests.suite_objects(PARAMS)}["Secret"]
    auths = json.loads(base64.b64decode(secret["data"][".dockerconfigjson"]))["auths"]
    assert auths == {"registry.example.com:5000": {"username": "robot", "password": 'p&ss<w>"rd',
                                                   "auth": base64.b64encode(b'robot:p&ss<w>"rd').decode()}}
    anonymous = manifests.pull_secret("apparate-system", "registry.example.com:5000", "", "")
    assert base64.b64decode(anonymous["data"][".dockerconfigjson"]) == b'{"auths":{}}'


def chart_member(archive_bytes: bytes, name: str) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(archive_bytes), mode="r:gz") as archive:
        return archive.extractfile(name).read()


def test_chart_archive_holds_values_with_registry_credentials():
    with tarfile.open(fileobj=io.BytesIO(helm.chart_archive(PARAMS)), mode="r:gz") as archive:
        names = set(archive.getnames())
    assert {"apparate/Chart.yaml", "apparate/values.yaml", "apparate/templates/daemonset.yaml",
            "apparate/templates/uninstall-hook.yaml"} <= names
    values = yaml.safe_load(chart_member(helm.chart_archive(PARAMS), "apparate/values.yaml"))
    assert values["imagePullSecretsCrs"] == {"dockerServer": "registry.example.com:5000", "dockerUsername": "robot",
                                             "dockerPassword": 'p&ss<w>"rd'}
    assert values["image"] == {"repository": "registry.example.com:5000/apparate/agent", "tag": "1.0.0"}
    assert values["nodeLabel"] == {"key": "cloud.tencent.com/apparate", "value": "true"}
    assert (values["registryInsecure"], values["registryCA"], values["uninstallTimeoutSeconds"]) == (True, "", 240)
    assert yaml.safe_load(chart_member(helm.chart_archive(PARAMS), "apparate/Chart.yaml"))["appVersion"] == "1.0.0"
    without = yaml.safe_load(chart_member(helm.chart_archive(PARAMS, include_password=False), "apparate/values.yaml"))
    assert without["imagePullSecretsCrs"]["dockerPassword"] == ""


def render_chart(work: Path, params: manifests.SuiteParams) -> list[dict]:
    """Render the chart archive: `helm template` if installed, else Go's text/template with Helm's functions."""
    with tarfile.open(fileobj=io.BytesIO(helm.chart_archive(params)), mode="r:gz") as archive:
        archive.extractall(work, filter="data")
    chart = work / "apparate"
    if shutil.which("helm"):
        out = subprocess.run(["helm", "template", "apparate", str(chart), "--namespace", params.namespace],
                             check=True, capture_output=True, text=True).stdout
    else:
        binary = work / "render"
        subprocess.run(["go", "build", "-o", str(binary), "."], cwd=HERE / "helm_render", check=True,
                       env={"GO111MODULE": "off", "GOCACHE": str(work / "gocache"), "HOME": str(work),
                            "PATH": "/usr/bin:/bin"})
        context = {"Values": yaml.safe_load((chart / "values.yaml").read_text()),
                   "Release": {"Name": "apparate", "Namespace": params.namespace}}
        out = subprocess.run([str(binary), str(chart / "templates")], input=json.dumps(context), check=True,
                             capture_output=True, text=True).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def by_identity(objects) -> dict:
    return {(o["kind"], o["metadata"]["name"]): o for o in objects}


@pytest.mark.go
@pytest.mark.parametrize("params", [PARAMS, TLS_PARAMS], ids=["http-with-credentials", "https-with-ca-anonymous"])
def test_helm_chart_renders_the_same_objects_as_the_one_click_install(params, tmp_path):
    rendered = render_chart(tmp_path, params)
    hooks = [o for o in rendered if "helm.sh/hook" in (o["metadata"].get("annotations") or {})]
    installed = [o for o in rendered if o not in hooks]
    expected = by_identity(o for o in manifests.suite_objects(params) if o["kind"] != "Namespace")
    assert by_identity(installed).keys() == expected.keys()
    for key, obj in expected.items():
        assert by_identity(installed)[key] == obj, key
    # The pre-delete hook: the agent image asks the agents to clean up and waits for them.
    assert by_identity(hooks) == by_identity(manifests.uninstall_hook_objects(params, helm.UNINSTALL_HOOK_TIMEOUT))
    for obj in rendered:
        kubernetes_validate.validate(obj, SCHEMA_VERSION, strict=True)


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
