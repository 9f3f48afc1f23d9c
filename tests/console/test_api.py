"""API basics: token endpoint, read-only audit API, OpenAPI schema and the offline Swagger UI."""

import io
import re
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from core.models import AuditEntry
from core.roles import Role
from tests.support.users import PASSWORD

pytestmark = pytest.mark.django_db


def test_token_endpoint_gives_a_token_that_authenticates(make_user):
    make_user(Role.VIEWER, "script")
    client = APIClient()
    refused = client.post("/api/v1/auth/token/", {"username": "script", "password": "wrong"}, format="json")
    assert refused.status_code == 400
    response = client.post("/api/v1/auth/token/", {"username": "script", "password": PASSWORD}, format="json")
    assert response.status_code == 200
    key = response.json()["token"]
    assert client.get("/api/v1/audit/").status_code in {401, 403}
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert client.get("/api/v1/audit/").status_code == 200
    # The same token comes back on the next request.
    again = APIClient().post("/api/v1/auth/token/", {"username": "script", "password": PASSWORD}, format="json")
    assert again.json()["token"] == key


def test_audit_api_lists_filters_and_is_read_only(api_as):
    viewer = api_as(Role.VIEWER)
    AuditEntry.objects.all().delete()
    entry = AuditEntry.objects.create(actor_name="alice", source="ui", action="update", app_label="rules",
                                      model="rule", object_id="7", object_repr="releases",
                                      changes={"enabled": {"old": True, "new": False}})
    AuditEntry.objects.create(actor_name="system", source="system", action="create", app_label="auth",
                              model="group", object_id="1", object_repr="ops")
    body = viewer.get("/api/v1/audit/").json()
    assert body["count"] == 2
    assert viewer.get("/api/v1/audit/?source=ui").json()["results"][0]["object_type"] == "rules.rule"
    assert viewer.get("/api/v1/audit/?object_type=auth.group").json()["count"] == 1
    assert viewer.get("/api/v1/audit/?search=releas").json()["count"] == 1
    assert viewer.get("/api/v1/audit/?date_from=nonsense").status_code == 400
    detail = viewer.get(f"/api/v1/audit/{entry.pk}/").json()
    assert detail["changes"] == {"enabled": {"old": True, "new": False}} and detail["actor_name"] == "alice"

    admin = api_as(Role.ADMIN)
    assert viewer.delete(f"/api/v1/audit/{entry.pk}/").status_code == 403
    assert admin.delete(f"/api/v1/audit/{entry.pk}/").status_code == 405
    assert admin.post("/api/v1/audit/", {"actor_name": "forged"}, format="json").status_code == 405
    assert admin.patch(f"/api/v1/audit/{entry.pk}/", {"actor_name": "x"}, format="json").status_code == 405
    entry.refresh_from_db()
    assert entry.actor_name == "alice" and AuditEntry.objects.filter(actor_name="forged").count() == 0


def test_schema_generates_valid_openapi_with_console_endpoints(api_as):
    out = io.StringIO()
    call_command("spectacular", "--validate", "--fail-on-warn", "--format", "openapi-json", stdout=out)
    schema = api_as(Role.VIEWER).get("/api/v1/schema/?format=json").json()
    assert schema["openapi"].startswith("3.")
    assert {"/api/v1/audit/", "/api/v1/audit/{id}/", "/api/v1/auth/token/"} <= set(schema["paths"])
    token = schema["paths"]["/api/v1/auth/token/"]["post"]
    assert token["summary"] == "Obtain an API token" and "Authorization: Token" in token["description"]
    assert "tokenAuth" in schema["components"]["securitySchemes"]


def test_schema_and_docs_need_authentication():
    client = APIClient()
    assert client.get("/api/v1/schema/").status_code in {401, 403}
    assert client.get("/api/v1/docs/").status_code in {401, 403}


def test_schema_and_docs_need_a_role_not_just_a_login(api_as, client_as):
    """A user without a group can log in, but reads nothing: not the schema and its docs either."""
    nobody = api_as(Role.NONE)
    assert nobody.get("/api/v1/schema/").status_code == 403
    assert nobody.get("/api/v1/docs/").status_code == 403
    assert nobody.get("/api/v1/docs/?script").status_code == 403
    viewer = api_as(Role.VIEWER)
    assert viewer.get("/api/v1/schema/").status_code == 200
    assert viewer.get("/api/v1/docs/?script").status_code == 200


