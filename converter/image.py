"""Image conversion: an image in a registry becomes its eStargz "accelerated twin".

    result = convert_image(client, parse_reference("reg/team/app:1.0"), options=LayerOptions())
    # -> reg/team/app:1.0-apparate, an OCI image manifest (or OCI index for multi-platform sources)

What `convert_image` guarantees:

- Every platform of an index is converted (or only those asked for with `platforms`, written
  `os/arch[/variant]`), and an OCI index is rebuilt with the original platform fields and entry
  annotations. Index entries that are not platform images (buildx attestation manifests, nested
  indexes, artifacts) are left out: attestations describe the source build and point at source
  digests, so copying them would attach wrong provenance to the twin. They are listed in
  `ImageResult.skipped`.
- Each layer is streamed from the registry (digest verified) through the eStargz writer into a
  temp file (bounded memory, removed afterwards), uploaded, and recorded in the optional
  `LayerCache`. Layer descriptors become `application/vnd.oci.image.layer.v1.tar+gzip` with the
  `containerd.io/snapshot/stargz/toc.digest` and `io.containers.estargz.uncompressed-size`
  annotations; the config's `rootfs.diff_ids` are rewritten.
- Prioritized files (`options.prioritized_files`) are per image: each file is prioritized in the
  layer where it really lives, the top-most layer that has it, unless a layer above deletes it
  (whiteout, opaque directory, a parent replaced by a file; see `converter.overlay`). So layers are
  converted from the top down. A listed file in no layer, or deleted, is a warning
  (`ImageResult.warnings`), not an error. A layer's cache key names the files it was asked to
  prioritize, so a cached layer is never reused with another front order.
- A layer is converted once per call: a layer repeated in a manifest gets one blob (the upper copy
  shadows every path of the lower one), and a layer shared by platforms is converted again only if
  it must put other files first there.
- Each layer records its startup bytes (what a lazy-pulling node fetches before a container can
  open a file, `converter.startup`); each platform sums them over its distinct layers. A node pulls
  one platform, so the figures of an index's platforms are alternatives, never to be added up.
- Manifests are pushed only after every blob is uploaded and confirmed by HEAD: child manifests by
  digest first, the tag last, so no partial image is ever visible under the tag.
- The accelerated manifest (and index) carries `io.apparate.source.digest` and
  `io.apparate.converter.version` annotations and never a `subject` field.
- Same input and options give the same digests (no timestamps are added); with isal (the `fast`
  profile) on CPUs of the same generation (docs/isal-determinism.md).
- Refusals are `ImageRefused` subclasses: a tag already ending with the suffix
  (`SuffixedTagRefused`), an image whose layers are already eStargz (`AlreadyAccelerated`), no
  requested platform in the image (`PlatformNotFound`), a digest-only source without destination
  (`DestinationRequired`), layers that cannot be converted (`UnsupportedImage`). Registry problems
  are `converter.registry.RegistryError`s, layer problems `converter.errors.ConversionError`s.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from . import __version__
from .cache import CachedLayer, LayerCache
from .errors import ConversionError
from .estargz import LayerOptions, LayerResult, convert_layer
from .overlay import LayerPaths
from .reference import ImageReference
from .registry import (
    IMAGE_MEDIA_TYPES,
    OCI_INDEX,
    OCI_MANIFEST,
    Manifest,
    RegistryClient,
    RegistryProtocolError,
    sha256_digest,
)

DEFAULT_SUFFIX = "-apparate"
TOC_DIGEST_ANNOTATION = "containerd.io/snapshot/stargz/toc.digest"
UNCOMPRESSED_SIZE_ANNOTATION = "io.containers.estargz.uncompressed-size"
SOURCE_DIGEST_ANNOTATION = "io.apparate.source.digest"
CONVERTER_VERSION_ANNOTATION = "io.apparate.converter.version"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
# Layer media types the converter reads (the writer sniffs the actual compression).
CONVERTIBLE_LAYER_TYPES = frozenset({
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.diff.tar.zstd",
})
_READ_SIZE = 1 << 20


class ImageRefused(ConversionError):
    """The request or the image is not something the converter will convert; retrying won't help."""


class SuffixedTagRefused(ImageRefused):
    """The source tag already ends with the accelerated suffix."""


class AlreadyAccelerated(ImageRefused):
    """The image's layers are already eStargz (they carry a TOC digest) or it is an apparate twin."""


