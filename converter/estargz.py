"""eStargz layer writer: converts one tar / tar+gzip / tar+zstd layer into an eStargz blob.

The blob is a multi-member gzip stream (see /work/shared/estargz.md): a member starts at offset 0,
before every non-empty file payload and at each chunk of it; the TOC `stargz.index.json` sits in
its own member and the 51-byte footer points at it. `.no.prefetch.landmark` comes first, or the
prioritized files (with their parent directories and hardlink targets) followed by
`.prefetch.landmark`.

How it stays fast and small:
- Member boundaries depend only on the input and the options, so members are independent jobs
  that a thread pool compresses in parallel (zlib-ng and isal release the GIL); the output is
  written in order, and bytes and TOC digest never depend on the number of workers.
- Memory is bounded by a window of in-flight members, not by the layer: payloads are read one
  chunk at a time, TOC entries are spooled to a file in the work directory as they are produced
  and get their compressed offsets at the end, and a member made of an unusually long run of
  headers (thousands of directories or links in a row) is compressed as it grows.
- Entries are re-serialized as PAX tar headers from what `tarfile` parsed, so GNU and PAX long
  names, xattrs, devices and big ids survive.

Duplicate names keep the last occurrence at its later position, as the reference does. That needs
knowing the future, so without prioritized files the layer is converted in one pass that bails
out on the first duplicate and starts over with a plan (the destination is rewound); with
prioritized files a planning pass comes first. Passes after the first re-read the source: by
seeking if it can, else from a copy of the compressed input spooled in the work directory.
"""

import base64
import hashlib
import json
import math
import os
import shutil
import struct
import tarfile
import tempfile
import time
from array import array
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import BinaryIO

import isal
from isal import isal_zlib
from zlib_ng import zlib_ng

from . import __version__
from .errors import ConversionError, HostileArchiveError, InvalidOptionsError, PrioritizedFileError
from .tarinput import LayerReader, clean_name

TOC_NAME = "stargz.index.json"
PREFETCH_LANDMARK = ".prefetch.landmark"
NO_PREFETCH_LANDMARK = ".no.prefetch.landmark"
LANDMARK_CONTENTS = b"\x0f"
FOOTER_SIZE = 51
COMPRESSORS = {"zlib-ng": range(0, 10), "isal": range(0, 4)}
_RESERVED_NAMES = frozenset({TOC_NAME, PREFETCH_LANDMARK, NO_PREFETCH_LANDMARK})
_KINDS = {
    tarfile.REGTYPE: "reg",
    tarfile.LNKTYPE: "hardlink",
    tarfile.SYMTYPE: "symlink",
    tarfile.DIRTYPE: "dir",
    tarfile.CHRTYPE: "char",
    tarfile.BLKTYPE: "block",
    tarfile.FIFOTYPE: "fifo",
}
# Headers accumulated in one member beyond this are compressed as they come instead of queued.
_SPILL_BYTES = 1 << 20
# Uncompressed bytes allowed in members queued for or inside the thread pool.
_MAX_INFLIGHT_BYTES = 48 << 20
_MAX_INFLIGHT_JOBS = 256
_COPY_BLOCK = 1 << 20