def test_swagger_ui_is_offline_and_its_assets_are_served(client_as):
    client = client_as(Role.VIEWER)
    response = client.get("/api/v1/docs/")
    assert response.status_code == 200
    page = response.content.decode()
    urls = re.findall(r'(?:src|href)="([^"]+)"', page) + re.findall(r'"(/static/[^"]+)"', page)
    assert urls, page
    assert not [url for url in urls if re.match(r"(https?:)?//", url)], urls
    assets = {url for url in urls if url.startswith("/static/")}
    assert any("swagger-ui-bundle" in url for url in assets)
    for url in assets:
        asset = client.get(url)
        assert asset.status_code == 200, url
    # No inline script or style (the CSP forbids them): Swagger UI's settings come as a script file.
    assert "<style" not in page and not re.search(r"<script>|<script [^>]*>[^<]", page)
    script = client.get("/api/v1/docs/?script").content.decode()
    assert '"/api/v1/schema/"' in script
    assert not re.search(r"https?://(?!127\.0\.0\.1|localhost|testserver)", page.replace("http://www.w3.org", ""))


def test_swagger_ui_does_not_call_the_public_validator(client_as):
    script = client_as(Role.VIEWER).get("/api/v1/docs/?script").content.decode()
    assert '"validatorUrl": null' in script


def test_api_root_lists_every_app_endpoint(api_as):
    root = api_as(Role.VIEWER).get("/api/v1/")
    assert root.status_code == 200
    listed = root.json()
    for name in ("instances", "events", "images", "rules", "jobs", "clusters", "nodes", "label-jobs", "suites",
                 "deploys", "audit"):
        assert listed[name].endswith(f"/api/v1/{name}/"), name
    assert APIClient().get("/api/v1/").status_code in {401, 403}


# --- Token lifetime and revocation (issue 11 #5) ----------------------------------------------------

def aged(key: str, days: float) -> None:
    from rest_framework.authtoken.models import Token
    Token.objects.filter(key=key).update(created=timezone.now() - timedelta(days=days))


def test_tokens_expire_after_thirty_days_and_a_new_one_is_issued(make_user, settings):
    assert settings.APPARATE_TOKEN_LIFETIME_DAYS == 30
    make_user(Role.VIEWER, "script")
    key = APIClient().post("/api/v1/auth/token/", {"username": "script", "password": PASSWORD}).json()["token"]
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")

    aged(key, 30 - 1 / 1440)  # a minute before the end: still valid
    assert client.get("/api/v1/audit/").status_code == 200
    aged(key, 30)
    expired = client.get("/api/v1/audit/")
    assert expired.status_code == 401
    assert expired["WWW-Authenticate"] == "Token"
    assert expired.json() == {"detail": "The token has expired; get a new one from POST /api/v1/auth/token/."}

    fresh = APIClient().post("/api/v1/auth/token/", {"username": "script", "password": PASSWORD}).json()["token"]
    assert fresh != key
    client.credentials(HTTP_AUTHORIZATION=f"Token {fresh}")
    assert client.get("/api/v1/audit/").status_code == 200


def test_a_password_change_revokes_the_users_tokens(make_user, client_as):
    from django.contrib.auth.models import User
    from rest_framework.authtoken.models import Token

    user = make_user(Role.VIEWER, "script")
    key = APIClient().post("/api/v1/auth/token/", {"username": "script", "password": PASSWORD}).json()["token"]
    admin = Client()
    admin.force_login(User.objects.create_superuser("boss", password="x-long-passphrase-1"))
    changed = admin.post(f"/admin/auth/user/{user.pk}/password/", {"password1": "a-new-passphrase-42",
                                                                   "password2": "a-new-passphrase-42"})
    assert changed.status_code == 302
    assert not Token.objects.filter(key=key).exists()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert client.get("/api/v1/audit/").status_code == 401