class PlatformNotFound(ImageRefused):
    """None of the requested platforms is in the image."""


class DestinationRequired(ImageRefused):
    """The source is given by digest only, so there is no tag to add the suffix to."""


class UnsupportedImage(ImageRefused):
    """The image has a layer or config the converter cannot handle (foreign layers, odd media types)."""


@dataclass(frozen=True)
class LayerProgress:
    """One progress event for one layer. `phase` is "convert" (bytes flowing), "upload",
    "reused" (taken from the cache, nothing converted) or "done"."""

    platform: str
    layer_index: int
    layer_count: int
    source_digest: str
    bytes_in: int  # compressed source bytes read so far
    bytes_out: int  # eStargz bytes written so far
    total: int  # compressed size of the source layer
    phase: str


ProgressCallback = Callable[[LayerProgress], None]


@dataclass
class LayerOutcome:
    source_digest: str
    digest: str
    size: int  # bytes of the eStargz blob: what a full pull of this layer fetches
    diff_id: str
    toc_digest: str
    uncompressed_size: int
    # False for the one conversion of this layer in this call; True when this occurrence converted
    # nothing: taken from the cache (blob present or mounted) or converted earlier in the call.
    reused: bool
    # Bytes a lazy-pulling node fetches from this blob before a container can start (footer, TOC,
    # prioritized region); None when taken from a cache entry made before the figure was recorded.
    startup_bytes: int | None
    prioritized: list[str]  # the prioritized files placed first in this blob, as absolute paths


@dataclass
class PlatformResult:
    platform: str  # os/arch[/variant]
    source_digest: str
    digest: str
    size: int
    layers: list[LayerOutcome]  # in manifest order, bottom layer first
    # Over the platform's distinct layer blobs (a blob listed twice is fetched once): what a node
    # pulling this platform fetches to start (None if a layer's figure is unknown), and in full.
    startup_bytes: int | None
    layers_size: int
    warnings: list[str] = field(default_factory=list)  # prioritized files not placed, and why


@dataclass
class ImageResult:
    source: str
    source_digest: str
    destination: str
    digest: str
    media_type: str
    size: int
    platforms: list[PlatformResult]
    skipped: list[str] = field(default_factory=list)

    @property
    def layers_converted(self) -> int:
        """Layer conversions actually run (a layer reused from the cache or earlier in the call
        does not count)."""
        return sum(not layer.reused for p in self.platforms for layer in p.layers)

    @property
    def layers_reused(self) -> int:
        return sum(layer.reused for p in self.platforms for layer in p.layers)

    @property
    def warnings(self) -> list[str]:
        """Human-readable warnings for the job log, each naming its platform."""
        return [f"{p.platform}: {warning}" for p in self.platforms for warning in p.warnings]

    def as_dict(self) -> dict:
        return {**asdict(self), "layers_converted": self.layers_converted, "layers_reused": self.layers_reused,
                "warnings": self.warnings}


@dataclass(frozen=True)
class _LayerFacts:
    """What one source layer holds of the image's prioritized files; `known` are the paths it was
    checked for (all of them after converting it, fewer when it came from the cache)."""

    known: frozenset[str]
    present: frozenset[str]
    hidden: frozenset[str]  # deleted for every layer below by this one

    def front(self, candidates: tuple[str, ...]) -> tuple[str, ...] | None:
        """The files this layer puts first when asked to prioritize `candidates`; None if unknown."""
        if not self.known.issuperset(candidates):
            return None
        return tuple(path for path in candidates if path in self.present)


def platform_name(platform: dict) -> str:
    parts = [platform.get("os", "?"), platform.get("architecture", "?")]
    return "/".join(parts + ([platform["variant"]] if platform.get("variant") else []))


def _platform_matches(platform: dict, wanted: str) -> bool:
    """`linux/arm64` matches any arm64 variant; `linux/arm64/v8` only that variant."""
    name = platform_name(platform)
    return name == wanted or (wanted.count("/") == 1 and name.startswith(wanted + "/"))


def _refuse_suffixed(source: ImageReference, suffix: str) -> None:
    if suffix and source.tag and source.tag.endswith(suffix):
        raise SuffixedTagRefused(
            f"The tag '{source.tag}' already ends with '{suffix}': it is an accelerated image, not a source.")


