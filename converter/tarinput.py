"""Reading input layers safely: tar, tar+gzip or tar+zstd, streamed, checked entry by entry.

`LayerReader` sniffs the compression from the magic bytes (not the media type, which registries
get wrong), decompresses with a limit on the total uncompressed size, and yields the tar entries
one at a time (headers parsed by Python's `tarfile` over a forward-only stream), so memory does
not depend on the layer size. Decompression runs on a thread of its own a few blocks ahead of the
parser (zlib-ng and zstd release the GIL), and payloads are sliced straight out of those blocks.
Everything a hostile or broken layer can do ends in a `LayerError` subclass naming the
entry and the problem: names that are absolute or climb out with `..`, headers declaring absurd
sizes, oversized PAX / GNU long-name records, corrupt or truncated streams (also a truncated
zstd frame, which the zstd stream reader would otherwise end silently), trailing garbage, and
decompression bombs past the limit. Nothing here writes to disk, except the copy of the raw
input a caller may ask for (`tee`) so it can read a non-seekable source again.
"""

import posixpath
import queue
import struct
import tarfile
import threading
from collections.abc import Iterator
from typing import BinaryIO

import zstandard
from zlib_ng import zlib_ng

from .errors import CorruptLayerError, HostileArchiveError, LayerTooLargeError, UnsupportedLayerError

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_OTHER_MAGICS = {
    b"BZh": "bzip2",
    b"\xfd7zXZ\x00": "xz",
    b"\x04\x22\x4d\x18": "lz4",
    b"PK\x03\x04": "zip",
}
# PAX extended headers and GNU long names/link names are read into memory by tarfile, so their
# declared size is capped; real ones are a few hundred bytes (xattrs can reach a few KiB).
MAX_META_HEADER_BYTES = 1 << 20
# Frames with larger windows need that much memory to decode; 128 MiB is zstd's own default cap.
ZSTD_MAX_WINDOW = 1 << 27
_READ_SIZE = 1 << 16
_RAW_READ_SIZE = 1 << 18  # compressed bytes per read from the source while decompressing
_BLOCK_SIZE = 1 << 20  # decompressed bytes per block handed from the decompression thread
_READ_AHEAD_BLOCKS = 4

_SUPPORTED_TYPES = {
    tarfile.REGTYPE: "reg",
    tarfile.AREGTYPE: "reg",
    tarfile.CONTTYPE: "reg",
    tarfile.LNKTYPE: "hardlink",
    tarfile.SYMTYPE: "symlink",
    tarfile.DIRTYPE: "dir",
    tarfile.CHRTYPE: "char",
    tarfile.BLKTYPE: "block",
    tarfile.FIFOTYPE: "fifo",
}
_META_TYPES = (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE, tarfile.XGLTYPE,
               tarfile.SOLARIS_XHDTYPE)


def clean_name(name: str) -> str:
    """Normalize a tar name the way eStargz readers do (Go `path.Clean("/"+name)` without the slash)."""
    return posixpath.normpath("/" + name).lstrip("/")


def sniff_compression(head: bytes) -> str:
    """Return "gzip", "zstd" or "tar" for the first bytes of a layer; raise for anything else."""
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(ZSTD_MAGIC):
        return "zstd"
    for magic, kind in _OTHER_MAGICS.items():
        if head.startswith(magic):
            raise UnsupportedLayerError(f"layer is {kind}-compressed; only tar, tar+gzip and tar+zstd are supported")
    if not head:
        raise CorruptLayerError("layer is empty (0 bytes)")
    if len(head) >= 512 and (head[257:262] == b"ustar" or _v7_checksum_ok(head[:512])):
        return "tar"
    raise CorruptLayerError(f"layer is not a tar, tar+gzip or tar+zstd stream (starts with {head[:8].hex()})")


