"""Local state under APPARATE_VAR_DIR: the generated keys for `make run`, and private file modes.

Production passes SECRET_KEY and FIELD_ENCRYPTION_KEY in the environment; a fresh checkout gets
random ones in a git-ignored file (mode 0600) so that encrypted values survive restarts.

The SQLite database holds API tokens, sessions and password hashes, and the filesystem broker's
messages and beat's schedule sit beside it: the directory is kept 0700 and those files 0600, so no
other local user can read them, also where an older version left them world-readable.
"""

import contextlib
import json
import os
import secrets
from collections.abc import Iterable
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


def make_private(directory: Path, files: Iterable[Path] = (), subdirectories: Iterable[Path] = ()) -> None:
    """`directory` and `subdirectories` 0700 (created if missing); every file in `directory` whose name
    starts with one of `files` 0600 (the SQLite file with its -wal and -shm, beat's schedule files).
    The first of `files` is created empty if missing: SQLite opens an empty file as a new database
    and gives its -wal and -shm files the same mode. What belongs to another user is left alone."""
    for folder in (directory, *subdirectories):
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        with contextlib.suppress(PermissionError):
            folder.chmod(0o700)
    names = [path.name for path in files]
    if names:
        os.close(os.open(directory / names[0], os.O_WRONLY | os.O_CREAT, 0o600))
    for path in directory.iterdir():
        if path.is_file() and path.name.startswith(tuple(names)):
            with contextlib.suppress(PermissionError, FileNotFoundError):
                path.chmod(0o600)