def destination_for(source: ImageReference, suffix: str = DEFAULT_SUFFIX) -> ImageReference:
    """`<tag><suffix>` in the source repository; refuses tags that already carry the suffix."""
    _refuse_suffixed(source, suffix)
    if not source.tag:
        raise DestinationRequired(f"{source} names no tag: give an explicit destination for the accelerated image.")
    tag = source.tag + suffix
    if len(tag) > 128:
        raise DestinationRequired(f"The tag '{tag}' would be longer than 128 characters; give a destination.")
    return source.with_tag(tag)


class _ImageConverter:
    def __init__(self, client: RegistryClient, source: ImageReference, destination: ImageReference,
                 destination_client: RegistryClient, options: LayerOptions, cache: LayerCache | None,
                 progress: ProgressCallback | None, workdir: str | None):
        self.client, self.source, self.destination = client, source, destination
        self.target = destination_client
        self.options, self.cache, self.progress, self.workdir = options, cache, progress, workdir
        self.listed = options.normalized_prioritized_files
        # source layer digest -> each distinct conversion of it in this run: outcome, facts, front
        self.done: dict[str, list[tuple[LayerOutcome, _LayerFacts, tuple[str, ...]]]] = {}

    def run(self, platforms: list[str] | None) -> ImageResult:
        top = self.client.get_manifest(self.source.path, self.source.reference)
        annotations = {SOURCE_DIGEST_ANNOTATION: top.digest, CONVERTER_VERSION_ANNOTATION: __version__}
        if top.is_index:
            return self._convert_index(top, platforms, annotations)
        manifest = top.json()
        config = self._config(manifest)
        platform = {key: config[key] for key in ("os", "architecture", "variant") if config.get(key)}
        if platforms and not any(_platform_matches(platform, wanted) for wanted in platforms):
            raise PlatformNotFound(
                f"{self.source} is a single-platform image for {platform_name(platform)}; "
                f"none of {', '.join(platforms)} is available.")
        converted = self._convert_manifest(top, manifest, config, platform_name(platform), annotations)
        self._verify_blobs(converted)
        digest = self.target.put_manifest(self.destination.path, self.destination.tag, converted.content,
                                          OCI_MANIFEST)
        return ImageResult(str(self.source), top.digest, str(self.destination), digest, OCI_MANIFEST,
                           len(converted.content), [converted.result])

    def _convert_index(self, top: Manifest, platforms: list[str] | None, annotations: dict) -> ImageResult:
        index = top.json()
        entries, skipped = [], []
        for entry in index.get("manifests") or []:
            platform = entry.get("platform") or {}
            entry_annotations = entry.get("annotations") or {}
            name = platform_name(platform)
            if entry.get("mediaType") not in IMAGE_MEDIA_TYPES:
                skipped.append(f"{entry.get('digest')} ({entry.get('mediaType')}): not a platform image")
            elif entry_annotations.get("vnd.docker.reference.type") or name == "unknown/unknown":
                skipped.append(f"{entry.get('digest')}: attestation manifest")
            elif platforms and not any(_platform_matches(platform, wanted) for wanted in platforms):
                skipped.append(f"{entry.get('digest')}: platform {name} not requested")
            else:
                entries.append(entry)
        if not entries:
            available = sorted({platform_name(e.get("platform") or {}) for e in index.get("manifests") or []})
            wanted = ", ".join(platforms) if platforms else "any platform image"
            raise PlatformNotFound(f"{self.source} has no {wanted}; it has {', '.join(available) or 'nothing'}.")
        children = []
        for entry in entries:
            child = self.client.get_manifest(self.source.path, entry["digest"])
            if child.media_type not in IMAGE_MEDIA_TYPES:
                raise UnsupportedImage(f"{self.source}: index entry {entry['digest']} is not an image manifest.")
            manifest = child.json()
            child_annotations = {SOURCE_DIGEST_ANNOTATION: child.digest, CONVERTER_VERSION_ANNOTATION: __version__}
            converted = self._convert_manifest(child, manifest, self._config(manifest),
                                               platform_name(entry.get("platform") or {}), child_annotations)
            children.append((entry, converted))
        for _, converted in children:
            self._verify_blobs(converted)
        descriptors = []
        for entry, converted in children:
            digest = self.target.put_manifest(self.destination.path, converted.result.digest, converted.content,
                                              OCI_MANIFEST)
            descriptor = {"mediaType": OCI_MANIFEST, "digest": digest, "size": len(converted.content)}
            if entry.get("platform"):
                descriptor["platform"] = entry["platform"]
            if entry.get("annotations"):
                descriptor["annotations"] = entry["annotations"]
            descriptors.append(descriptor)
        new_index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": descriptors,
                     "annotations": {**(index.get("annotations") or {}), **annotations}}
        content = _encode(new_index)
        digest = self.target.put_manifest(self.destination.path, self.destination.tag, content, OCI_INDEX)
        return ImageResult(str(self.source), top.digest, str(self.destination), digest, OCI_INDEX, len(content),
                           [converted.result for _, converted in children], skipped)

    def _config(self, manifest: dict) -> dict:
        descriptor = manifest.get("config") or {}
        if descriptor.get("mediaType") not in (OCI_CONFIG, DOCKER_CONFIG):
            raise UnsupportedImage(
                f"{self.source}: the config media type '{descriptor.get('mediaType')}' is not an image config.")
        data = self.client.get_blob(self.source.path, descriptor["digest"], descriptor.get("size"))
        try:
            config = json.loads(data)
        except ValueError as error:
            raise UnsupportedImage(f"{self.source}: the image config {descriptor['digest']} is not JSON.") from error
        if not isinstance(config, dict):
            raise UnsupportedImage(f"{self.source}: the image config {descriptor['digest']} is not an object.")
        return config

    def _convert_manifest(self, source: Manifest, manifest: dict, config: dict, platform: str,
                          annotations: dict) -> _Converted:
        layers = manifest.get("layers") or []
        self._refuse_accelerated(manifest, layers)
        for layer in layers:
            if layer.get("mediaType") not in CONVERTIBLE_LAYER_TYPES:
                raise UnsupportedImage(
                    f"{self.source} ({platform}): layer {layer.get('digest')} has media type "
                    f"'{layer.get('mediaType')}', which cannot be converted (foreign or non-tar layer).")
        diff_ids = (config.get("rootfs") or {}).get("diff_ids")
        if not isinstance(diff_ids, list) or len(diff_ids) != len(layers):
            raise UnsupportedImage(f"{self.source} ({platform}): the config lists {len(diff_ids or [])} diff_ids "
                                   f"for {len(layers)} layers.")
        outcomes, warnings = self._layers(platform, layers)
        new_config = {**config, "rootfs": {**config["rootfs"], "diff_ids": [o.diff_id for o in outcomes]}}
        config_bytes = _encode(new_config)
        config_digest = self.target.upload_blob(self.destination.path, config_bytes)
        new_layers = []
        for layer, outcome in zip(layers, outcomes, strict=True):
            layer_annotations = {**(layer.get("annotations") or {}),
                                 TOC_DIGEST_ANNOTATION: outcome.toc_digest,
                                 UNCOMPRESSED_SIZE_ANNOTATION: str(outcome.uncompressed_size)}
            layer_annotations.pop("containerd.io/uncompressed", None)  # was the source's diff ID
            new_layers.append({"mediaType": OCI_LAYER_GZIP, "digest": outcome.digest, "size": outcome.size,
                               "annotations": layer_annotations})
        new_manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config_bytes)},
            "layers": new_layers,
            "annotations": {**(manifest.get("annotations") or {}), **annotations},
        }
        content = _encode(new_manifest)
        distinct = {outcome.digest: outcome for outcome in outcomes}.values()
        startup = None if any(o.startup_bytes is None for o in distinct) else sum(o.startup_bytes for o in distinct)
        result = PlatformResult(platform, source.digest, sha256_digest(content), len(content), outcomes,
                                startup_bytes=startup, layers_size=sum(o.size for o in distinct), warnings=warnings)
        return _Converted(content, result, [config_digest] + [o.digest for o in outcomes])

    def _refuse_accelerated(self, manifest: dict, layers: list[dict]) -> None:
        twin_of = (manifest.get("annotations") or {}).get(SOURCE_DIGEST_ANNOTATION)
        if twin_of:
            raise AlreadyAccelerated(f"{self.source} is already accelerated: it is the twin of {twin_of}.")
        if layers and all(TOC_DIGEST_ANNOTATION in (layer.get("annotations") or {}) for layer in layers):
            raise AlreadyAccelerated(f"{self.source} is already accelerated: its layers are eStargz "
                                     f"(they carry {TOC_DIGEST_ANNOTATION}).")

    def _emitter(self, platform: str, index: int, count: int, layer: dict) -> Callable[[str, int, int], None]:
        def emit(phase: str, bytes_in: int, bytes_out: int) -> None:
            if self.progress:
                self.progress(LayerProgress(platform, index, count, layer["digest"], bytes_in, bytes_out,
                                            int(layer.get("size") or 0), phase))
        return emit

    def _layers(self, platform: str, layers: list[dict]) -> tuple[list[LayerOutcome], list[str]]:
        """Convert a manifest's layers from the top down: which layer a prioritized file lives in
        depends on the layers above it. Returns the outcomes in manifest order and the warnings."""
        count = len(layers)
        outcomes: list[LayerOutcome | None] = [None] * count
        candidates = self.listed  # still looked for: neither found nor deleted higher up
        deleted_by: dict[str, int] = {}
        converted_here: dict[str, LayerOutcome] = {}
        for index in reversed(range(count)):
            layer = layers[index]
            emit = self._emitter(platform, index, count, layer)
            upper = converted_here.get(layer["digest"])
            if upper is not None:
                # The same layer higher up shadows every path of this copy; one blob serves both.
                outcomes[index] = self._reuse(upper, layer, emit)
                continue
            outcome, facts = self._layer(layer, candidates, emit)
            converted_here[layer["digest"]] = outcome
            for path in candidates:
                if path in facts.hidden:
                    deleted_by[path] = index
            candidates = tuple(p for p in candidates if p not in facts.present and p not in facts.hidden)
            outcomes[index] = outcome
        placed = {path for outcome in outcomes for path in outcome.prioritized}
        warnings = []
        for path in self.listed:
            if "/" + path in placed:
                continue
            if path in deleted_by:
                warnings.append(f"prioritized file '/{path}' is removed from the image by layer "
                                f"{deleted_by[path] + 1} of {count} (a whiteout or a replaced parent directory); "
                                "it is not prioritized")
            else:
                warnings.append(f"prioritized file '/{path}' is in none of the {count} layers; it is not prioritized")
        return outcomes, warnings

    @staticmethod
    def _reuse(outcome: LayerOutcome, layer: dict, emit: Callable[[str, int, int], None]) -> LayerOutcome:
        emit("reused", 0, outcome.size)
        emit("done", int(layer.get("size") or 0), outcome.size)
        return replace(outcome, reused=True)

    def _layer(self, layer: dict, candidates: tuple[str, ...],
               emit: Callable[[str, int, int], None]) -> tuple[LayerOutcome, _LayerFacts]:
        """One occurrence of a layer, asked to prioritize those of `candidates` it holds."""
        source_digest = layer["digest"]
        for outcome, facts, front in self.done.get(source_digest, ()):
            if facts.front(candidates) == front:  # converted earlier in this run with the same front
                return self._reuse(outcome, layer, emit), facts
        options = replace(self.options, prioritized_files=candidates, require_prioritized=False)
        found = self._from_cache(source_digest, options)
        if found is not None:
            outcome, facts = found
            emit("reused", 0, outcome.size)
        else:
            outcome, facts = self._convert_layer(layer, options, emit)
        self.done.setdefault(source_digest, []).append((outcome, facts, facts.front(candidates)))
        emit("done", int(layer.get("size") or 0), outcome.size)
        return outcome, facts

    def _from_cache(self, source_digest: str, options: LayerOptions) -> tuple[LayerOutcome, _LayerFacts] | None:
        if self.cache is None:
            return None
        cached = self.cache.get(source_digest, options.cache_key())
        candidates = frozenset(options.normalized_prioritized_files)
        if cached is None or (candidates and (cached.prioritized is None or cached.hidden is None)):
            return None
        present = self.target.blob_exists(self.destination.path, cached.digest)
        if not present and cached.registry == self.target.host and cached.repository != self.destination.path:
            present = self.target.mount_blob(self.destination.path, cached.digest, cached.repository)
        if not present:
            return None
        placed = cached.prioritized or ()
        facts = _LayerFacts(known=candidates, present=frozenset(placed),
                            hidden=frozenset(cached.hidden or ()) & candidates)
        return LayerOutcome(source_digest, cached.digest, cached.size, cached.diff_id, cached.toc_digest,
                            cached.uncompressed_size, reused=True, startup_bytes=cached.startup_bytes,
                            prioritized=["/" + path for path in placed]), facts

    def _convert_layer(self, layer: dict, options: LayerOptions,
                       emit: Callable[[str, int, int], None]) -> tuple[LayerOutcome, _LayerFacts]:
        paths = LayerPaths(self.listed)
        with tempfile.TemporaryDirectory(prefix="apparate-layer-", dir=self.workdir) as work:
            output = Path(work) / "layer.estargz"
            with self.client.open_blob(self.source.path, layer["digest"], layer.get("size")) as blob, \
                    open(output, "w+b") as destination:
                try:
                    result: LayerResult = convert_layer(
                        blob, destination, options,
                        progress=lambda read, written: emit("convert", read, written), workdir=work, paths=paths)
                except ConversionError as error:  # name the layer: the writer only knows a stream
                    raise type(error)(f"{self.source}: layer {layer['digest']}: {error}") from error
                while blob.read(_READ_SIZE):  # read to the end: the digest is checked at EOF
                    pass
            emit("upload", blob.bytes_read, result.size)
            self.target.upload_blob(self.destination.path, output, result.digest)
        facts = _LayerFacts(known=frozenset(self.listed), present=frozenset(paths.present),
                            hidden=frozenset(paths.hidden))
        outcome = LayerOutcome(layer["digest"], result.digest, result.size, result.diff_id, result.toc_digest,
                               result.uncompressed_size, reused=False, startup_bytes=result.startup_bytes,
                               prioritized=["/" + path for path in result.prioritized])
        if self.cache is not None:
            self._remember(layer["digest"], options, result, facts)
        return outcome, facts

    def _remember(self, source_digest: str, options: LayerOptions, result: LayerResult, facts: _LayerFacts) -> None:
        """Cache the layer under the files it was asked to prioritize and, when it placed fewer,
        also under those it placed: asked for just those, it gives the same bytes."""
        candidates = options.normalized_prioritized_files
        entry = CachedLayer(
            digest=result.digest, size=result.size, diff_id=result.diff_id, toc_digest=result.toc_digest,
            uncompressed_size=result.uncompressed_size, registry=self.target.host,
            repository=self.destination.path, prioritized=result.prioritized,
            hidden=tuple(path for path in candidates if path in facts.hidden), startup_bytes=result.startup_bytes)
        self.cache.put(source_digest, options.cache_key(), entry)
        if result.prioritized != candidates:
            self.cache.put(source_digest, replace(options, prioritized_files=result.prioritized).cache_key(),
                           replace(entry, hidden=()))

    def _verify_blobs(self, converted: _Converted) -> None:
        for digest in converted.blobs:
            if not self.target.blob_exists(self.destination.path, digest):
                raise RegistryProtocolError(
                    f"HEAD /v2/{self.destination.path}/blobs/{digest}: the blob is missing after its upload; "
                    "the manifest was not pushed.", transient=True)