def test_saving_a_user_without_a_new_password_keeps_the_tokens(make_user, settings):
    """A profile edit and Django's own hash upgrade at login (same password) are not password changes."""
    from django.contrib.auth.hashers import make_password
    from django.contrib.auth.models import User
    from rest_framework.authtoken.models import Token

    user = make_user(Role.VIEWER, "script")
    key = APIClient().post("/api/v1/auth/token/", {"username": "script", "password": PASSWORD}).json()["token"]
    user.first_name = "Scripty"
    user.save()
    settings.PASSWORD_HASHERS = [*settings.PASSWORD_HASHERS, "django.contrib.auth.hashers.MD5PasswordHasher"]
    User.objects.filter(pk=user.pk).update(password=make_password(PASSWORD, hasher="md5"))
    user.refresh_from_db()
    assert user.check_password(PASSWORD)  # upgraded to the preferred hasher and saved
    user.refresh_from_db()
    assert not user.password.startswith("md5$")
    assert Token.objects.filter(key=key).exists()


# --- Missing or wrong credentials, and the API access page (issue 9) ----------------------------

@pytest.mark.parametrize("path", ["/api/v1/", "/api/v1/instances/", "/api/v1/audit/"])
@pytest.mark.parametrize(
    ("authorization", "detail"),
    [
        (None, "Authentication credentials were not provided."),
        ("Token 0123456789abcdef0123456789abcdef01234567", "Invalid token."),
        ("Token", "Invalid token header. No credentials provided."),
    ],
)
def test_missing_or_wrong_token_answers_401_with_www_authenticate(path, authorization, detail):
    client = APIClient()
    if authorization:
        client.credentials(HTTP_AUTHORIZATION=authorization)
    response = client.get(path)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"
    assert response.json() == {"detail": detail}


def test_api_access_page_shows_a_new_token_once_and_audits_it(client_as):
    from rest_framework.authtoken.models import Token

    web = client_as(Role.VIEWER)
    page = web.get("/account/api/").content.decode()
    assert "You have no API token yet." in page and 'href="/api/v1/docs/"' in page
    unconfirmed = web.post("/account/api/", {})
    assert unconfirmed.status_code == 302 and not Token.objects.exists()

    created = web.post("/account/api/", {"confirm": "true"}).content.decode()
    first = Token.objects.get()
    assert f'<pre id="api-token-value" class="token-value">{first.key}</pre>' in created
    again = web.get("/account/api/").content.decode()
    assert first.key not in again and "Regenerate token" in again and "Expires" in again

    regenerated = web.post("/account/api/", {"confirm": "true"}).content.decode()
    second = Token.objects.get()
    assert second.key != first.key and second.key in regenerated and first.key not in regenerated
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {first.key}")
    assert client.get("/api/v1/audit/").status_code == 401
    client.credentials(HTTP_AUTHORIZATION=f"Token {second.key}")
    assert client.get("/api/v1/audit/").status_code == 200
    entries = AuditEntry.objects.filter(object_repr="API token of web-viewer").order_by("id")
    assert [entry.action for entry in entries] == ["create", "delete", "create"]
    assert all(first.key not in str(entry.changes) and second.key not in str(entry.changes) for entry in entries)


def test_help_pages_render_the_readme_sections(client_as):
    web = client_as(Role.VIEWER)
    first = web.get("/help/")
    assert first.status_code == 200 and "Overview" in first.content.decode()
    rules = web.get("/help/rules/").content.decode()
    assert '<h1>Rules</h1>' in rules and "<table>" in rules and 'href="/help/rest-api/"' in rules
    assert web.get("/help/no-such-section/").status_code == 404
    # The README's #links lead to the page holding the heading, whose id is that anchor.
    assert 'id="convert-existing-images-backfill"' in rules
    assert 'href="/help/conversion-pipeline/#operations"' in rules
    instances = web.get("/help/registry-instances-and-webhooks/").content.decode()
    assert 'href="/help/rules/#convert-existing-images-backfill"' in instances
    assert 'href="/help/conversion-pipeline/#reconciler"' in instances
    assert 'href="#reconciler"' not in instances and 'href="#convert-existing-images-backfill"' not in instances
    overview = web.get("/help/").content.decode()
    assert 'href="/help/clusters/"' in overview and 'href="/help/rest-api/"' in overview
    menu = web.get("/").content.decode()
    assert 'href="/help/"' in menu and 'href="/api/v1/docs/"' in menu and 'href="/account/api/"' in menu