def _default_workers() -> int:
    """CPUs this process may run on (a container's cpuset, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class LayerOptions:
    """How to convert a layer. Only `chunk_size`, `level`, `compressor` and `prioritized_files`
    change the output bytes; `workers` and `max_uncompressed_bytes` never do."""

    chunk_size: int = 4 << 20
    level: int = 9
    prioritized_files: tuple[str, ...] = ()
    compressor: str = "zlib-ng"  # or "isal": the fast mode (levels 0-3)
    max_uncompressed_bytes: int = 64 << 30
    workers: int = field(default_factory=_default_workers)

    def __post_init__(self):
        object.__setattr__(self, "prioritized_files", tuple(self.prioritized_files))
        if self.compressor not in COMPRESSORS:
            raise InvalidOptionsError(
                f"unknown compressor {self.compressor!r}; choose one of {', '.join(sorted(COMPRESSORS))}")
        levels = COMPRESSORS[self.compressor]
        if not isinstance(self.level, int) or self.level not in levels:
            raise InvalidOptionsError(
                f"level {self.level!r} is not valid for {self.compressor}; use {levels.start}-{levels.stop - 1}")
        if not isinstance(self.chunk_size, int) or not 512 <= self.chunk_size <= 1 << 30:
            raise InvalidOptionsError(f"chunk size {self.chunk_size!r} must be between 512 bytes and 1 GiB")
        if not isinstance(self.max_uncompressed_bytes, int) or self.max_uncompressed_bytes <= 0:
            raise InvalidOptionsError("the uncompressed size limit must be a positive number of bytes")
        if not isinstance(self.workers, int) or self.workers < 1:
            raise InvalidOptionsError("workers must be at least 1")
        for path in self.prioritized_files:
            if not isinstance(path, str) or not clean_name(path):
                raise InvalidOptionsError(f"prioritized path {path!r} does not name a file in the layer")

    @property
    def normalized_prioritized_files(self) -> tuple[str, ...]:
        """The prioritized paths as readers see them (`a/b`, `/a/b` and `./a/b` are the same)."""
        return tuple(clean_name(path) for path in self.prioritized_files)

    def cache_key(self) -> str:
        """A stable string naming everything that determines the output bytes for a given input."""
        library = zlib_ng.ZLIBNG_VERSION if self.compressor == "zlib-ng" else isal.ISAL_VERSION
        prioritized = "-"
        if self.prioritized_files:
            joined = "\n".join(self.normalized_prioritized_files).encode("utf-8", "surrogateescape")
            prioritized = "sha256:" + hashlib.sha256(joined).hexdigest()
        return (f"apparate-converter={__version__};format=estargz;compressor={self.compressor}/{library};"
                f"level={self.level};chunk-size={self.chunk_size};prioritized={prioritized}")


@dataclass(frozen=True)
class LayerResult:
    """What the image manifest and config need about a converted layer."""

    digest: str  # sha256 of the blob: the layer descriptor's digest
    size: int  # blob size in bytes
    diff_id: str  # sha256 of the decompressed blob: the config's rootfs.diff_ids entry
    toc_digest: str  # containerd.io/snapshot/stargz/toc.digest annotation
    uncompressed_size: int  # io.containers.estargz.uncompressed-size annotation


def convert_layer(
    source: BinaryIO,
    destination: BinaryIO,
    options: LayerOptions = LayerOptions(),  # noqa: B008 - frozen dataclass, safe as a default
    progress: Callable[[int, int], None] | None = None,
    workdir: str | None = None,
) -> LayerResult:
    """Convert the layer read from `source` into an eStargz blob written to `destination`.

    `progress(bytes_read, bytes_written)` receives cumulative, never decreasing counts of source
    bytes consumed and blob bytes written. Temporary files go to a private directory under
    `workdir` (default: the system temp dir) that is removed on return and on error.
    Raises a `ConversionError` subclass for anything wrong with the layer or the options.
    """
    with ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="apparate-estargz-", dir=workdir))
        pool = ThreadPoolExecutor(max_workers=options.workers, thread_name_prefix="estargz")
        stack.callback(pool.shutdown, wait=True, cancel_futures=True)
        source_passes = stack.enter_context(_ReplayableSource(source, tmp))
        return _Conversion(source_passes, destination, options, progress, tmp, pool).run()
    raise AssertionError("unreachable")  # pragma: no cover - ExitStack does not swallow exceptions


class _DuplicateName(Exception):
    """Internal: the single-pass conversion met a name twice and must start over with a plan."""


@dataclass
class _Plan:
    drop: set[int]  # ordinals of entries superseded by a later entry with the same name
    front: list[int]  # ordinals emitted before the prefetch landmark, in order


class _Conversion:
    def __init__(self, source, destination, options, progress, tmp, pool):
        self._source = source
        self._destination = destination
        self._options = options
        self._tmp = tmp
        self._pool = pool
        self._progress = _MonotonicProgress(progress)

    def run(self) -> LayerResult:
        prioritized = self._options.normalized_prioritized_files
        if not prioritized and _rewindable(self._destination):
            start = self._destination.tell()
            try:
                return self._emit(None)
            except _DuplicateName:
                self._destination.seek(start)
                self._destination.truncate()
        return self._emit(self._plan(prioritized))

    def _plan(self, prioritized: tuple[str, ...]) -> _Plan:
        """Index pass: find superseded duplicates and the order of the prioritized entries."""
        last: dict[str, int] = {}
        hardlinks: dict[str, str] = {}
        drop: set[int] = set()
        stream, tee = self._source.open()
        reader = LayerReader(stream, self._options.max_uncompressed_bytes, tee)
        for ordinal, info in enumerate(reader.entries()):
            name = clean_name(info.name)
            if name in _RESERVED_NAMES:
                continue
            if name in last:
                drop.add(last[name])
            last[name] = ordinal
            if info.islnk():
                hardlinks[name] = clean_name(info.linkname)
            else:
                hardlinks.pop(name, None)
        reader.finish()
        return _Plan(drop, _front_order(prioritized, last, hardlinks))

    def _emit(self, plan: _Plan | None) -> LayerResult:
        """Conversion pass. Without a plan, raise _DuplicateName on the first repeated name."""
        front_store = _FrontStore(self._tmp) if plan and plan.front else None
        if front_store:
            self._collect_front(plan, front_store)
        stream, tee = self._source.open()
        reader = LayerReader(stream, self._options.max_uncompressed_bytes, tee)
        writer = _BlobWriter(self._destination, self._options, self._pool, self._tmp,
                             lambda written: self._progress(reader.stream.bytes_in, written))
        try:
            if front_store:
                for ordinal in plan.front:
                    info, read = front_store.open(ordinal)
                    writer.add(info, read)
                writer.add(_landmark(PREFETCH_LANDMARK), _bytes_reader(LANDMARK_CONTENTS))
                skip = plan.drop | set(plan.front)
            else:
                writer.add(_landmark(NO_PREFETCH_LANDMARK), _bytes_reader(LANDMARK_CONTENTS))
                skip = plan.drop if plan else set()
            seen: set[int] = set()
            for ordinal, info in enumerate(reader.entries()):
                name = clean_name(info.name)
                if name in _RESERVED_NAMES or ordinal in skip:
                    continue
                if plan is None:
                    # Hashes keep memory small; a collision only costs the planned second pass.
                    key = hash(name)
                    if key in seen:
                        raise _DuplicateName(name)
                    seen.add(key)
                writer.add(info, reader.read)
            reader.finish()
            return writer.finish()
        finally:
            writer.close()
            if front_store:
                front_store.close()

    def _collect_front(self, plan: _Plan, store: "_FrontStore") -> None:
        """Copy the prioritized entries (header and payload) aside; they are emitted first."""
        wanted = set(plan.front)
        stream, tee = self._source.open()
        reader = LayerReader(stream, self._options.max_uncompressed_bytes, tee)
        for ordinal, info in enumerate(reader.entries()):
            if ordinal in wanted:
                store.add(ordinal, info, reader.read)
        reader.finish()


def _front_order(prioritized: tuple[str, ...], last: dict[str, int], hardlinks: dict[str, str]) -> list[int]:
    """Ordinals of the prioritized entries, each preceded by its not yet moved parent directories
    and, for a hardlink, its target (reference `moveRec`; parents missing from the tar are skipped)."""
    order: list[int] = []
    moved: set[str] = set()

    def move(name: str, required_by: str | None) -> None:
        chain = [name]
        while name in hardlinks and hardlinks[name] not in chain:
            name = hardlinks[name]
            chain.append(name)
        for index, member in enumerate(reversed(chain)):
            if member in moved:
                continue
            if member not in last:
                if index == 0 and len(chain) > 1:
                    raise PrioritizedFileError(
                        f"prioritized hardlink {chain[-2]!r} points at {member!r}, which is not in the layer")
                raise PrioritizedFileError(f"prioritized file {required_by or member!r} is not in the layer")
            parts = member.split("/")
            for depth in range(len(parts)):
                parent = "/".join(parts[:depth])
                if parent not in moved and parent in last:
                    moved.add(parent)
                    order.append(last[parent])
            moved.add(member)
            order.append(last[member])

    for path in prioritized:
        move(path, None)
    return order


class _FrontStore:
    """Prioritized entries kept aside in a spool file until they are emitted."""

    def __init__(self, tmp: str):
        self._file = open(os.path.join(tmp, "prioritized"), "w+b")  # noqa: SIM115 - closed by close()
        self._entries: dict[int, tuple[tarfile.TarInfo, int]] = {}

    def add(self, ordinal: int, info: tarfile.TarInfo, read: Callable[[int], bytes]) -> None:
        offset = self._file.tell()
        remaining = info.size if info.isreg() else 0
        while remaining:
            data = read(min(remaining, _COPY_BLOCK))
            if not data:
                raise ConversionError(f"payload of {info.name!r} ended early")
            self._file.write(data)
            remaining -= len(data)
        self._entries[ordinal] = (info, offset)

    def open(self, ordinal: int) -> tuple[tarfile.TarInfo, Callable[[int], bytes]]:
        info, offset = self._entries[ordinal]
        position = offset

        def read(n: int) -> bytes:
            nonlocal position
            self._file.seek(position)
            data = self._file.read(n)
            position += len(data)
            return data

        return info, read

    def close(self) -> None:
        self._file.close()


class _ReplayableSource:
    """Hands out the source once per pass: seeking back if possible, else replaying a spooled copy."""

    def __init__(self, stream: BinaryIO, tmp: str):
        self._stream = stream
        self._tmp = tmp
        self._seekable = _seekable(stream)
        self._start = stream.tell() if self._seekable else 0
        self._copy: BinaryIO | None = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self._copy is not None:
            self._copy.close()

    def open(self) -> tuple[BinaryIO, BinaryIO | None]:
        """Return (stream to read, file to copy what is read into, if any)."""
        if self._seekable:
            self._stream.seek(self._start)
            return self._stream, None
        if self._copy is None:
            self._copy = open(os.path.join(self._tmp, "source"), "w+b")  # noqa: SIM115 - closed in __exit__
            return self._stream, self._copy
        self._copy.seek(0, os.SEEK_END)
        shutil.copyfileobj(self._stream, self._copy, _COPY_BLOCK)  # what the interrupted pass left unread
        self._copy.seek(0)
        return self._copy, None


class _MonotonicProgress:
    def __init__(self, callback):
        self._callback = callback
        self._read = self._written = -1

    def __call__(self, read: int, written: int) -> None:
        if self._callback is None:
            return
        read, written = max(read, self._read), max(written, self._written)
        if (read, written) != (self._read, self._written):
            self._read, self._written = read, written
            self._callback(read, written)


class _Deflate:
    """Makes gzip members with the chosen deflate library: MTIME 0, OS 255, no file name."""

    def __init__(self, compressor: str, level: int):
        if compressor == "zlib-ng":
            self._module = zlib_ng
            xfl = 2 if level == 9 else 4 if level == 1 else 0
        else:
            self._module = isal_zlib
            xfl = 4 if level <= 1 else 0
        self._level = level
        self.header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00" + bytes([xfl]) + b"\xff"

    def compressobj(self):
        return self._module.compressobj(self._level, self._module.DEFLATED, -15)

    def member(self, pieces: list[bytes]) -> bytes:
        """Compress `pieces` into one complete gzip member (runs in the thread pool)."""
        compressor = self.compressobj()
        out = [self.header]
        crc = size = 0
        for piece in pieces:
            out.append(compressor.compress(piece))
            crc = zlib_ng.crc32(piece, crc)
            size += len(piece)
        out.append(compressor.flush())
        out.append(struct.pack("<II", crc, size & 0xFFFFFFFF))
        return b"".join(out)


class _StreamingMember:
    """A gzip member compressed as its bytes arrive, written to `sink` (a spool file or the blob)."""

    def __init__(self, deflate: _Deflate, sink: Callable[[bytes], object]):
        self._compressor = deflate.compressobj()
        self._sink = sink
        self._crc = self._size = 0
        sink(deflate.header)

    def write(self, data: bytes) -> None:
        self._crc = zlib_ng.crc32(data, self._crc)
        self._size += len(data)
        out = self._compressor.compress(data)
        if out:
            self._sink(out)

    def finish(self) -> None:
        self._sink(self._compressor.flush() + struct.pack("<II", self._crc, self._size & 0xFFFFFFFF))


class _TocSpool:
    """TOC entries spooled as lines `member-index TAB json-before-offset TAB json-after-offset`;
    compressed offsets are filled in once every member has been written."""

    def __init__(self, tmp: str):
        self._path = os.path.join(tmp, "toc-entries")
        self._file = open(self._path, "w+", encoding="ascii")  # noqa: SIM115 - closed by close()

    def add(self, member: int, before: dict, after: dict) -> None:
        self._file.write(f"{member}\t{_json_body(before)}\t{_json_body(after)}\n")

    def render(self, offsets: array, out: BinaryIO) -> None:
        """Write the TOC JSON (compact, no trailing newline) to `out`."""
        self._file.seek(0)
        out.write(b'{"version":1,"entries":[')
        separator = b""
        for line in self._file:
            member, before, after = line.rstrip("\n").split("\t")
            parts = [before]
            if member != "-1":
                parts.append(f'"offset":{offsets[int(member)]}')
            if after:
                parts.append(after)
            out.write(separator + ("{" + ",".join(parts) + "}").encode("ascii"))
            separator = b","
        out.write(b"]}")

    def close(self) -> None:
        self._file.close()


def _json_body(mapping: dict) -> str:
    return json.dumps(mapping, separators=(",", ":"), ensure_ascii=True)[1:-1] if mapping else ""


class _BlobWriter:
    """Lays tar entries out as eStargz gzip members, compressed in a thread pool, written in order."""

    def __init__(self, out: BinaryIO, options: LayerOptions, pool: ThreadPoolExecutor, tmp: str,
                 progress: Callable[[int], None]):
        self._out = out
        self._chunk_size = options.chunk_size
        self._deflate = _Deflate(options.compressor, options.level)
        self._pool = pool
        self._tmp = tmp
        self._progress = progress
        self._toc = _TocSpool(tmp)
        self._blob_hash = hashlib.sha256()
        self._diff_hash = hashlib.sha256()
        self._position = 0  # compressed bytes written
        self._uncompressed = 0
        self._offsets = array("q")  # compressed offset of each member written so far
        self._member = 0  # index of the member being filled
        self._pieces: list[bytes] = []
        self._pending = 0  # bytes in _pieces
        self._headers = 0  # non-payload bytes in the current member
        self._streaming: _StreamingMember | None = None
        self._spill: BinaryIO | None = None
        self._inflight: deque[tuple[Future, int]] = deque()
        self._inflight_bytes = 0
        self._budget = max(2 * self._chunk_size + 2 * _SPILL_BYTES,
                           min(_MAX_INFLIGHT_BYTES, 2 * options.workers * self._chunk_size))
        self._unames: dict[int, str] = {}
        self._gnames: dict[int, str] = {}

    # -- entries -------------------------------------------------------------------------------

    def add(self, info: tarfile.TarInfo, read: Callable[[int], bytes]) -> None:
        kind = _KINDS[info.type]
        header = info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
        name = info.get_info()["name"]
        before: dict = {"name": name, "type": kind}
        if kind == "reg" and info.size:
            before["size"] = info.size
        modtime = _modtime(info)
        if modtime:
            before["modtime"] = modtime
        if kind in ("symlink", "hardlink"):
            before["linkName"] = info.linkname
        for key, value in (("mode", info.mode), ("uid", info.uid), ("gid", info.gid)):
            if value:
                before[key] = value
        user = _name_if_changed(self._unames, info.uid, info.uname)
        if user:
            before["userName"] = user
        group = _name_if_changed(self._gnames, info.gid, info.gname)
        if group:
            before["groupName"] = group
        after: dict = {}
        if kind in ("char", "block"):
            if info.devmajor:
                after["devMajor"] = info.devmajor
            if info.devminor:
                after["devMinor"] = info.devminor
        xattrs = _xattrs(info)
        if xattrs:
            after["xattrs"] = xattrs

        self._append(header, payload=False)
        if kind != "reg":
            self._toc.add(-1, before, after)
            return
        if not info.size:
            after["digest"] = "sha256:" + hashlib.sha256(b"").hexdigest()
            self._toc.add(-1, before, after)
            return
        self._add_payload(info, read, before, after)

    def _add_payload(self, info, read, before: dict, after: dict) -> None:
        size = info.size
        whole = hashlib.sha256() if size > self._chunk_size else None
        chunks = []  # (member, chunk offset, chunk size or 0 for the last, digest)
        done = 0
        while done < size:
            length = min(self._chunk_size, size - done)
            data = read(length)
            if len(data) != length:
                raise HostileArchiveError(f"payload of {info.name!r} is shorter than its declared {size} bytes")
            self._close_member()
            digest = "sha256:" + hashlib.sha256(data).hexdigest()
            if whole is not None:
                whole.update(data)
            chunks.append((self._member, done, length if done + length < size else 0, digest))
            self._append(data, payload=True)
            done += length
        self._append(bytes(-size % 512), payload=False)

        member, _, chunk_length, chunk_digest = chunks[0]
        after["digest"] = "sha256:" + whole.hexdigest() if whole is not None else chunk_digest
        if chunk_length:
            after["chunkSize"] = chunk_length
        after["chunkDigest"] = chunk_digest
        self._toc.add(member, before, after)
        for member, chunk_offset, chunk_length, chunk_digest in chunks[1:]:
            chunk = {"chunkOffset": chunk_offset}
            if chunk_length:
                chunk["chunkSize"] = chunk_length
            chunk["chunkDigest"] = chunk_digest
            self._toc.add(member, {"name": before["name"], "type": "chunk"}, chunk)

    # -- members -------------------------------------------------------------------------------

    def _append(self, data: bytes, payload: bool) -> None:
        if not data:
            return
        self._diff_hash.update(data)
        self._uncompressed += len(data)
        if self._streaming is not None:
            self._streaming.write(data)
            return
        self._pieces.append(data)
        self._pending += len(data)
        if not payload:
            self._headers += len(data)
            if self._headers > _SPILL_BYTES:
                self._start_streaming()

    def _start_streaming(self) -> None:
        """A long run of headers: compress this member as it grows, into a spool file."""
        self._spill = tempfile.SpooledTemporaryFile(max_size=8 << 20, dir=self._tmp)  # noqa: SIM115
        self._streaming = _StreamingMember(self._deflate, self._spill.write)
        for piece in self._pieces:
            self._streaming.write(piece)
        self._pieces, self._pending = [], 0

    def _close_member(self) -> None:
        if self._streaming is not None:
            self._streaming.finish()
            future: Future = Future()
            future.set_result(self._spill)
            self._inflight.append((future, 0))
            self._streaming = self._spill = None
        else:
            self._inflight.append((self._pool.submit(self._deflate.member, self._pieces), self._pending))
            self._inflight_bytes += self._pending
        self._pieces, self._pending, self._headers = [], 0, 0
        self._member += 1
        while self._inflight and (self._inflight_bytes > self._budget or len(self._inflight) > _MAX_INFLIGHT_JOBS):
            self._write_oldest()

    def _write_oldest(self) -> None:
        future, size = self._inflight.popleft()
        self._inflight_bytes -= size
        result = future.result()
        self._offsets.append(self._position)
        if isinstance(result, bytes):
            self._emit(result)
        else:
            result.seek(0)
            while block := result.read(_COPY_BLOCK):
                self._emit(block)
            result.close()

    def _emit(self, data: bytes) -> None:
        self._out.write(data)
        self._blob_hash.update(data)
        self._position += len(data)
        self._progress(self._position)

    # -- TOC and footer ------------------------------------------------------------------------

    def finish(self) -> LayerResult:
        self._close_member()
        while self._inflight:
            self._write_oldest()
        toc_offset = self._position
        toc_hash = hashlib.sha256()
        with open(os.path.join(self._tmp, "toc.json"), "w+b") as toc_json:
            self._toc.render(self._offsets, toc_json)
            toc_size = toc_json.tell()
            toc_json.seek(0)
            info = tarfile.TarInfo(TOC_NAME)
            info.size, info.mode, info.mtime = toc_size, 0, 0
            member = _StreamingMember(self._deflate, self._emit)
            self._write_toc(member, info.tobuf(tarfile.PAX_FORMAT, "utf-8"))
            while block := toc_json.read(_COPY_BLOCK):
                toc_hash.update(block)
                self._write_toc(member, block)
            self._write_toc(member, bytes(-toc_size % 512) + bytes(1024))  # padding, end-of-archive marker
            member.finish()
        self._emit(_footer(toc_offset))
        return LayerResult(
            digest="sha256:" + self._blob_hash.hexdigest(),
            size=self._position,
            diff_id="sha256:" + self._diff_hash.hexdigest(),
            toc_digest="sha256:" + toc_hash.hexdigest(),
            uncompressed_size=self._uncompressed,
        )

    def _write_toc(self, member: _StreamingMember, data: bytes) -> None:
        member.write(data)
        self._diff_hash.update(data)
        self._uncompressed += len(data)

    def close(self) -> None:
        """Release spool files; in-flight jobs are abandoned to the pool's shutdown."""
        self._toc.close()
        if self._spill is not None:
            self._spill.close()
        for future, _ in self._inflight:
            future.cancel()
        self._inflight.clear()


