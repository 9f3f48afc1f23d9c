"""Model fields shared by the apps: secrets encrypted at rest.

`EncryptedTextField` stores Fernet tokens (keys from settings.FIELD_ENCRYPTION_KEYS, first key
encrypts, all decrypt) and hands plain text to Python code. The audit log and serializers treat
every field of this class as a secret: masked, never rendered.
"""

from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import models


@lru_cache(maxsize=4)
def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    if not keys:
        raise ImproperlyConfigured("FIELD_ENCRYPTION_KEY is empty: set it to one or more comma-separated Fernet keys.")
    try:
        return MultiFernet([Fernet(key.encode()) for key in keys])
    except ValueError as error:
        raise ImproperlyConfigured(f"FIELD_ENCRYPTION_KEY is not a valid Fernet key: {error}") from None


def encrypt(value: str) -> str:
    return _fernet(tuple(settings.FIELD_ENCRYPTION_KEYS)).encrypt(value.encode()).decode()


def decrypt(token: str) -> str:
    try:
        return _fernet(tuple(settings.FIELD_ENCRYPTION_KEYS)).decrypt(token.encode()).decode()
    except InvalidToken:
        raise ImproperlyConfigured(
            "A stored secret cannot be decrypted with FIELD_ENCRYPTION_KEY (was the key changed?)"
        ) from None


class EncryptedTextField(models.TextField):
    """A text field whose value is encrypted in the database; blank stays blank."""

    secret = True

    def from_db_value(self, value, expression, connection):
        if not value:
            return value
        return decrypt(value)

    def get_prep_value(self, value):
        value = super().get_prep_value(value)
        if not value:
            return value
        return encrypt(value)


def is_secret_field(field) -> bool:
    """True for fields whose values must never be logged, rendered or returned."""
    return getattr(field, "secret", False)
