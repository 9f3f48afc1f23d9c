"""Startup bytes: what a lazy-pulling node fetches from an eStargz blob before a container can
open any file, computed from an existing blob with ranged reads only.

The stargz snapshotter reads the 51-byte footer, then the TOC member it points at, then prefetches
`[0, offset of .prefetch.landmark)` (nothing when the layer has `.no.prefetch.landmark`, or no
landmark at all). `startup_bytes(read, size)` reads exactly the footer and the TOC member, never
the rest of the blob, so it suits blobs already in a registry (twins made before the converter
recorded the figure): `read(start, length)` is a ranged read, e.g. an HTTP Range request.

The writer records the same figure while converting (`LayerResult.startup_bytes`); both must
agree. Everything read is untrusted: a bad footer, a TOC offset outside the blob, a TOC member
larger than `max_toc_bytes` or decompressing to more than `max_toc_uncompressed`, a corrupt member
or TOC each end in an `EstargzBlobError` that says which.
"""

import io
import json
import re
import struct
import tarfile
from collections.abc import Callable
from dataclasses import dataclass

from zlib_ng import zlib_ng

from .errors import EstargzBlobError
from .estargz import FOOTER_SIZE, NO_PREFETCH_LANDMARK, PREFETCH_LANDMARK, TOC_NAME
from .tarinput import clean_name

# A TOC entry takes ~150-300 bytes of JSON and compresses ~5-10x: these allow layers of about half
# a million files, and keep one look-up's memory to a few hundred MB at worst.
MAX_TOC_BYTES = 32 << 20
MAX_TOC_UNCOMPRESSED = 128 << 20
_READ_BLOCK = 4 << 20
_HEX_OFFSET = re.compile(rb"[0-9a-fA-F]{16}")


@dataclass(frozen=True)
class StartupBytes:
    """The bytes of one layer blob a node fetches before a container can start."""

    footer: int  # always FOOTER_SIZE
    toc: int  # compressed length of the TOC member
    prefetch: int  # the prioritized region [0, offset of .prefetch.landmark); 0 without one

    @property
    def total(self) -> int:
        return self.footer + self.toc + self.prefetch


def startup_bytes(read: Callable[[int, int], bytes], size: int, max_toc_bytes: int = MAX_TOC_BYTES,
                  max_toc_uncompressed: int = MAX_TOC_UNCOMPRESSED) -> StartupBytes:
    """Compute the startup bytes of the eStargz blob of `size` bytes that `read(start, length)`
    reads from. Reads the footer, then the TOC member (in pieces), nothing else."""
    if isinstance(size, bool) or not isinstance(size, int) or size < FOOTER_SIZE:
        raise EstargzBlobError(f"a blob of {size!r} bytes cannot hold the {FOOTER_SIZE}-byte eStargz footer")
    footer_start = size - FOOTER_SIZE
    toc_offset = parse_footer(_read_exactly(read, footer_start, FOOTER_SIZE))
    if toc_offset >= footer_start:
        raise EstargzBlobError(f"the footer points at a TOC at byte {toc_offset}, which is not before the footer "
                               f"(byte {footer_start} of a {size}-byte blob)")
    toc_size = footer_start - toc_offset
    if toc_size > max_toc_bytes:
        raise EstargzBlobError(f"the TOC member is {toc_size} bytes, more than the limit of {max_toc_bytes}")
    toc_json = _toc_json(_inflate_member(read, toc_offset, toc_size, max_toc_uncompressed))
    return StartupBytes(FOOTER_SIZE, toc_size, _prefetch_end(toc_json, toc_offset))


def parse_footer(footer: bytes) -> int:
    """The TOC offset in a 51-byte eStargz footer: an empty gzip member whose Extra field holds the
    subfield `SG`, 22 bytes long: 16 hex digits and `STARGZ` (what reference readers check)."""
    if len(footer) != FOOTER_SIZE:
        raise EstargzBlobError(f"the footer is {len(footer)} bytes, not {FOOTER_SIZE}")
    if footer[:3] != b"\x1f\x8b\x08" or not footer[3] & 0x04:
        raise EstargzBlobError("the last 51 bytes are not a gzip member with an Extra field: not an eStargz blob")
    extra_length, = struct.unpack("<H", footer[10:12])
    subfield_length, = struct.unpack("<H", footer[14:16])
    if extra_length != 26 or footer[12:14] != b"SG" or subfield_length != 22:
        raise EstargzBlobError("the footer's Extra field is not the eStargz 'SG' subfield of 22 bytes")
    if footer[32:38] != b"STARGZ" or not _HEX_OFFSET.fullmatch(footer[16:32]):
        raise EstargzBlobError("the footer's subfield is not 16 hex digits followed by 'STARGZ'")
    return int(footer[16:32], 16)