@dataclass
class _Converted:
    content: bytes
    result: PlatformResult
    blobs: list[str]


def _encode(document: dict) -> bytes:
    """Compact, key-order-preserving JSON: the same document always gives the same bytes."""
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


def convert_image(
    client: RegistryClient,
    source: ImageReference,
    destination: ImageReference | None = None,
    options: LayerOptions | None = None,
    platforms: list[str] | None = None,
    cache: LayerCache | None = None,
    progress: ProgressCallback | None = None,
    suffix: str = DEFAULT_SUFFIX,
    destination_client: RegistryClient | None = None,
    workdir: str | os.PathLike | None = None,
) -> ImageResult:
    """Convert `source` into an eStargz twin and push it; see the module docstring for the rules.

    `destination` defaults to `<tag><suffix>` in the source repository (a tag is required there);
    `destination_client` is only needed when the destination is on another registry. `workdir` is
    where per-layer temp directories are made (the system temp dir by default)."""
    _refuse_suffixed(source, suffix)
    destination = destination or destination_for(source, suffix)
    if not destination.tag:
        raise DestinationRequired(f"The destination {destination} needs a tag.")
    if destination.path == source.path and destination.tag == source.tag and (
            destination_client is None or destination_client.host == client.host):
        raise DestinationRequired("The destination is the source itself; the source image must stay untouched.")
    if workdir:
        Path(workdir).mkdir(parents=True, exist_ok=True)
    converter = _ImageConverter(client, source, destination, destination_client or client, options or LayerOptions(),
                                cache, progress, os.fspath(workdir) if workdir else None)
    return converter.run(platforms)
