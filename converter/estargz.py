"""eStargz layer writer: converts one tar / tar+gzip / tar+zstd layer into an eStargz blob.

The blob is a multi-member gzip stream (see /work/shared/estargz.md): a member starts at offset 0,
before every non-empty file payload and at each chunk of it; the TOC `stargz.index.json` sits in
its own member and the 51-byte footer points at it. `.no.prefetch.landmark` comes first, or the
prioritized files (with their parent directories and hardlink targets) followed by
`.prefetch.landmark`.

How it stays fast and small:
- Member boundaries depend only on the input and the options, so members are independent jobs:
  batches of consecutive members (at least 1 MiB, so small files don't pay per-job overhead) are
  compressed in a thread pool, which also hashes each member's chunk (zlib-ng, isal and hashlib
  release the GIL). Digests that must see the stream in order run on two threads of their own:
  the diffID and whole-file digests on one, the blob digest on the other. Input decompression runs
  ahead on another (see `tarinput`), so the main thread only parses tar headers and cuts members.
  Output is written in order, and bytes and TOC digest never depend on the number of workers.
- Memory is bounded by a window of in-flight members, not by the layer: payloads are read one
  chunk at a time, the hashing threads block the producer past a fixed backlog, TOC entries and
  the per-member offsets and chunk digests are spooled to files in the work directory and joined
  when the TOC is rendered, and a member made of an unusually long run of headers (thousands of
  directories or links in a row) is compressed as it grows.
- Entries are re-serialized as PAX tar headers from what `tarfile` parsed, so GNU and PAX long
  names, xattrs, devices and big ids survive.

Duplicate names keep the last occurrence at its later position, as the reference does. That needs
knowing the future, so without prioritized files, or with ones the layer need not have (the image
converter asks each layer for the files that may live in it, and most layers hold none), the layer
is converted in one pass that bails out on the first duplicate or prioritized file and starts over
with a plan (the destination is rewound); with required prioritized files a planning pass comes
first. Passes after the first re-read the source: by seeking if it can, else from a copy of the
compressed input spooled in the work directory.
"""

import base64
import functools
import hashlib
import json
import math
import os
import shutil
import struct
import tarfile
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from functools import partial
from typing import BinaryIO

import isal
from isal import isal_zlib
from zlib_ng import zlib_ng

from . import __version__
from .errors import ConversionError, HostileArchiveError, InvalidOptionsError, PrioritizedFileError
from .overlay import LayerPaths
from .tarinput import LayerReader, clean_name

TOC_NAME = "stargz.index.json"
PREFETCH_LANDMARK = ".prefetch.landmark"
NO_PREFETCH_LANDMARK = ".no.prefetch.landmark"
LANDMARK_CONTENTS = b"\x0f"
FOOTER_SIZE = 51
COMPRESSORS = {"zlib-ng": range(0, 10), "isal": range(0, 4)}
# Compression profiles chosen by name (per rule in the console, --fast in the CLI). "fast" is isal
# (ISA-L) level 2: about 3.5x the speed of "best" for ~3.7% bigger blobs, and byte-for-byte the
# same in every run and with any number of workers. Like any isal level, it gives other bytes on
# x86-64 CPUs without SSE4.2 (before 2008-2011); level 3 would also differ between AVX2 and
# AVX-512 machines. Cache keys name the variant (`_isal_variant`); docs/isal-determinism.md has
# the reproduction.
PROFILES = {"best": {"compressor": "zlib-ng", "level": 9}, "fast": {"compressor": "isal", "level": 2}}
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
# Consecutive members are compressed as one pool job until it holds this much (or this many
# members), so many small files don't pay the pool's per-job cost each.
_BATCH_BYTES = 1 << 20
_BATCH_MEMBERS = 512
# Bytes that may wait for one of the ordered hashing threads before the producer blocks.
_HASH_BACKLOG_BYTES = 16 << 20
_COPY_BLOCK = 1 << 20
_SMALL_PIECE = 64 << 10  # pieces below this are joined before hashing
# Per chunk member, in member order: its compressed offset and the sha256 of its chunk.
_MEMBER_RECORD = struct.Struct("<q32s")


