"""Local secrets file, EncryptedTextField (at rest, rotation, wrong key) and bootstrap_admin."""

import io
import json
import os
import re
import stat
import subprocess
import sys

import pytest
from cryptography.fernet import Fernet
from django.contrib.auth import authenticate
from django.contrib.auth.models import User
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.db import connection

from console.local_secrets import load_or_create_local_secrets
from core.roles import Role, role_of
from registries.models import Instance


def test_local_secrets_created_once_private_and_reused(tmp_path):
    path = tmp_path / "var" / "local-secrets.json"
    first = load_or_create_local_secrets(path)
    assert set(first) == {"SECRET_KEY", "FIELD_ENCRYPTION_KEY"}
    assert len(first["SECRET_KEY"]) >= 50
    Fernet(first["FIELD_ENCRYPTION_KEY"].encode())  # a usable key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    content = path.read_bytes()
    assert load_or_create_local_secrets(path) == first
    assert path.read_bytes() == content


def stored_password(instance) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT password FROM registries_instance WHERE id = %s", [instance.pk])
        return cursor.fetchone()[0]


@pytest.mark.django_db
def test_encrypted_field_stores_ciphertext_and_returns_plaintext(settings):
    key = Fernet.generate_key().decode()
    settings.FIELD_ENCRYPTION_KEYS = [key]
    instance = Instance.objects.create(name="hub", url="https://registry.example", password="hunter2-secret")
    raw = stored_password(instance)
    assert "hunter2-secret" not in raw
    assert Fernet(key.encode()).decrypt(raw.encode()) == b"hunter2-secret"
    assert Instance.objects.get(pk=instance.pk).password == "hunter2-secret"
    blank = Instance.objects.create(name="anon", url="https://other.example")
    assert stored_password(blank) == "" and Instance.objects.get(pk=blank.pk).password == ""


@pytest.mark.django_db
def test_key_rotation_with_comma_separated_keys(settings):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.FIELD_ENCRYPTION_KEYS = [old]
    instance = Instance.objects.create(name="hub", url="https://registry.example", password="rotate-me")

    settings.FIELD_ENCRYPTION_KEYS = [new, old]  # new key first: encrypts; old still decrypts
    assert Instance.objects.get(pk=instance.pk).password == "rotate-me"
    out = io.StringIO()
    call_command("reencrypt_secrets", stdout=out)
    assert "Re-encrypted" in out.getvalue()
    Fernet(new.encode()).decrypt(stored_password(instance).encode())

    settings.FIELD_ENCRYPTION_KEYS = [new]  # old key dropped
    assert Instance.objects.get(pk=instance.pk).password == "rotate-me"


@pytest.mark.django_db
def test_wrong_or_invalid_key_is_a_clear_configuration_error(settings):
    settings.FIELD_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    instance = Instance.objects.create(name="hub", url="https://registry.example", password="secret")
    settings.FIELD_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    with pytest.raises(ImproperlyConfigured, match="cannot be decrypted with FIELD_ENCRYPTION_KEY"):
        Instance.objects.get(pk=instance.pk)
    settings.FIELD_ENCRYPTION_KEYS = ["not-a-key"]
    with pytest.raises(ImproperlyConfigured, match="not a valid Fernet key"):
        Instance.objects.get(pk=instance.pk)
    settings.FIELD_ENCRYPTION_KEYS = []
    with pytest.raises(ImproperlyConfigured, match="FIELD_ENCRYPTION_KEY is empty"):
        Instance.objects.get(pk=instance.pk)


@pytest.mark.django_db
def test_bootstrap_admin_creates_once_and_prints_the_password_once():
    out = io.StringIO()
    call_command("bootstrap_admin", stdout=out)
    password = re.search(r"with password: (\S+)", out.getvalue()).group(1)
    admin = User.objects.get(username="admin")
    assert admin.is_superuser and role_of(admin) is Role.ADMIN
    assert authenticate(username="admin", password=password) == admin

    again = io.StringIO()
    call_command("bootstrap_admin", stdout=again)
    assert password not in again.getvalue() and "password:" not in again.getvalue()
    assert User.objects.count() == 1
    assert authenticate(username="admin", password=password) == admin


def _settings_in_subprocess(tmp_path, **env) -> dict:
    """Import console.settings in a fresh interpreter with the given environment; return some values."""
    code = (
        "import json, console.settings as s; print(json.dumps({'secret': s.SECRET_KEY, "
        "'keys': s.FIELD_ENCRYPTION_KEYS, 'proxy': getattr(s, 'SECURE_PROXY_SSL_HEADER', None), "
        "'forwarded_host': getattr(s, 'USE_X_FORWARDED_HOST', False)}))"
    )
    clean = {k: v for k, v in os.environ.items() if k not in {"SECRET_KEY", "FIELD_ENCRYPTION_KEY"}}
    result = subprocess.run(
        [sys.executable, "-c", code], env={**clean, "APPARATE_VAR_DIR": str(tmp_path), **env},
        capture_output=True, text=True, check=True, timeout=60,
    )
    return json.loads(result.stdout)


def test_keys_from_the_environment_leave_no_local_secrets_file(tmp_path):
    key = Fernet.generate_key().decode()
    values = _settings_in_subprocess(tmp_path, SECRET_KEY="s" * 50, FIELD_ENCRYPTION_KEY=key)
    assert values["secret"] == "s" * 50 and values["keys"] == [key]
    assert not (tmp_path / "local-secrets.json").exists()
    assert values["proxy"] is None and values["forwarded_host"] is False


def test_missing_keys_come_from_a_generated_local_file_and_proxy_headers_are_opt_in(tmp_path):
    values = _settings_in_subprocess(tmp_path, USE_X_FORWARDED_HEADERS="true")
    local = load_or_create_local_secrets(tmp_path / "local-secrets.json")
    assert values["secret"] == local["SECRET_KEY"] and values["keys"] == [local["FIELD_ENCRYPTION_KEY"]]
    assert values["proxy"] == ["HTTP_X_FORWARDED_PROTO", "https"] and values["forwarded_host"] is True