def _v7_checksum_ok(block: bytes) -> bool:
    """True for a pre-POSIX tar header: its checksum field matches and it is not all zeros."""
    if block == bytes(512):
        return True  # an empty archive: just the end-of-archive marker
    try:
        stored = int(block[148:156].split(b"\0", 1)[0].strip() or b"-1", 8)
    except ValueError:
        return False
    unsigned = sum(block[:148]) + 8 * 32 + sum(block[156:])
    return stored == unsigned


class _CountingReader:
    """Reads the raw (compressed) layer, counting bytes and optionally copying them to `tee`."""

    def __init__(self, raw: BinaryIO, tee: BinaryIO | None = None):
        self._raw = raw
        self._tee = tee
        self._pushback = b""
        self.count = 0

    def peek(self, n: int) -> bytes:
        while len(self._pushback) < n:
            data = self._raw.read(n - len(self._pushback))
            if not data:
                break
            if self._tee is not None:
                self._tee.write(data)
            self._pushback += data
        return self._pushback[:n]

    def read(self, n: int = _READ_SIZE) -> bytes:
        if self._pushback:
            data, self._pushback = self._pushback[:n], self._pushback[n:]
        else:
            data = self._raw.read(n)
            if self._tee is not None and data:
                self._tee.write(data)
        self.count += len(data)
        return data


class _GzipDecoder:
    """Multi-member gzip decoder with bounded output per call and truncation/garbage detection."""

    def __init__(self, raw: _CountingReader):
        self._raw = raw
        self._d = zlib_ng.decompressobj(31)
        self._pending = b""
        self._done = False

    def read(self, n: int) -> bytes:
        try:
            while not self._done:
                if self._d.eof:
                    self._next_member(self._d.unused_data)
                    continue
                data = self._d.unconsumed_tail or self._pending or self._raw.read(_RAW_READ_SIZE)
                self._pending = b""
                if not data:
                    raise CorruptLayerError(
                        f"gzip stream is truncated (ends inside a member after {self._raw.count} compressed bytes)")
                out = self._d.decompress(data, n)
                if out:
                    return out
        except zlib_ng.error as exc:
            raise CorruptLayerError(f"gzip stream is corrupt near compressed byte {self._raw.count}: {exc}") from None
        return b""

    def _next_member(self, rest: bytes) -> None:
        """After a member ends: start the next one, accept trailing zero padding, refuse garbage."""
        while len(rest) < 2:
            more = self._raw.read(_READ_SIZE)
            if not more:
                break
            rest += more
        if not rest.strip(b"\0"):
            # Zero padding (or nothing) follows; it must stay zeros to the end of the stream.
            while more := self._raw.read(_READ_SIZE):
                if more.strip(b"\0"):
                    raise CorruptLayerError("unexpected data after the end of the gzip stream")
            self._done = True
            return
        if not rest.startswith(GZIP_MAGIC):
            raise CorruptLayerError(f"unexpected data after a gzip member, before compressed byte {self._raw.count}")
        self._d = zlib_ng.decompressobj(31)
        self._pending = rest