def _default_workers() -> int:
    """CPUs this process may run on (a container's cpuset, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class LayerOptions:
    """How to convert a layer. Only `chunk_size`, `level`, `compressor` and `prioritized_files`
    change the output bytes (and, for isal, the CPU's generation: see `_isal_variant`); `workers`,
    `max_uncompressed_bytes` and `require_prioritized` never do.

    `require_prioritized`: every prioritized file must be in the layer (a missing one is a
    `PrioritizedFileError`); when False, those the layer lacks are skipped and the result's
    `prioritized` says which were placed. A conversion that succeeds either way gives the same bytes,
    so the flag is not part of the cache key.
    """

    chunk_size: int = 4 << 20
    level: int = 9
    prioritized_files: tuple[str, ...] = ()
    compressor: str = "zlib-ng"  # or "isal" (levels 0-3)
    max_uncompressed_bytes: int = 64 << 30
    workers: int = field(default_factory=_default_workers)
    require_prioritized: bool = True

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
        if not isinstance(self.require_prioritized, bool):
            raise InvalidOptionsError("require_prioritized must be True or False")

    @property
    def normalized_prioritized_files(self) -> tuple[str, ...]:
        """The prioritized paths as readers see them (`a/b`, `/a/b` and `./a/b` are the same)."""
        return tuple(clean_name(path) for path in self.prioritized_files)

    def cache_key(self) -> str:
        """A stable string naming everything that determines the output bytes for a given input."""
        if self.compressor == "zlib-ng":
            library = zlib_ng.ZLIBNG_VERSION
        else:  # the same isal release compresses differently on different CPUs
            library = f"{isal.ISAL_VERSION}+{_isal_variant(self.level)}"
        prioritized = "-"
        if self.prioritized_files:
            # "files-": entries cached before prioritization was per image ("sha256:...") don't
            # record which files they placed first, so they must never match.
            joined = "\n".join(self.normalized_prioritized_files).encode("utf-8", "surrogateescape")
            prioritized = "files-sha256:" + hashlib.sha256(joined).hexdigest()
        return (f"apparate-converter={__version__};format=estargz;compressor={self.compressor}/{library};"
                f"level={self.level};chunk-size={self.chunk_size};prioritized={prioritized}")


@functools.cache
def _isal_variant(level: int) -> str:
    """Which of isal's deflate implementations this CPU runs, as far as output bytes go.

    ISA-L picks its code at run time from the CPU's features, and the variants do not all give the
    same bytes: at levels 0-2 CPUs without SSE4.2 hash differently, and level 3 has separate
    algorithms for AVX2 and AVX-512 (docs/isal-determinism.md). A fixed probe, compressed once per
    level, tells them apart, so the cache never hands out a layer compressed by another variant.
    """
    text = b"".join(b"%d:%s " % (index, hashlib.sha256(b"%d" % (index % 97)).hexdigest()[: index % 23].encode())
                    for index in range(6000))
    noise = hashlib.shake_256(b"apparate isal probe").digest(16 << 10)
    probe = _Deflate("isal", level).member([text[:20000], noise, text])
    return "probe-" + hashlib.sha256(probe).hexdigest()[:12]


@dataclass(frozen=True)
class LayerResult:
    """What the image manifest and config need about a converted layer, and what it gains."""

    digest: str  # sha256 of the blob: the layer descriptor's digest
    size: int  # blob size in bytes
    diff_id: str  # sha256 of the decompressed blob: the config's rootfs.diff_ids entry
    toc_digest: str  # containerd.io/snapshot/stargz/toc.digest annotation
    uncompressed_size: int  # io.containers.estargz.uncompressed-size annotation
    # Bytes a lazy-pulling node fetches from this blob before a container can open any file: the
    # footer, the TOC member and the prioritized region [0, offset of .prefetch.landmark)
    # (see converter.startup, which computes the same figure from an existing blob).
    startup_bytes: int
    # The prioritized files placed before .prefetch.landmark, normalized, in the order given.
    prioritized: tuple[str, ...]


def convert_layer(
    source: BinaryIO,
    destination: BinaryIO,
    options: LayerOptions = LayerOptions(),  # noqa: B008 - frozen dataclass, safe as a default
    progress: Callable[[int, int], None] | None = None,
    workdir: str | None = None,
    paths: LayerPaths | None = None,
) -> LayerResult:
    """Convert the layer read from `source` into an eStargz blob written to `destination`.

    `progress(bytes_read, bytes_written)` receives cumulative, never decreasing counts of source
    bytes consumed and blob bytes written. Temporary files go to a private directory under
    `workdir` (default: the system temp dir) that is removed on return and on error. `paths`, if
    given, is shown every entry of the layer (the image converter learns there which layer holds,
    or hides, each of an image's prioritized files). Raises a `ConversionError` subclass for
    anything wrong with the layer or the options.
    """
    with ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="apparate-estargz-", dir=workdir))
        pool = ThreadPoolExecutor(max_workers=options.workers, thread_name_prefix="estargz")
        stack.callback(pool.shutdown, wait=True, cancel_futures=True)
        source_passes = stack.enter_context(_ReplayableSource(source, tmp))
        return _Conversion(source_passes, destination, options, progress, tmp, pool, paths).run()
    raise AssertionError("unreachable")  # pragma: no cover - ExitStack does not swallow exceptions


class _Replan(Exception):
    """Internal: the single-pass conversion met a name twice, or a prioritized file, and must
    start over with a plan."""


@dataclass
class _Plan:
    drop: set[int]  # ordinals of entries superseded by a later entry with the same name
    front: list[int]  # ordinals emitted before the prefetch landmark, in order
    prioritized: tuple[str, ...]  # the prioritized files among them


class _Conversion:
    def __init__(self, source, destination, options, progress, tmp, pool, paths):
        self._source = source
        self._destination = destination
        self._options = options
        self._tmp = tmp
        self._pool = pool
        self._progress = _MonotonicProgress(progress)
        self._paths = paths

    def run(self) -> LayerResult:
        prioritized = self._options.normalized_prioritized_files
        # One optimistic pass when nothing has to be looked up first: no prioritized files, or
        # ones that may be missing (most layers of an image hold none of them). It starts over
        # with a plan on a duplicate name or a prioritized file.
        optimistic = not prioritized or not self._options.require_prioritized
        if optimistic and _rewindable(self._destination):
            start = self._destination.tell()
            try:
                return self._emit(None, frozenset(prioritized))
            except _Replan:
                self._destination.seek(start)
                self._destination.truncate()
        return self._emit(self._plan(prioritized), frozenset())

    def _plan(self, prioritized: tuple[str, ...]) -> _Plan:
        """Index pass: find superseded duplicates and the order of the prioritized entries."""
        last: dict[str, int] = {}
        hardlinks: dict[str, str] = {}
        drop: set[int] = set()
        stream, tee = self._source.open()
        with LayerReader(stream, self._options.max_uncompressed_bytes, tee) as reader:
            for ordinal, info in enumerate(reader.entries()):
                name = clean_name(info.name)
                if self._paths is not None:
                    self._paths.see(name, info.isdir())
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
        if not self._options.require_prioritized:
            prioritized = tuple(path for path in prioritized if path in last)
        return _Plan(drop, _front_order(prioritized, last, hardlinks), prioritized)

    def _emit(self, plan: _Plan | None, replan_on: frozenset[str]) -> LayerResult:
        """Conversion pass. Without a plan, raise _Replan on the first repeated name or name in
        `replan_on`."""
        with ExitStack() as stack:
            front_store = None
            if plan and plan.front:
                front_store = _FrontStore(self._tmp)
                stack.callback(front_store.close)
                self._collect_front(plan, front_store)
            stream, tee = self._source.open()
            reader = stack.enter_context(LayerReader(stream, self._options.max_uncompressed_bytes, tee))
            writer = _BlobWriter(self._destination, self._options, self._pool, self._tmp,
                                 lambda written: self._progress(reader.stream.bytes_in, written))
            stack.callback(writer.close)
            if front_store:
                for ordinal in plan.front:
                    info, read = front_store.open(ordinal)
                    writer.add(info, read)
                writer.add_prefetch_landmark()
                skip = plan.drop | set(plan.front)
            else:
                writer.add(_landmark(NO_PREFETCH_LANDMARK), _bytes_reader(LANDMARK_CONTENTS))
                skip = plan.drop if plan else set()
            seen: set[int] = set()
            for ordinal, info in enumerate(reader.entries()):
                name = clean_name(info.name)
                if plan is None:
                    if self._paths is not None:
                        self._paths.see(name, info.isdir())
                    if name in replan_on:
                        raise _Replan(name)
                if name in _RESERVED_NAMES or ordinal in skip:
                    continue
                if plan is None:
                    # Hashes keep memory small; a collision only costs the planned second pass.
                    key = hash(name)
                    if key in seen:
                        raise _Replan(name)
                    seen.add(key)
                writer.add(info, reader.read)
            reader.finish()
            return writer.finish(plan.prioritized if plan and front_store else ())
        raise AssertionError("unreachable")  # pragma: no cover - ExitStack does not swallow exceptions

    def _collect_front(self, plan: _Plan, store: "_FrontStore") -> None:
        """Copy the prioritized entries (header and payload) aside; they are emitted first."""
        wanted = set(plan.front)
        stream, tee = self._source.open()
        with LayerReader(stream, self._options.max_uncompressed_bytes, tee) as reader:
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
        """Compress `pieces` into one complete gzip member."""
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

    def batch(self, members: list[tuple[list[bytes], bool]]) -> list[tuple[bytes, bytes | None]]:
        """Pool job: each member compressed on its own, with the sha256 of its leading chunk if
        it starts with one (hashlib and the deflate libraries release the GIL)."""
        return [(self.member(pieces), hashlib.sha256(pieces[0]).digest() if chunk else None)
                for pieces, chunk in members]


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


class _Sequencer:
    """Runs functions one at a time, in the order submitted, on a thread of its own.

    The digests that cover the stream in order (diffID, whole-file digests, blob digest) run here,
    off the thread that parses the tar; hashlib releases the GIL on large buffers. `submit` blocks
    while more than `backlog` bytes of work wait, so memory stays bounded. The first error is kept
    and raised by the next `submit` or by `join`.
    """

    def __init__(self, name: str, backlog: int):
        self._items: deque[tuple[Callable[[], object], int]] = deque()
        self._waiting = 0
        self._backlog = backlog
        self._closed = False
        self._error: BaseException | None = None
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, work: Callable[[], object], size: int) -> None:
        with self._cond:
            while self._waiting > self._backlog and self._error is None:
                self._cond.wait()
            if self._error is not None:
                raise self._error
            self._items.append((work, size))
            self._waiting += size
            self._cond.notify_all()

    def join(self) -> None:
        """Wait until everything submitted has run; raise the first error."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join()
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        """Drop the waiting work and stop the thread (after the item it is running, if any)."""
        with self._cond:
            self._items.clear()
            self._closed = True
            self._cond.notify_all()
        self._thread.join()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._items and not self._closed:
                    self._cond.wait()
                if not self._items:
                    return
                work, size = self._items[0]
            try:
                work()
            except BaseException as exc:  # handed to the submitting thread
                with self._cond:
                    self._error = exc
                    self._items.clear()
                    self._cond.notify_all()
                return
            with self._cond:
                if self._items:
                    self._items.popleft()
                    self._waiting -= size
                self._cond.notify_all()


class _TocSpool:
    """TOC entries spooled as lines `kind TAB before TAB head TAB tail` (JSON bodies without
    braces). Offsets and digests are only known once the members are compressed and hashed, so
    they are filled in when the TOC is rendered, around those parts:

    - ``-`` no payload: ``{before, head}``;
    - ``c`` a file in one chunk: ``{before, offset, head, digest, tail, chunkDigest}``, where the
      file's digest is its chunk's;
    - ``f`` the first chunk of a chunked file: the same, with the whole-file digest;
    - ``k`` a later chunk: ``{before, offset, head, tail, chunkDigest}``.

    Each ``c``/``f``/``k`` line takes the next member record (offset, chunk digest), in order.
    """

    def __init__(self, tmp: str):
        self._path = os.path.join(tmp, "toc-entries")
        self._file = open(self._path, "w+", encoding="ascii")  # noqa: SIM115 - closed by close()

    def add(self, kind: str, before: dict, head: dict | None = None, tail: dict | None = None) -> None:
        self._file.write(f"{kind}\t{_json_body(before)}\t{_json_body(head)}\t{_json_body(tail)}\n")

    def render(self, records: BinaryIO, file_digests: list[bytes], out: BinaryIO) -> None:
        """Write the TOC JSON (compact, no trailing newline) to `out`."""
        self._file.seek(0)
        whole = iter(file_digests)
        out.write(b'{"version":1,"entries":[')
        separator = b""
        for line in self._file:
            kind, before, head, tail = line.rstrip("\n").split("\t")
            parts = [before]
            if kind != "-":
                offset, chunk_digest = _MEMBER_RECORD.unpack(records.read(_MEMBER_RECORD.size))
                parts.append(f'"offset":{offset}')
            if head:
                parts.append(head)
            if kind == "c":
                parts.append(f'"digest":"sha256:{chunk_digest.hex()}"')
            elif kind == "f":
                parts.append(f'"digest":"sha256:{next(whole).hex()}"')
            if tail:
                parts.append(tail)
            if kind != "-":
                parts.append(f'"chunkDigest":"sha256:{chunk_digest.hex()}"')
            out.write(separator + ("{" + ",".join(parts) + "}").encode("ascii"))
            separator = b","
        out.write(b"]}")

    def close(self) -> None:
        self._file.close()


def _json_body(mapping: dict | None) -> str:
    return json.dumps(mapping, separators=(",", ":"), ensure_ascii=True)[1:-1] if mapping else ""


@dataclass(frozen=True)
class _Chunk:
    """The payload chunk a member starts with, as far as the whole-file digest is concerned."""

    whole: "hashlib._Hash | None"  # running digest of a chunked file; None for a file in one chunk
    last: bool  # the file's last chunk: its whole-file digest is complete after it


_NOT_CHUNKED = _Chunk(None, True)


class _BlobWriter:
    """Lays tar entries out as eStargz gzip members and writes them in order.

    The main thread parses the tar and cuts members; batches of members are compressed (and their
    chunks hashed) in the thread pool; the diffID and whole-file digests are computed on one
    ordered thread and the blob digest on another. Nothing that reaches the output depends on how
    the work was scheduled.
    """

    def __init__(self, out: BinaryIO, options: LayerOptions, pool: ThreadPoolExecutor, tmp: str,
                 progress: Callable[[int], None]):
        self._out = out
        self._chunk_size = options.chunk_size
        self._deflate = _Deflate(options.compressor, options.level)
        self._pool = pool
        self._tmp = tmp
        self._progress = progress
        self._toc = _TocSpool(tmp)
        self._records = open(os.path.join(tmp, "members"), "w+b")  # noqa: SIM115 - closed by close()
        self._file_digests: list[bytes] = []  # whole-file digests of chunked files, in order
        self._blob_hash = hashlib.sha256()
        self._diff_hash = hashlib.sha256()
        self._uncompressed_hasher = _Sequencer("estargz-diffid", _HASH_BACKLOG_BYTES)
        self._blob_hasher = _Sequencer("estargz-digest", _HASH_BACKLOG_BYTES)
        self._unhashed: list[bytes] = []  # written blob bytes not yet handed to the blob hasher
        self._unhashed_bytes = 0
        self._position = 0  # compressed bytes written
        self._uncompressed = 0
        self._chunk: _Chunk | None = None  # the chunk the current member starts with (member 0: none)
        self._pieces: list[bytes] = []
        self._pending = 0  # bytes in _pieces
        self._headers = 0  # non-payload bytes in the current member
        self._batch: list[tuple[list[bytes], _Chunk | None]] = []  # closed members not yet submitted
        self._batch_bytes = 0
        self._streaming: _StreamingMember | None = None
        self._streaming_digest: bytes | None = None
        self._spill: BinaryIO | None = None
        self._inflight: deque[tuple[Future, int]] = deque()
        self._inflight_bytes = 0
        self._budget = max(2 * self._chunk_size + 2 * _SPILL_BYTES,
                           min(_MAX_INFLIGHT_BYTES, 3 * options.workers * self._chunk_size))
        self._unames: dict[int, str] = {}
        self._gnames: dict[int, str] = {}
        self._chunk_members = 0  # members started at a payload chunk so far
        self._records_written = 0  # of those, how many are written (in member order)
        self._prefetch_member: int | None = None  # index among them of .prefetch.landmark's payload
        self._prefetch_end = 0  # its offset: the end of the region a node prefetches

    # -- entries -------------------------------------------------------------------------------

    def add_prefetch_landmark(self) -> None:
        """Add `.prefetch.landmark` after the prioritized entries, noting where its payload starts."""
        self._prefetch_member = self._chunk_members
        self.add(_landmark(PREFETCH_LANDMARK), _bytes_reader(LANDMARK_CONTENTS))

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
        head: dict = {}
        if kind in ("char", "block"):
            if info.devmajor:
                head["devMajor"] = info.devmajor
            if info.devminor:
                head["devMinor"] = info.devminor
        xattrs = _xattrs(info)
        if xattrs:
            head["xattrs"] = xattrs

        self._append(header, payload=False)
        if kind != "reg":
            self._toc.add("-", before, head)
            return
        if not info.size:
            head["digest"] = "sha256:" + hashlib.sha256(b"").hexdigest()
            self._toc.add("-", before, head)
            return
        self._add_payload(info, read, before, head)

    def _add_payload(self, info, read, before: dict, head: dict) -> None:
        size = info.size
        chunk_size = self._chunk_size
        whole = hashlib.sha256() if size > chunk_size else None
        done = 0
        while done < size:
            length = min(chunk_size, size - done)
            data = read(length)
            if len(data) != length:
                raise HostileArchiveError(f"payload of {info.name!r} is shorter than its declared {size} bytes")
            self._close_member()
            self._chunk_members += 1
            last = done + length == size
            self._chunk = _Chunk(whole, last) if whole is not None else _NOT_CHUNKED
            if done == 0:
                self._toc.add("f" if whole is not None else "c", before, head,
                              None if last else {"chunkSize": length})
            else:
                self._toc.add("k", {"name": before["name"], "type": "chunk"},
                              {"chunkOffset": done, **({} if last else {"chunkSize": length})})
            self._append(data, payload=True)
            done += length
        self._append(bytes(-size % 512), payload=False)

    # -- members -------------------------------------------------------------------------------

    def _append(self, data: bytes, payload: bool) -> None:
        if not data:
            return
        self._uncompressed += len(data)
        if self._streaming is not None:
            self._streaming.write(data)
            self._pieces.append(data)  # kept only until the diffID thread has seen them
            self._pending += len(data)
            if self._pending > _SPILL_BYTES:
                self._hash_streamed()
            return
        self._pieces.append(data)
        self._pending += len(data)
        if not payload:
            self._headers += len(data)
            if self._headers > _SPILL_BYTES:
                self._start_streaming()

    def _start_streaming(self) -> None:
        """A long run of headers: compress this member as it grows, into a spool file."""
        self._submit_batch()  # the diffID thread must see earlier members first
        chunk = self._chunk
        self._streaming_digest = hashlib.sha256(self._pieces[0]).digest() if chunk is not None else None
        self._spill = tempfile.SpooledTemporaryFile(max_size=8 << 20, dir=self._tmp)  # noqa: SIM115
        self._streaming = _StreamingMember(self._deflate, self._spill.write)
        for piece in self._pieces:
            self._streaming.write(piece)
        self._uncompressed_hasher.submit(partial(self._hash_members, [(self._pieces, chunk)]), self._pending)
        self._pieces, self._pending = [], 0

    def _hash_streamed(self) -> None:
        self._uncompressed_hasher.submit(partial(self._hash_members, [(self._pieces, None)]), self._pending)
        self._pieces, self._pending = [], 0

    def _close_member(self) -> None:
        if self._streaming is not None:
            self._hash_streamed()
            self._streaming.finish()
            future: Future = Future()
            future.set_result((self._spill, self._streaming_digest))
            self._inflight.append((future, 0))
            self._streaming = self._spill = None
        else:
            self._batch.append((self._pieces, self._chunk))
            self._batch_bytes += self._pending
            if self._batch_bytes >= _BATCH_BYTES or len(self._batch) >= _BATCH_MEMBERS:
                self._submit_batch()
        self._pieces, self._pending, self._headers = [], 0, 0
        while self._inflight and (self._inflight_bytes > self._budget or len(self._inflight) > _MAX_INFLIGHT_JOBS):
            self._write_oldest()

    def _submit_batch(self) -> None:
        if not self._batch:
            return
        batch, size = self._batch, self._batch_bytes
        self._batch, self._batch_bytes = [], 0
        future = self._pool.submit(self._deflate.batch, [(pieces, chunk is not None) for pieces, chunk in batch])
        self._inflight.append((future, size))
        self._inflight_bytes += size
        self._uncompressed_hasher.submit(partial(self._hash_members, batch), size)

    def _hash_members(self, members: list[tuple[list[bytes], _Chunk | None]]) -> None:
        """On the diffID thread: the decompressed blob stream, and the chunks of chunked files."""
        _update_all(self._diff_hash, [piece for pieces, _ in members for piece in pieces])
        for pieces, chunk in members:
            if chunk is not None and chunk.whole is not None:
                chunk.whole.update(pieces[0])
                if chunk.last:
                    self._file_digests.append(chunk.whole.digest())

    def _write_oldest(self) -> None:
        future, size = self._inflight.popleft()
        self._inflight_bytes -= size
        result = future.result()
        if isinstance(result, list):
            # One write for the batch (small files make many small members); progress per member.
            ends = []
            for member, chunk_digest in result:
                self._record(chunk_digest)
                self._position += len(member)
                ends.append(self._position)
            self._emit(b"".join(member for member, _ in result), ends)
        else:
            spill, chunk_digest = result
            self._record(chunk_digest)
            spill.seek(0)
            while block := spill.read(_COPY_BLOCK):
                self._emit(block)
            spill.close()

    def _record(self, chunk_digest: bytes | None) -> None:
        """Called with the position at the start of the member being written."""
        if chunk_digest is not None:
            if self._records_written == self._prefetch_member:
                self._prefetch_end = self._position
            self._records_written += 1
            self._records.write(_MEMBER_RECORD.pack(self._position, chunk_digest))

    def _emit(self, data: bytes, ends: list[int] | None = None) -> None:
        """Write `data`; `ends` are the positions after each of the members it holds, if several
        (their sizes are already counted in the position)."""
        self._out.write(data)
        self._unhashed.append(data)
        self._unhashed_bytes += len(data)
        if self._unhashed_bytes >= _BATCH_BYTES:
            self._hash_written()
        if ends is None:
            self._position += len(data)
            self._progress(self._position)
        else:
            for end in ends:
                self._progress(end)

    def _hash_written(self) -> None:
        pieces, size = self._unhashed, self._unhashed_bytes
        self._unhashed, self._unhashed_bytes = [], 0
        self._blob_hasher.submit(partial(_update_all, self._blob_hash, pieces), size)

    # -- TOC and footer ------------------------------------------------------------------------

    def finish(self, prioritized: tuple[str, ...]) -> LayerResult:
        self._close_member()
        self._submit_batch()
        while self._inflight:
            self._write_oldest()
        toc_offset = self._position
        self._uncompressed_hasher.join()  # the diffID so far and every whole-file digest are final
        self._records.seek(0)
        toc_hash = hashlib.sha256()
        with open(os.path.join(self._tmp, "toc.json"), "w+b") as toc_json:
            self._toc.render(self._records, self._file_digests, toc_json)
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
        toc_member_size = self._position - toc_offset
        self._emit(_footer(toc_offset))
        self._hash_written()
        self._blob_hasher.join()
        return LayerResult(
            digest="sha256:" + self._blob_hash.hexdigest(),
            size=self._position,
            diff_id="sha256:" + self._diff_hash.hexdigest(),
            toc_digest="sha256:" + toc_hash.hexdigest(),
            uncompressed_size=self._uncompressed,
            startup_bytes=FOOTER_SIZE + toc_member_size + self._prefetch_end,
            prioritized=prioritized,
        )

    def _write_toc(self, member: _StreamingMember, data: bytes) -> None:
        member.write(data)
        self._diff_hash.update(data)
        self._uncompressed += len(data)

    def close(self) -> None:
        """Release spool files and stop the hashing threads; in-flight jobs are abandoned to the
        pool's shutdown."""
        for future, _ in self._inflight:
            future.cancel()
        self._inflight.clear()
        self._uncompressed_hasher.close()
        self._blob_hasher.close()
        self._toc.close()
        self._records.close()
        if self._spill is not None:
            self._spill.close()


def _update_all(digest, pieces: list[bytes]) -> None:
    """`digest.update` over `pieces`, with runs of small pieces joined first: hashlib holds the GIL
    on buffers under 2 KiB, and one call per 512-byte header costs more than the copy."""
    small: list[bytes] = []
    size = 0
    for piece in pieces:
        if len(piece) >= _SMALL_PIECE:
            if small:
                digest.update(b"".join(small))
                small, size = [], 0
            digest.update(piece)
        else:
            small.append(piece)
            size += len(piece)
            if size >= _SMALL_PIECE:
                digest.update(b"".join(small))
                small, size = [], 0
    if small:
        digest.update(b"".join(small))


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

