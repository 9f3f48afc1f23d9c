"""Helpers for the eStargz tests: build input layers with tarfile, take blobs apart independently."""

import gzip
import hashlib
import io
import json
import struct
import tarfile
import zlib
from dataclasses import dataclass, field

from converter.estargz import LayerOptions, LayerResult, convert_layer

LANDMARKS = {".prefetch.landmark", ".no.prefetch.landmark"}
TOC_NAME = "stargz.index.json"


@dataclass
class Entry:
    """One input entry; `build_tar` turns a list of these into tar bytes."""

    name: str
    type: bytes = tarfile.REGTYPE
    data: bytes = b""
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    uname: str = ""
    gname: str = ""
    mtime: float = 1700000000
    linkname: str = ""
    devmajor: int = 0
    devminor: int = 0
    pax: dict = field(default_factory=dict)


def build_tar(entries: list[Entry], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for entry in entries:
            info = tarfile.TarInfo(entry.name)
            info.type = entry.type
            info.size = len(entry.data) if entry.type == tarfile.REGTYPE else 0
            info.mode, info.uid, info.gid = entry.mode, entry.uid, entry.gid
            info.uname, info.gname, info.mtime = entry.uname, entry.gname, entry.mtime
            info.linkname, info.devmajor, info.devminor = entry.linkname, entry.devmajor, entry.devminor
            info.pax_headers = dict(entry.pax)
            tar.addfile(info, io.BytesIO(entry.data) if info.size else None)
    return buf.getvalue()


def convert(layer: bytes, **options) -> tuple[bytes, LayerResult]:
    out = io.BytesIO()
    result = convert_layer(io.BytesIO(layer), out, LayerOptions(**options))
    return out.getvalue(), result


def tree(tar_bytes: bytes, skip_estargz: bool = False) -> list[tuple]:
    """Everything observable about each entry of a (possibly compressed) tar, in archive order."""
    rows = []
    with tarfile.open(fileobj=io.BytesIO(tar_bytes), mode="r:*") as tar:
        for info in tar:
            if skip_estargz and info.name in LANDMARKS | {TOC_NAME}:
                continue
            data = tar.extractfile(info).read() if info.isreg() else b""
            xattrs = {k: v for k, v in info.pax_headers.items() if k.startswith("SCHILY.xattr.")}
            rows.append((info.name, info.type, info.size if info.isreg() else 0, info.mode, info.uid, info.gid,
                         info.uname, info.gname, info.mtime, info.linkname, info.devmajor, info.devminor,
                         xattrs, hashlib.sha256(data).hexdigest()))
    return rows


def member_starts(blob: bytes) -> list[int]:
    """Offsets where gzip members start, found by decoding the blob member by member."""
    starts, position = [], 0
    while position < len(blob):
        starts.append(position)
        decoder = zlib.decompressobj(31)
        decoder.decompress(blob[position:])
        assert decoder.eof, f"member at {position} is incomplete"
        position = len(blob) - len(decoder.unused_data)
    return starts


def footer_toc_offset(blob: bytes) -> int:
    footer = blob[-51:]
    assert footer[:10] == b"\x1f\x8b\x08\x04\x00\x00\x00\x00\x00\xff"
    assert footer[10:12] == struct.pack("<H", 26) and footer[12:14] == b"SG" and footer[14:16] == struct.pack("<H", 22)
    assert footer[32:38] == b"STARGZ"
    assert footer[38:] == b"\x01\x00\x00\xff\xff" + bytes(8)
    return int(footer[16:32], 16)


def read_toc(blob: bytes) -> tuple[dict, bytes]:
    """Parse the TOC the way readers do: one member at the footer's offset, first tar entry."""
    offset = footer_toc_offset(blob)
    decoder = zlib.decompressobj(31)
    raw = decoder.decompress(blob[offset:-51])
    assert decoder.eof and decoder.unused_data == b"", "the TOC must be exactly one member before the footer"
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
        first = tar.next()
        assert first.name == TOC_NAME
        toc_json = tar.extractfile(first).read()
    return json.loads(toc_json), toc_json


def read_range(blob: bytes, offset: int, length: int) -> bytes:
    """What a lazy reader gets: decompress (across members) from `offset`, keep `length` bytes."""
    out = b""
    position = offset
    while len(out) < length:
        decoder = zlib.decompressobj(31)
        out += decoder.decompress(blob[position:])
        position = len(blob) - len(decoder.unused_data)
    return out[:length]


def check_chunks(blob: bytes) -> int:
    """Read every reg/chunk payload back by its offset and compare with chunkDigest; count them."""
    toc, _ = read_toc(blob)
    starts = set(member_starts(blob))
    checked, sizes = 0, {}
    for entry in toc["entries"]:
        if entry["type"] == "reg":
            sizes[entry["name"]] = entry.get("size", 0)
        if entry["type"] not in ("reg", "chunk") or (entry["type"] == "reg" and not entry.get("size")):
            assert "offset" not in entry
            continue
        assert entry["offset"] in starts, f"{entry['name']}: offset {entry['offset']} is not a member start"
        size = sizes[entry["name"]]
        chunk_offset = entry.get("chunkOffset", 0)
        length = entry.get("chunkSize") or size - chunk_offset
        data = read_range(blob, entry["offset"], length)
        assert "sha256:" + hashlib.sha256(data).hexdigest() == entry["chunkDigest"], entry
        checked += 1
    return checked


def gunzip(blob: bytes) -> bytes:
    return gzip.decompress(blob)
