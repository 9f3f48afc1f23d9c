"""Generates and keeps the local secret key and field-encryption key for `make run`.

Production passes SECRET_KEY and FIELD_ENCRYPTION_KEY in the environment; a fresh checkout gets
random ones in a git-ignored file (mode 0600) so that encrypted values survive restarts.
"""

import json
import os
import secrets
from pathlib import Path

from cryptography.fernet import Fernet


def load_or_create_local_secrets(path: Path) -> dict[str, str]:
    """Return the local secrets, creating the file with fresh random values if it is missing."""
    if path.exists():
        return json.loads(path.read_text())
    path.parent.mkdir(parents=True, exist_ok=True)
    values = {
        "SECRET_KEY": secrets.token_urlsafe(50),
        "FIELD_ENCRYPTION_KEY": Fernet.generate_key().decode(),
    }
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        json.dump(values, handle)
    return values
