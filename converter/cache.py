"""The layer cache: converted layers remembered by (source layer digest, options key).

`convert_image` asks the cache before converting a layer. An entry records where the converted
blob was uploaded (registry host and repository); it is reused when the destination repository
already has the blob (HEAD) or the registry can mount it from the recorded repository, and
converted again otherwise. The console backs `LayerCache` with its database; the CLI uses
`FileLayerCache`, a JSON file.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class CachedLayer:
    digest: str  # the eStargz blob
    size: int
    diff_id: str
    toc_digest: str
    uncompressed_size: int
    registry: str  # host[:port] the blob was uploaded to
    repository: str  # namespace/repository there, the `from` of a cross-repository mount
    # Of the files the cache key asks to prioritize: those the blob placed first, and those the
    # layer deletes for the layers below it (both normalized, no leading slash). The image
    # converter needs them to know what the layers below must still prioritize; an entry that
    # does not say (None: made by a cache that does not store them) is not used for a key that
    # names prioritized files.
    prioritized: tuple[str, ...] | None = None
    hidden: tuple[str, ...] | None = None
    startup_bytes: int | None = None  # None for entries made before the figure was recorded

    def __post_init__(self):
        # JSON (and database JSON fields) give lists back
        for name in ("prioritized", "hidden"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, tuple(getattr(self, name)))


class LayerCache(Protocol):
    """Where converted layers are remembered. `cache_key` covers the options and converter version."""

    def get(self, source_digest: str, cache_key: str) -> CachedLayer | None: ...

    def put(self, source_digest: str, cache_key: str, layer: CachedLayer) -> None: ...


class FileLayerCache:
    """A `LayerCache` in one JSON file, rewritten atomically on every `put`. An unreadable or
    malformed file counts as empty (a cache may always forget)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._lock = threading.Lock()

    def _load(self) -> dict[str, dict]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    @staticmethod
    def _key(source_digest: str, cache_key: str) -> str:
        return f"{source_digest} {cache_key}"

    def get(self, source_digest: str, cache_key: str) -> CachedLayer | None:
        entry = self._load().get(self._key(source_digest, cache_key))
        try:
            return CachedLayer(**entry) if isinstance(entry, dict) else None
        except TypeError:
            return None

    def put(self, source_digest: str, cache_key: str, layer: CachedLayer) -> None:
        with self._lock:
            data = self._load()
            data[self._key(source_digest, cache_key)] = asdict(layer)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(prefix=".layer-cache-", dir=self.path.parent)
            try:
                with os.fdopen(handle, "w") as stream:
                    json.dump(data, stream, indent=1, sort_keys=True)
                os.replace(temporary, self.path)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(temporary)
                raise
