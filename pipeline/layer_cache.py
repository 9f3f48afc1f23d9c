"""The converter's LayerCache backed by the database, one cache per registry instance.

A layer converted once with the same options and converter version is found here by any job of
the same instance, whatever its repository: the converter then HEADs the blob in the destination
repository or mounts it from the repository recorded here, instead of converting it again. An
entry keeps which prioritized files the blob placed first and which the layer deletes, which the
converter needs to reuse it for an image with prioritized files.
"""

from django.db.models import F

from converter import __version__ as converter_version
from converter.cache import CachedLayer
from pipeline.models import LayerCacheEntry


class DatabaseLayerCache:
    """`converter.cache.LayerCache` over `LayerCacheEntry` rows of one instance."""

    def __init__(self, instance):
        self.instance = instance

    def get(self, source_digest: str, cache_key: str) -> CachedLayer | None:
        entry = LayerCacheEntry.objects.filter(
            instance=self.instance, source_digest=source_digest, cache_key=cache_key,
        ).first()
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


def _listed(paths: tuple[str, ...] | None) -> list[str] | None:
    return None if paths is None else list(paths)