def _footer(toc_offset: int) -> bytes:
    """The 51-byte eStargz footer: an empty stored gzip member whose Extra field holds the TOC offset."""
    subfield = b"%016xSTARGZ" % toc_offset
    extra = b"SG" + struct.pack("<H", len(subfield)) + subfield
    return (b"\x1f\x8b\x08\x04\x00\x00\x00\x00\x00\xff" + struct.pack("<H", len(extra)) + extra
            + b"\x01\x00\x00\xff\xff" + bytes(8))


def _landmark(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(LANDMARK_CONTENTS), 0, 0
    return info


def _bytes_reader(data: bytes) -> Callable[[int], bytes]:
    position = 0

    def read(n: int) -> bytes:
        nonlocal position
        chunk = data[position:position + n]
        position += len(chunk)
        return chunk

    return read


def _modtime(info: tarfile.TarInfo) -> str | None:
    """UTC RFC 3339 rounded to the second; None for the zero time (reference `formatModtime`)."""
    mtime = info.mtime
    if int(mtime) == 0:
        return None
    try:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(math.floor(mtime + 0.5)))
    except (OverflowError, OSError, ValueError):
        raise HostileArchiveError(f"entry {info.name!r} has an out-of-range modification time {mtime!r}") from None


def _name_if_changed(last: dict[int, str], ident: int, name: str) -> str | None:
    """User/group names are written only when they differ from the last one written for that id."""
    if not name or last.get(ident) == name:
        return None
    last[ident] = name
    return name


def _xattrs(info: tarfile.TarInfo) -> dict[str, str]:
    prefix = "SCHILY.xattr."
    return {
        key[len(prefix):]: base64.b64encode(value.encode("utf-8", "surrogateescape")).decode("ascii")
        for key, value in sorted(info.pax_headers.items())
        if key.startswith(prefix)
    }


def _seekable(stream) -> bool:
    try:
        return bool(stream.seekable()) and stream.tell() >= 0
    except (AttributeError, OSError, ValueError):
        return False


def _rewindable(stream) -> bool:
    return _seekable(stream) and hasattr(stream, "truncate")