def _read_exactly(read: Callable[[int, int], bytes], start: int, length: int) -> bytes:
    data = read(start, length)
    if len(data) != length:
        raise EstargzBlobError(f"reading {length} bytes at byte {start} returned {len(data)}")
    return data


def _inflate_member(read, offset: int, size: int, limit: int) -> bytes:
    """Decompress the single gzip member filling [offset, offset + size), at most `limit` bytes out."""
    decoder = zlib_ng.decompressobj(31)
    out: list[bytes] = []
    produced = 0
    position = offset
    try:
        while position < offset + size:
            length = min(_READ_BLOCK, offset + size - position)
            data = _read_exactly(read, position, length)
            position += length
            while data and not decoder.eof:
                piece = decoder.decompress(data, limit + 1 - produced)
                produced += len(piece)
                if produced > limit:
                    raise EstargzBlobError(f"the TOC member decompresses to more than {limit} bytes")
                out.append(piece)
                data = decoder.unconsumed_tail
            if decoder.eof and (data or decoder.unused_data or position < offset + size):
                raise EstargzBlobError(f"the TOC member at byte {offset} ends before the footer: "
                                       "something else sits between the TOC and the footer")
    except zlib_ng.error as error:
        raise EstargzBlobError(f"the TOC member at byte {offset} is not valid gzip: {error}") from None
    if not decoder.eof:
        raise EstargzBlobError(f"the TOC member at byte {offset} is truncated: it does not end before the footer")
    return b"".join(out)


def _toc_json(tar_bytes: bytes) -> bytes:
    """The JSON of the TOC member's first tar entry, which must be `stargz.index.json`."""
    try:
        with tarfile.open(fileobj=io.BytesIO(tar_bytes), mode="r:") as archive:
            first = archive.next()
            if first is None or clean_name(first.name) != TOC_NAME or not first.isreg():
                name = first.name if first is not None else None
                raise EstargzBlobError(f"the TOC member's first entry is {name!r}, not the regular file {TOC_NAME!r}")
            data = archive.extractfile(first).read()
    except (tarfile.TarError, EOFError) as error:
        raise EstargzBlobError(f"the TOC member is not a tar stream: {error}") from None
    if len(data) != first.size:
        raise EstargzBlobError(f"{TOC_NAME} declares {first.size} bytes but the TOC member holds {len(data)}")
    return data


def _entry_fields(pairs: list[tuple[str, object]]) -> dict:
    """Keep only what is needed of each JSON object, so a big TOC stays small in memory."""
    return {key: value for key, value in pairs if key in ("version", "entries", "name", "offset")}


def _prefetch_end(toc_json: bytes, toc_offset: int) -> int:
    """Where the prefetched region ends: the snapshotter's rule (no-prefetch landmark first)."""
    try:
        toc = json.loads(toc_json, object_pairs_hook=_entry_fields)
    except (ValueError, RecursionError) as error:
        raise EstargzBlobError(f"{TOC_NAME} is not valid JSON: {error}") from None
    if not isinstance(toc, dict) or toc.get("version") != 1 or not isinstance(toc.get("entries"), list):
        raise EstargzBlobError(f"{TOC_NAME} is not an eStargz TOC (an object with version 1 and a list of entries)")
    landmark = None
    for entry in toc["entries"]:
        name = entry.get("name") if isinstance(entry, dict) else None
        if not isinstance(name, str):
            continue
        name = clean_name(name)
        if name == NO_PREFETCH_LANDMARK:
            return 0
        if name == PREFETCH_LANDMARK and landmark is None:
            landmark = entry
    if landmark is None:
        return 0
    offset = landmark.get("offset", 0)  # writers omit a zero offset
    if isinstance(offset, bool) or not isinstance(offset, int) or not 0 <= offset < toc_offset:
        raise EstargzBlobError(f"{PREFETCH_LANDMARK} has offset {offset!r}, not a position inside the blob's data "
                               f"(before the TOC at byte {toc_offset})")
    return offset
