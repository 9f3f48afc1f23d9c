"""The Kubernetes emulator refuses what kube-apiserver refuses, with the same Status bodies.

Spoken to over plain HTTP (requests), so these tests pin the emulator itself, not the console's
client. The expected bodies follow kube-apiserver's generic store and its update validation.
"""

import pytest
import requests

WEB = {"apiVersion": "apps/v1", "kind": "Deployment",
       "metadata": {"name": "web", "namespace": "default", "labels": {"app.kubernetes.io/name": "web"}},
       "spec": {"replicas": 1, "selector": {"matchLabels": {"app.kubernetes.io/name": "web"}},
                "template": {"metadata": {"labels": {"app.kubernetes.io/name": "web"}},
                             "spec": {"containers": [{"name": "web", "image": "nginx:1.25"}]}}}}
DEPLOYMENTS = "/apis/apps/v1/namespaces/default/deployments"
SECRETS = "/api/v1/namespaces/default/secrets"


class Api:
    def __init__(self, emulator):
        self.url, self.session = emulator.url, requests.Session()
        self.session.headers["Authorization"] = f"Bearer {emulator.token}"

    def call(self, method: str, path: str, body=None, content_type: str = "application/json"):
        response = self.session.request(method, self.url + path, json=body, headers={"Content-Type": content_type})
        return response.status_code, response.json()


@pytest.fixture
def api(kube_emulator) -> Api:
    return Api(kube_emulator)


def status(code: int, reason: str, message: str, details: dict) -> dict:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "details": details, "code": code}


def test_replace_without_resource_version_is_invalid(api, kube_emulator):
    assert api.call("POST", DEPLOYMENTS, WEB)[0] == 201
    stored_before = kube_emulator.get_object("deployments", "web", "default")
    changed = {**WEB, "spec": {**WEB["spec"], "replicas": 5}}
    assert api.call("PUT", f"{DEPLOYMENTS}/web", changed) == (422, status(
        422, "Invalid", 'deployments.apps "web" is invalid: metadata.resourceVersion: Invalid value: 0x0: '
        "must be specified for an update",
        {"name": "web", "kind": "deployments", "group": "apps", "causes": [
            {"reason": "FieldValueInvalid", "message": "Invalid value: 0x0: must be specified for an update",
             "field": "metadata.resourceVersion"}]}))
    assert kube_emulator.get_object("deployments", "web", "default") == stored_before


def test_replace_with_a_stale_resource_version_conflicts(api, kube_emulator):
    created = api.call("POST", DEPLOYMENTS, WEB)[1]
    stale = created["metadata"]["resourceVersion"]
    kube_emulator.patch("deployments", "default", "web", {"metadata": {"annotations": {"someone": "else"}}})
    body = {**WEB, "metadata": {**WEB["metadata"], "resourceVersion": stale}}
    assert api.call("PUT", f"{DEPLOYMENTS}/web", body) == (409, status(
        409, "Conflict", 'Operation cannot be fulfilled on deployments.apps "web": the object has been modified; '
        "please apply your changes to the latest version and try again",
        {"name": "web", "kind": "deployments", "group": "apps"}))
    fresh = kube_emulator.get_object("deployments", "web", "default")["metadata"]["resourceVersion"]
    body["metadata"]["resourceVersion"] = fresh
    code, replaced = api.call("PUT", f"{DEPLOYMENTS}/web", body)
    assert code == 200 and replaced["metadata"]["resourceVersion"] != fresh


def test_a_deployment_selector_is_immutable_on_replace_and_patch(api, kube_emulator):
    created = api.call("POST", DEPLOYMENTS, WEB)[1]
    selector = {"matchLabels": {"app.kubernetes.io/name": "attacker"}}
    body = {**WEB, "metadata": {**WEB["metadata"], "resourceVersion": created["metadata"]["resourceVersion"]},
            "spec": {**WEB["spec"], "selector": selector}}
    cause = {"reason": "FieldValueInvalid", "field": "spec.selector",
             "message": 'Invalid value: {"matchLabels":{"app.kubernetes.io/name":"attacker"}}: field is immutable'}
    expected = (422, status(422, "Invalid", f'Deployment.apps "web" is invalid: spec.selector: {cause["message"]}',
                            {"name": "web", "kind": "Deployment", "group": "apps", "causes": [cause]}))
    assert api.call("PUT", f"{DEPLOYMENTS}/web", body) == expected
    assert api.call("PATCH", f"{DEPLOYMENTS}/web", {"spec": {"selector": selector}},
                    "application/merge-patch+json") == expected
    assert kube_emulator.get_object("deployments", "web", "default")["spec"]["selector"] == WEB["spec"]["selector"]


def test_a_secret_type_is_immutable(api, kube_emulator):
    secret = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
              "metadata": {"name": "creds", "namespace": "default"}, "data": {"a": "Yg=="}}
    created = api.call("POST", SECRETS, secret)[1]
    body = {**secret, "type": "kubernetes.io/dockerconfigjson",
            "metadata": {**secret["metadata"], "resourceVersion": created["metadata"]["resourceVersion"]}}
    code, answer = api.call("PUT", f"{SECRETS}/creds", body)
    assert code == 422 and answer["reason"] == "Invalid"
    assert answer["message"] == 'Secret "creds" is invalid: type: Invalid value: "kubernetes.io/dockerconfigjson": ' \
                                "field is immutable"
    assert answer["details"] == {"name": "creds", "kind": "Secret", "causes": [
        {"reason": "FieldValueInvalid", "field": "type",
         "message": 'Invalid value: "kubernetes.io/dockerconfigjson": field is immutable'}]}
    assert kube_emulator.get_object("secrets", "creds", "default")["type"] == "Opaque"


def test_creating_in_a_missing_namespace_is_not_found_and_a_second_create_already_exists(api, kube_emulator):
    assert api.call("POST", "/apis/apps/v1/namespaces/missing/deployments",
                    {**WEB, "metadata": {"name": "web"}}) == (404, status(
                        404, "NotFound", 'namespaces "missing" not found', {"name": "missing", "kind": "namespaces"}))
    assert kube_emulator.names("deployments") == []
    assert api.call("POST", DEPLOYMENTS, WEB)[0] == 201
    assert api.call("POST", DEPLOYMENTS, WEB) == (409, status(
        409, "AlreadyExists", 'deployments.apps "web" already exists',
        {"name": "web", "kind": "deployments", "group": "apps"}))
    assert api.call("GET", f"{SECRETS}/nope") == (404, status(
        404, "NotFound", 'secrets "nope" not found', {"name": "nope", "kind": "secrets"}))
