"""Hostile, broken and unsupported layers end in a precise ConversionError and leave nothing behind."""

import bz2
import gzip
import io
import os
import tarfile

import pytest
import zstandard

from converter.errors import (
    ConversionError,
    CorruptLayerError,
    HostileArchiveError,
    LayerTooLargeError,
    UnsupportedLayerError,
)
from converter.estargz import LayerOptions, convert_layer

from .estargz_support import Entry, build_tar


def with_checksum(block: bytes) -> bytes:
    """Recompute a tar header block's checksum after patching it."""
    block = bytearray(block)
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % sum(block)
    return bytes(block)


def header(name: str, size: int = 0, typeflag: bytes = tarfile.REGTYPE) -> bytes:
    info = tarfile.TarInfo(name)
    info.type = typeflag
    info.size = size
    return info.tobuf(tarfile.USTAR_FORMAT)


def base256(value: int) -> bytes:
    """A 12-byte size field in GNU base-256 (big-endian two's complement, high bit set)."""
    return (value % (1 << 95) | (1 << 95)).to_bytes(12, "big")


def patched_size(name: str, field: bytes) -> bytes:
    block = bytearray(header(name))
    block[124:136] = field
    return with_checksum(bytes(block))


VALID = build_tar([Entry("a", data=b"a" * 3000), Entry("b", data=b"b" * 3000)])


def corrupt_second_header(layer: bytes) -> bytes:
    # First entry: header (512) + 3000 bytes padded to 3072; the second header follows.
    broken = bytearray(layer)
    broken[512 + 3072 + 10] ^= 0xFF
    return bytes(broken)


def huge_pax_record() -> bytes:
    info = tarfile.TarInfo("././@PaxHeader")
    info.type = tarfile.XHDTYPE
    info.size = 2 << 20
    return info.tobuf(tarfile.USTAR_FORMAT) + bytes(2 << 20) + header("a") + bytes(1024)


def zeros_bomb(files: int) -> bytes:
    """Files of 512 KiB of zeros: each is within the limit, together they are not."""
    stream = io.BytesIO()
    with gzip.GzipFile(fileobj=stream, mode="wb", compresslevel=1) as gz:
        for index in range(files):
            info = tarfile.TarInfo(f"zeros{index}")
            info.size = 512 << 10
            gz.write(info.tobuf())
            gz.write(bytes(info.size))
        gz.write(bytes(1024))
    return stream.getvalue()


