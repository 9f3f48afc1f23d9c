"""Request bodies are bounded before anything parses them (issue 11 #7): 413, JSON for the API."""

import json

import pytest
from django.conf import settings
from django.test import Client
from rest_framework.test import APIClient

from core.roles import Role
from registries.models import Instance

LIMIT = 1 << 20


def test_the_limit_is_one_mebibyte_for_pages_and_api():
    assert settings.APPARATE_REQUEST_MAX_BYTES == LIMIT
    assert settings.DATA_UPLOAD_MAX_MEMORY_SIZE == LIMIT


def padded_credentials(size: int) -> bytes:
    """A token request of exactly `size` bytes: wrong credentials padded with a long field."""
    body = json.dumps({"username": "nobody", "password": "wrong", "pad": ""}).encode()
    return body.replace(b'"pad": ""', b'"pad": "' + b"x" * (size - len(body)) + b'"')


@pytest.mark.django_db
def test_anonymous_token_endpoint_refuses_a_body_over_the_limit_before_parsing():
    client = APIClient()
    at_limit = client.post("/api/v1/auth/token/", padded_credentials(LIMIT), content_type="application/json")
    assert at_limit.status_code == 400  # parsed, and the credentials are refused
    assert "Unable to log in" in at_limit.content.decode()

    over = client.post("/api/v1/auth/token/", padded_credentials(LIMIT + 1), content_type="application/json")
    assert over.status_code == 413
    assert over["Content-Type"] == "application/json"
    assert over.json() == {"detail": f"The request body is {LIMIT + 1} bytes; the largest accepted is {LIMIT} bytes."}

    # The review's 64 MiB body, declared in the header: refused on the header alone.
    huge = client.generic("POST", "/api/v1/auth/token/", b"{}", content_type="application/json",
                          CONTENT_LENGTH=str(64 << 20))
    assert huge.status_code == 413


def test_a_three_mebibyte_instance_is_refused_and_not_created(api_as):
    api = api_as(Role.ADMIN)
    payload = {"name": "big", "url": "https://big.example", "description": "x" * (3 << 20)}
    response = api.post("/api/v1/instances/", payload, format="json")
    assert response.status_code == 413
    assert "the largest accepted is 1048576 bytes" in response.json()["detail"]
    assert not Instance.objects.exists()


def test_a_form_post_over_the_limit_gets_a_page_not_a_parse(client_as):
    web = client_as(Role.ADMIN)
    response = web.post("/instances/new/", {"name": "big", "url": "https://big.example",
                                            "description": "x" * (LIMIT + 10)})
    assert response.status_code == 413
    page = response.content.decode()
    assert "<html" in page and "Request too large" in page and "the largest accepted is 1048576 bytes" in page
    assert not Instance.objects.exists()


@pytest.mark.django_db
def test_login_form_over_the_limit_is_refused():
    response = Client().post("/login/", {"username": "a", "password": "b" * (LIMIT + 1)})
    assert response.status_code == 413


@pytest.mark.django_db
def test_webhooks_keep_their_own_limit_and_check_the_secret_first():
    instance = Instance.objects.create(name="r", url="http://registry.example")
    body = b" " * (LIMIT + 10)
    unauthenticated = Client().post(f"/webhooks/registry/{instance.pk}/", body, content_type="application/json")
    assert unauthenticated.status_code == 401
    authenticated = Client().post(f"/webhooks/registry/{instance.pk}/", body, content_type="application/json",
                                  HTTP_AUTHORIZATION=instance.webhook_secret)
    assert authenticated.status_code == 413
    assert authenticated.json() == {"error": f"The body is larger than {settings.APPARATE_WEBHOOK_MAX_BYTES} bytes."}
