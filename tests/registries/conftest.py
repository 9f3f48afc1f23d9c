"""Fixtures for the registries tests: instances, rules and webhook payload builders."""

import hashlib
import json
import uuid

import pytest

from registries.models import Instance
from rules.models import Rule

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DISTRIBUTION_TYPE = "application/vnd.docker.distribution.events.v1+json"


def digest_of(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def manifest_event(repository: str, tag: str | None = "1.0", digest: str | None = None, *,
                   media_type: str = OCI_MANIFEST, event_id: str | None = None, action: str = "push") -> dict:
    """One Distribution notification event for a manifest push."""
    digest = digest or digest_of(f"{repository}:{tag}")
    target = {
        "mediaType": media_type, "size": 512, "digest": digest, "length": 512, "repository": repository,
        "url": f"http://evil.invalid/v2/{repository}/manifests/{digest}",
    }
    if tag:
        target["tag"] = tag
    return {
        "id": event_id or str(uuid.uuid4()), "timestamp": "2026-01-01T00:00:00Z", "action": action,
        "target": target, "request": {"id": "r1", "addr": "127.0.0.1", "host": "registry", "method": "PUT",
                                      "useragent": "skopeo"},
        "actor": {"name": "ci-bot"}, "source": {"addr": "registry:5000", "instanceID": "x"},
    }


def blob_event(repository: str) -> dict:
    digest = digest_of(f"blob {repository}")
    return {
        "id": str(uuid.uuid4()), "action": "push",
        "target": {"mediaType": "application/octet-stream", "digest": digest, "size": 3, "length": 3,
                   "repository": repository, "url": f"http://registry/v2/{repository}/blobs/{digest}"},
    }


def envelope(*events: dict) -> bytes:
    return json.dumps({"events": list(events)}).encode()


def harbor_push(namespace: str, repository: str, tag: str | None = "1.0", digest: str | None = None,
                occur_at: int = 1_700_000_000) -> bytes:
    resource = {"digest": digest or digest_of(f"{namespace}/{repository}:{tag}"),
                "resource_url": f"harbor.evil.invalid/{namespace}/{repository}:{tag}"}
    if tag:
        resource["tag"] = tag
    return json.dumps({
        "type": "PUSH_ARTIFACT", "occur_at": occur_at, "operator": "admin",
        "event_data": {
            "resources": [resource],
            "repository": {"date_created": 1_690_000_000, "name": repository, "namespace": namespace,
                           "repo_full_name": f"{namespace}/{repository}", "repo_type": "private"},
        },
    }).encode()


@pytest.fixture
def instance(db) -> Instance:
    return Instance.objects.create(name="main", url="http://registry.example:5000", acceleration_enabled=True)


@pytest.fixture
def make_rule(db):
    def factory(instance: Instance, name: str = "team apps", **fields) -> Rule:
        fields.setdefault("namespace", "team")
        return Rule.objects.create(instance=instance, name=name, **fields)

    return factory


@pytest.fixture
def post_webhook(client):
    """post_webhook(instance, body, secret=None) → response (the instance's secret by default)."""

    def send(instance: Instance, body: bytes, secret: str | None = None, **headers):
        authorization = instance.webhook_secret if secret is None else secret
        if authorization:
            headers.setdefault("HTTP_AUTHORIZATION", authorization)
        return client.post(f"/webhooks/registry/{instance.pk}/", data=body, content_type=DISTRIBUTION_TYPE,
                           **headers)

    return send