def corrupt_gzip() -> bytes:
    compressed = bytearray(gzip.compress(build_tar([Entry("r", data=os.urandom(50000))])))
    compressed[len(compressed) // 2] ^= 0xFF
    return bytes(compressed)


def sparse_layer() -> bytes:
    block = bytearray(header("sparse", 512, tarfile.GNUTYPE_SPARSE))
    block[257:265] = b"ustar  \0"
    return with_checksum(bytes(block)) + bytes(512) + bytes(1024)


def large_window_zstd() -> bytes:
    params = zstandard.ZstdCompressionParameters.from_level(3, window_log=30)
    compressor = zstandard.ZstdCompressor(compression_params=params).compressobj()  # size unknown: window kept
    return compressor.compress(VALID) + compressor.flush()


CASES = [
    ("absolute-name", build_tar([Entry("/etc/passwd", data=b"x")]), HostileArchiveError,
     "entry '/etc/passwd' is an absolute path"),
    ("dotdot-name", build_tar([Entry("../escape", data=b"x")]), HostileArchiveError,
     "entry '../escape' climbs out of the layer root"),
    ("dotdot-inside", build_tar([Entry("a/../../b", data=b"x")]), HostileArchiveError, "climbs out"),
    ("hardlink-absolute", build_tar([Entry("l", tarfile.LNKTYPE, linkname="/etc/shadow")]), HostileArchiveError,
     "hardlink 'l' target '/etc/shadow' is an absolute path"),
    ("hardlink-dotdot", build_tar([Entry("l", tarfile.LNKTYPE, linkname="../x")]), HostileArchiveError,
     "hardlink 'l' target '../x' climbs out"),
    ("truncated-payload", VALID[:700], CorruptLayerError, "truncated"),
    ("truncated-header", VALID[:512 + 3072 + 100], CorruptLayerError, "truncated inside the header at byte 3584"),
    ("truncated-gzip", gzip.compress(VALID)[:-30], CorruptLayerError, "gzip stream is truncated"),
    ("truncated-gzip-trailer", gzip.compress(VALID)[:-4], CorruptLayerError, "gzip stream is truncated"),
    ("truncated-zstd", zstandard.ZstdCompressor().compress(VALID)[:-5], CorruptLayerError, "zstd stream is truncated"),
    ("absurd-size-octal", patched_size("big", b"77777777777\0") + bytes(1024), HostileArchiveError,
     r"entry 'big' declares 8589934591 bytes, more than the limit of 1048576"),
    ("absurd-size-base256", patched_size("big", base256(1 << 80)) + bytes(1024), HostileArchiveError,
     "entry 'big' declares 1208925819614629174706176 bytes"),
    ("negative-size", patched_size("neg", base256(-5)) + bytes(1024), HostileArchiveError, "negative size"),
    ("oversized-pax", huge_pax_record(), HostileArchiveError, "metadata record at byte 0 declares 2097152 bytes"),
    ("bomb-gzip", zeros_bomb(8), LayerTooLargeError, "decompresses to more than the limit of 1048576 bytes"),
    ("bomb-zstd", zstandard.ZstdCompressor().compress(build_tar([Entry(f"z{i}", data=bytes(500_000))
                                                                for i in range(8)])),
     LayerTooLargeError, "more than the limit"),
    ("garbage", os.urandom(4096), CorruptLayerError, "not a tar, tar\\+gzip or tar\\+zstd stream"),
    ("garbage-in-gzip", gzip.compress(b"\xff" * 4096), CorruptLayerError, "invalid tar header at byte 0: bad checksum"),
    ("corrupt-gzip", corrupt_gzip(), CorruptLayerError, "gzip stream is corrupt near compressed byte"),
    ("bad-checksum-midstream", corrupt_second_header(VALID), CorruptLayerError, "invalid tar header at byte 3584"),
    ("trailing-garbage-gzip", gzip.compress(VALID) + b"garbage!", CorruptLayerError,
     "unexpected data after a gzip member"),
    ("empty", b"", CorruptLayerError, r"layer is empty \(0 bytes\)"),
    ("bzip2", bz2.compress(VALID), UnsupportedLayerError, "layer is bzip2-compressed"),
    ("sparse", sparse_layer(), UnsupportedLayerError, "GNU sparse file"),
    ("unknown-type", build_tar([Entry("vol", b"V")]), UnsupportedLayerError, "unsupported tar type b'V'"),
    ("zstd-huge-window", large_window_zstd(), CorruptLayerError, "Frame requires too much memory"),
]


@pytest.mark.parametrize("layer, error, message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_layers_raise_precise_errors_and_clean_up(tmp_path, layer, error, message):
    workdir = tmp_path / "work"
    workdir.mkdir()
    with pytest.raises(error, match=message) as caught:
        convert_layer(io.BytesIO(layer), io.BytesIO(), LayerOptions(max_uncompressed_bytes=1 << 20),
                      workdir=str(workdir))
    assert isinstance(caught.value, ConversionError)
    assert os.listdir(workdir) == []
    assert sorted(os.listdir(tmp_path)) == ["work"]


def test_hostile_layer_with_prioritized_files_cleans_up_too(tmp_path):
    layer = build_tar([Entry("ok", data=b"x"), Entry("../escape", data=b"y")])
    with pytest.raises(HostileArchiveError):
        convert_layer(io.BytesIO(layer), io.BytesIO(), LayerOptions(prioritized_files=("ok",)), workdir=str(tmp_path))
    assert os.listdir(tmp_path) == []


def test_limit_counts_the_uncompressed_tar_of_a_plain_layer():
    layer = build_tar([Entry("a", data=bytes(600_000)), Entry("b", data=bytes(600_000))])
    with pytest.raises(LayerTooLargeError):
        convert_layer(io.BytesIO(layer), io.BytesIO(), LayerOptions(max_uncompressed_bytes=1 << 20))
    convert_layer(io.BytesIO(layer), io.BytesIO(), LayerOptions(max_uncompressed_bytes=2 << 20))


def test_symlinks_may_point_anywhere():
    layer = build_tar([Entry("abs", tarfile.SYMTYPE, linkname="/usr/bin/python3"),
                       Entry("rel", tarfile.SYMTYPE, linkname="../../lib")])
    convert_layer(io.BytesIO(layer), io.BytesIO())
