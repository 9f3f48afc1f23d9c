"""The test registry fixture and image builder work together with skopeo."""

import json
import subprocess

import pytest
import requests

from tests.support.images import Platform, push_image

pytestmark = pytest.mark.registry


def test_pushed_multi_platform_image_is_listed_by_skopeo(registry, tmp_path):
    digest = push_image(
        tmp_path, f"{registry.host}/team/app:1.0",
        [Platform(architecture="amd64"), Platform(architecture="arm64")],
    )
    out = subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{registry.host}/team/app:1.0"],
        check=True, capture_output=True, text=True,
    ).stdout
    index = json.loads(out)
    assert [m["platform"]["architecture"] for m in index["manifests"]] == ["amd64", "arm64"]
    head = requests.head(
        f"{registry.url}/v2/team/app/manifests/1.0",
        headers={"Accept": index["mediaType"]}, timeout=5,
    )
    assert head.headers["Docker-Content-Digest"] == digest


def test_htpasswd_registry_refuses_anonymous_and_accepts_credentials(registry_factory, tmp_path):
    secured = registry_factory(htpasswd=("alice", "s3cret-pass"))
    assert requests.get(f"{secured.url}/v2/", timeout=5).status_code == 401
    assert requests.get(f"{secured.url}/v2/", auth=("alice", "s3cret-pass"), timeout=5).status_code == 200
    push_image(tmp_path, f"{secured.host}/team/app:1", credentials=("alice", "s3cret-pass"))
    tags = requests.get(f"{secured.url}/v2/team/app/tags/list", auth=("alice", "s3cret-pass"), timeout=5)
    assert tags.json()["tags"] == ["1"]