class _ZstdFrameTracker:
    """Follows zstd frame and block headers (without decoding) to tell a complete stream from a
    truncated one: the zstd stream reader ends quietly when its input stops mid-frame."""

    def __init__(self):
        self._buf = bytearray()
        self._state = "magic"
        self._skip = 0
        self._checksum = False
        self.frames = 0

    @property
    def complete(self) -> bool:
        return self._state == "magic" and not self._buf and self._skip == 0 and self.frames > 0

    def feed(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if self._skip:
                step = min(self._skip, len(view))
                self._skip -= step
                view = view[step:]
                continue
            need = self._need()
            take = min(need - len(self._buf), len(view))
            self._buf += view[:take]
            view = view[take:]
            if len(self._buf) == need:
                self._advance(bytes(self._buf))

    def _need(self) -> int:
        if self._state == "header":
            return self._header_size
        return {"magic": 4, "descriptor": 1, "skippable": 4, "block": 3, "checksum": 4}[self._state]

    def _advance(self, buf: bytes) -> None:
        self._buf.clear()
        if self._state == "magic":
            (magic,) = struct.unpack("<I", buf)
            if magic == 0xFD2FB528:
                self._state = "descriptor"
            elif magic & 0xFFFFFFF0 == 0x184D2A50:
                self._state = "skippable"
            else:
                raise CorruptLayerError("unexpected data after the end of the zstd stream")
        elif self._state == "skippable":
            self._skip = struct.unpack("<I", buf)[0]
            self._state = "magic"
        elif self._state == "descriptor":
            fhd = buf[0]
            fcs_flag, single_segment, did_flag = fhd >> 6, (fhd >> 5) & 1, fhd & 3
            self._checksum = bool((fhd >> 2) & 1)
            fcs_size = (1 if single_segment else 0, 2, 4, 8)[fcs_flag]
            self._header_size = (0 if single_segment else 1) + (0, 1, 2, 4)[did_flag] + fcs_size
            self._state = "header" if self._header_size else "block"
        elif self._state == "header":
            self._state = "block"
        elif self._state == "block":
            header = int.from_bytes(buf, "little")
            last, block_type, size = header & 1, (header >> 1) & 3, header >> 3
            self._skip = 1 if block_type == 1 else size
            if last:
                self.frames += 1
                self._state = "checksum" if self._checksum else "magic"
        elif self._state == "checksum":
            self._state = "magic"


class _TrackedReader:
    """Feeds every raw byte the zstd reader consumes to the frame tracker."""

    def __init__(self, raw: _CountingReader, tracker: _ZstdFrameTracker):
        self._raw = raw
        self._tracker = tracker

    def read(self, n: int = _READ_SIZE) -> bytes:
        data = self._raw.read(n)
        self._tracker.feed(data)
        return data


class _ZstdDecoder:
    """Multi-frame zstd decoder with bounded output per call and truncation detection."""

    def __init__(self, raw: _CountingReader):
        self._tracker = _ZstdFrameTracker()
        self._tracked = _TrackedReader(raw, self._tracker)
        dctx = zstandard.ZstdDecompressor(max_window_size=ZSTD_MAX_WINDOW)
        self._reader = dctx.stream_reader(self._tracked, read_size=_READ_SIZE, read_across_frames=True)
        self._raw = raw
        self._done = False

    def read(self, n: int) -> bytes:
        if self._done:
            return b""
        try:
            out = self._reader.read(n)
        except zstandard.ZstdError as exc:
            raise CorruptLayerError(f"zstd stream is corrupt near compressed byte {self._raw.count}: {exc}") from None
        if not out:
            while self._tracked.read(_READ_SIZE):
                pass
            if not self._tracker.complete:
                raise CorruptLayerError(
                    f"zstd stream is truncated (ends inside a frame after {self._raw.count} compressed bytes)")
            self._done = True
        return out


class _ReadAhead:
    """Runs a decoder on its own thread, up to a few blocks ahead of the reader. Errors reach the
    reader in stream order, when it asks for the block that failed."""

    def __init__(self, decoder):
        self._queue: queue.Queue = queue.Queue(maxsize=_READ_AHEAD_BLOCKS)
        self._stop = threading.Event()
        self._last: bytes | BaseException | None = None  # the end (b"") or the error, once seen
        self._thread = threading.Thread(target=self._run, args=(decoder,), name="layer-decompress", daemon=True)
        self._thread.start()

    def _run(self, decoder) -> None:
        try:
            while not self._stop.is_set():
                block = decoder.read(_BLOCK_SIZE)
                self._queue.put(block)
                if not block:
                    return
        except BaseException as exc:  # handed to the reader
            self._queue.put(exc)

    def read(self) -> bytes:
        """The next block of decompressed bytes; b"" at the end."""
        item = self._last if self._last is not None else self._queue.get()
        if isinstance(item, BaseException):
            self._last = item
            raise item
        if not item:
            self._last = item
        return item

    def close(self) -> None:
        """Stop the thread (after its current read) and drop what it read ahead."""
        self._stop.set()
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._thread.join()


class LayerStream:
    """The uncompressed tar bytes of a layer, whatever its compression, with a size limit.

    A forward-only file object (`read`, `tell`, `seek` ahead) over blocks decompressed ahead on a
    background thread; call `close()` when done with it, before reading the source again.
    """

    def __init__(self, source: BinaryIO, limit: int, tee: BinaryIO | None = None):
        self._raw = _CountingReader(source, tee)
        self.compression = sniff_compression(self._raw.peek(512))
        if self.compression == "gzip":
            decoder = _GzipDecoder(self._raw)
        elif self.compression == "zstd":
            decoder = _ZstdDecoder(self._raw)
        else:
            decoder = self._raw
        self._blocks = _ReadAhead(decoder)
        self._limit = limit
        self.bytes_out = 0  # decompressed bytes taken from the decoder
        self._buffer = b""
        self._start = 0  # position of the next unread byte in _buffer
        self._position = 0  # position of the next unread byte in the tar stream

    @property
    def bytes_in(self) -> int:
        """Bytes consumed from the source so far (compressed, as stored in the registry)."""
        return self._raw.count

    def _next_block(self) -> bytes:
        block = self._blocks.read()
        self.bytes_out += len(block)
        if self.bytes_out > self._limit:
            raise LayerTooLargeError(
                f"layer decompresses to more than the limit of {self._limit} bytes "
                f"(after {self.bytes_in} compressed bytes); raise the limit if it is legitimate")
        return block

    def read(self, n: int = _READ_SIZE) -> bytes:
        """Up to n bytes; fewer only at the end of the stream."""
        buffer, start = self._buffer, self._start
        if len(buffer) - start >= n:
            self._start = start + n
            self._position += n
            return buffer[start:start + n]
        parts: list = [memoryview(buffer)[start:]]
        have = len(buffer) - start
        self._buffer, self._start = b"", 0
        while have < n:
            block = self._next_block()
            if not block:
                break
            take = n - have
            if len(block) > take:
                parts.append(memoryview(block)[:take])
                self._buffer, self._start = block, take
                have = n
            else:
                parts.append(block)
                have += len(block)
        self._position += have
        return parts[0].tobytes() if len(parts) == 1 else b"".join(parts)

    def tell(self) -> int:
        return self._position

    def seek(self, position: int) -> int:
        """Skip ahead to `position` (tarfile does this over unread payloads); never backwards."""
        if position < self._position:
            raise OSError(f"cannot seek back to byte {position} of a layer stream at byte {self._position}")
        while self._position < position and self.read(min(position - self._position, _BLOCK_SIZE)):
            pass
        return self._position

    def drain(self) -> None:
        """Read to the end, so a corrupt or truncated compressed trailer is still noticed."""
        self._buffer, self._start = b"", 0
        while self._next_block():
            pass

    def close(self) -> None:
        self._blocks.close()


class _GuardedTarInfo(tarfile.TarInfo):
    """TarInfo that refuses oversized metadata records and turns header errors into CorruptLayerError.

    tarfile reads PAX and GNU long-name records into memory whole and treats a bad header after the
    first one as the end of the archive; both are wrong for untrusted input.
    """

    @classmethod
    def fromtarfile(cls, tar):
        offset = tar.offset
        try:
            return super().fromtarfile(tar)
        except (tarfile.EOFHeaderError, tarfile.EmptyHeaderError):
            raise
        except tarfile.TruncatedHeaderError:
            raise CorruptLayerError(f"tar stream is truncated inside the header at byte {offset}") from None
        except tarfile.HeaderError as exc:
            raise CorruptLayerError(f"invalid tar header at byte {offset}: {exc}") from None

    def _proc_member(self, tar):
        if self.size < 0:
            raise HostileArchiveError(f"tar header at byte {self.offset} declares a negative size ({self.size})")
        if self.type in _META_TYPES and self.size > MAX_META_HEADER_BYTES:
            raise HostileArchiveError(
                f"tar metadata record at byte {self.offset} declares {self.size} bytes "
                f"(more than the {MAX_META_HEADER_BYTES} allowed)")
        if self.type == tarfile.GNUTYPE_SPARSE:
            raise UnsupportedLayerError(f"entry {self.name!r} is a GNU sparse file, which is not supported")
        return super()._proc_member(tar)


class LayerReader:
    """Iterates over the entries of one layer, validated, with their payloads read on demand.

    Use `entries()` and, for each regular file, `read(n)` up to its size (unread payload is
    skipped). `finish()` reads the stream to its end to check the compressed trailer. Use it as a
    context manager (or call `close()`): it stops the decompression thread.
    """

    def __init__(self, source: BinaryIO, limit: int, tee: BinaryIO | None = None):
        self.stream = LayerStream(source, limit, tee)
        self._limit = limit
        self._tar: tarfile.TarFile | None = None
        self._remaining = 0  # unread payload bytes of the current entry

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def entries(self) -> Iterator[tarfile.TarInfo]:
        try:
            # Not tarfile's stream mode: payloads are read from self.stream directly, and
            # tarfile seeks ahead over what is left unread.
            self._tar = tarfile.TarFile(
                fileobj=self.stream, mode="r", tarinfo=_GuardedTarInfo, errors="surrogateescape")
        except tarfile.ReadError as exc:
            raise CorruptLayerError(f"layer is not a valid tar archive: {exc}") from None
        while True:
            self._remaining = 0
            try:
                info = self._tar.next()
            except tarfile.ReadError as exc:
                raise CorruptLayerError(f"invalid tar stream near byte {self._tar.offset}: {exc}") from None
            if info is None:
                return
            self._tar.members.clear()  # the tar object would otherwise keep every header
            self._check(info)
            if info.isreg():
                self._remaining = info.size
            yield info

    def read(self, n: int) -> bytes:
        """Read up to n payload bytes of the current regular file; short only at its end."""
        n = min(n, self._remaining)
        if n <= 0:
            return b""
        data = self.stream.read(n)
        self._remaining -= len(data)
        if len(data) < n:
            raise CorruptLayerError("tar stream is truncated: unexpected end of data")
        return data

    def finish(self) -> None:
        self.stream.drain()

    def close(self) -> None:
        self.stream.close()

    def _check(self, info: tarfile.TarInfo) -> None:
        name = info.name
        kind = _SUPPORTED_TYPES.get(info.type)
        if kind is None:
            raise UnsupportedLayerError(f"entry {name!r} has unsupported tar type {info.type!r}")
        if info.sparse is not None:
            raise UnsupportedLayerError(f"entry {name!r} is a sparse file, which is not supported")
        _check_path(name, "entry")
        if kind == "reg":
            info.type = tarfile.REGTYPE
            if info.size > self._limit:
                raise HostileArchiveError(
                    f"entry {name!r} declares {info.size} bytes, more than the limit of {self._limit}")
        else:
            info.size = 0
            info.pax_headers.pop("size", None)
        if kind == "hardlink":
            _check_path(info.linkname, f"hardlink {name!r} target")


def _check_path(path: str, what: str) -> None:
    if not path:
        raise HostileArchiveError(f"{what} has an empty name")
    if "\0" in path:
        raise HostileArchiveError(f"{what} {path!r} contains a NUL byte")
    if path.startswith("/"):
        raise HostileArchiveError(f"{what} {path!r} is an absolute path")
    if ".." in path.split("/"):
        raise HostileArchiveError(f"{what} {path!r} climbs out of the layer root with '..'")

