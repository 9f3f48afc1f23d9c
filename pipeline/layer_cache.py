"""The converter's LayerCache backed by the database, one cache per registry instance.

A layer converted once with the same options and converter version is found here by any job of
the same instance, whatever its repository: the converter then HEADs the blob in the destination
repository or mounts it from the repository recorded here, instead of converting it again. An
entry keeps which prioritized files the blob placed first and which the layer deletes, which the
converter needs to reuse it for an image with prioritized files.

Jobs running at once in several workers meet the same new layer (a new base image pushed to many
repositories): on PostgreSQL a miss takes a session advisory lock on (instance, layer, cache key)
and keeps it until the layer is `put`, so the second job waits there, then finds the first one's
entry and reuses it instead of converting the layer a second time. Use the cache as a context
manager: leaving it releases a lock whose conversion failed before its `put`.
"""

import hashlib
import logging
import time

from django.db import connection
from django.db.models import F

from converter import __version__ as converter_version
from converter.cache import CachedLayer
from pipeline.models import LayerCacheEntry

logger = logging.getLogger("apparate.jobs")


class DatabaseLayerCache:
    """`converter.cache.LayerCache` over `LayerCacheEntry` rows of one instance."""

    def __init__(self, instance):
        self.instance = instance
        self.held: dict[tuple[str, str], int] = {}  # (source digest, cache key) -> advisory lock key

    def __enter__(self) -> "DatabaseLayerCache":
        return self

    def __exit__(self, *exc_info) -> None:
        self._release_all()

    def get(self, source_digest: str, cache_key: str) -> CachedLayer | None:
        # The converter handles one layer at a time, so a lock still held is a finished layer's: a job
        # never holds two, and two jobs can never wait for each other.
        self._release_all()
        entry = self._entry(source_digest, cache_key)
        if entry is None and connection.vendor == "postgresql":
            self._lock(source_digest, cache_key)  # until `put`: a job converting it now makes us wait here
            entry = self._entry(source_digest, cache_key)
            if entry is not None:  # converted by the job we waited for
                self._unlock(source_digest, cache_key)
        if entry is None:
            return None
        LayerCacheEntry.objects.filter(pk=entry.pk).update(hits=F("hits") + 1)
        return CachedLayer(digest=entry.digest, size=entry.size, diff_id=entry.diff_id, toc_digest=entry.toc_digest,
                           uncompressed_size=entry.uncompressed_size, registry=entry.registry,
                           repository=entry.repository, prioritized=entry.prioritized, hidden=entry.hidden,
                           startup_bytes=entry.startup_bytes)

    def put(self, source_digest: str, cache_key: str, layer: CachedLayer) -> None:
        LayerCacheEntry.objects.update_or_create(
            instance=self.instance, source_digest=source_digest, cache_key=cache_key,
            defaults={"converter_version": converter_version, "registry": layer.registry,
                      "repository": layer.repository, "digest": layer.digest, "size": layer.size,
                      "diff_id": layer.diff_id, "toc_digest": layer.toc_digest,
                      "uncompressed_size": layer.uncompressed_size, "prioritized": _listed(layer.prioritized),
                      "hidden": _listed(layer.hidden), "startup_bytes": layer.startup_bytes},
        )
        if (source_digest, cache_key) in self.held:
            self._unlock(source_digest, cache_key)

    def _entry(self, source_digest: str, cache_key: str) -> LayerCacheEntry | None:
        return LayerCacheEntry.objects.filter(
            instance=self.instance, source_digest=source_digest, cache_key=cache_key).first()

    def _lock(self, source_digest: str, cache_key: str) -> None:
        # One bigint key (a separate key space from the jobs' two-integer locks); a hash collision
        # only makes two unrelated conversions take turns.
        name = f"{self.instance.pk} {source_digest} {cache_key}".encode()
        key = int.from_bytes(hashlib.sha256(name).digest()[:8], "big", signed=True)
        started = time.monotonic()
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_lock(%s)", [key])
        self.held[(source_digest, cache_key)] = key
        logger.info("layer=%s action=layer-lock waited=%.3f", source_digest, time.monotonic() - started)

    def _release_all(self) -> None:
        for source_digest, cache_key in list(self.held):
            self._unlock(source_digest, cache_key)

    def _unlock(self, source_digest: str, cache_key: str) -> None:
        key = self.held.pop((source_digest, cache_key))
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [key])


def _listed(paths: tuple[str, ...] | None) -> list[str] | None:
    return None if paths is None else list(paths)
