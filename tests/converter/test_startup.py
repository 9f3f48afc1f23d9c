"""Startup bytes: the figure the writer records equals what `startup_bytes` computes from the blob
with ranged reads (footer, then TOC member, nothing else); hostile blobs are refused."""

import gzip
import io
import json
import os
import struct
import tarfile

import pytest

from converter.errors import EstargzBlobError
from converter.estargz import FOOTER_SIZE, LayerOptions, _footer, convert_layer
from converter.startup import StartupBytes, startup_bytes

from .estargz_support import Entry, build_tar, footer_toc_offset, read_toc

LAYER = [
    Entry("etc/", tarfile.DIRTYPE), Entry("etc/hosts", data=b"127.0.0.1 localhost\n"),
    Entry("usr/", tarfile.DIRTYPE), Entry("usr/bin/", tarfile.DIRTYPE),
    Entry("usr/bin/app", data=os.urandom(20000)),  # five 4 KiB chunks: the prefetch region spans members
    Entry("usr/lib/", tarfile.DIRTYPE), Entry("usr/lib/libc.so", data=b"elf" * 9000),
    Entry("var/log", data=b"log\n" * 100),
]


class RangedBlob:
    """A blob read only by ranges, remembering them."""

    def __init__(self, data: bytes):
        self.data = data
        self.reads: list[tuple[int, int]] = []

    def read(self, start: int, length: int) -> bytes:
        self.reads.append((start, length))
        return self.data[start:start + length]


def convert(prioritized=(), **options):
    out = io.BytesIO()
    result = convert_layer(io.BytesIO(build_tar(LAYER)), out,
                           LayerOptions(chunk_size=4096, prioritized_files=prioritized, **options))
    return out.getvalue(), result


@pytest.mark.parametrize("prioritized", [(), ("etc/hosts",), ("usr/bin/app", "var/log"), ("usr/",)])
@pytest.mark.parametrize("compression", [{"level": 9}, {"compressor": "isal", "level": 2}])
def test_recorded_figure_equals_the_one_read_back_from_the_footer_and_toc(prioritized, compression):
    blob, result = convert(prioritized, **compression)
    ranged = RangedBlob(blob)
    figure = startup_bytes(ranged.read, len(blob))
    assert figure.total == result.startup_bytes
    # only the footer, then the TOC member: nothing before the TOC is read
    toc_offset = footer_toc_offset(blob)
    assert ranged.reads == [(len(blob) - FOOTER_SIZE, FOOTER_SIZE), (toc_offset, len(blob) - FOOTER_SIZE - toc_offset)]


def test_the_arithmetic_footer_plus_toc_member_plus_prioritized_region():
    blob, result = convert(("usr/bin/app", "var/log"))
    toc_offset = footer_toc_offset(blob)
    landmark = next(e for e in read_toc(blob)[0]["entries"] if e["name"] == ".prefetch.landmark")
    app_chunks = [e for e in read_toc(blob)[0]["entries"] if e["name"] == "usr/bin/app"]
    assert len(app_chunks) == 5 and all(e["offset"] < landmark["offset"] for e in app_chunks)
    expected = StartupBytes(footer=51, toc=len(blob) - 51 - toc_offset, prefetch=landmark["offset"])
    assert startup_bytes(RangedBlob(blob).read, len(blob)) == expected
    assert result.startup_bytes == 51 + (len(blob) - 51 - toc_offset) + landmark["offset"]
    assert result.prioritized == ("usr/bin/app", "var/log")


def test_without_prioritized_files_nothing_is_prefetched():
    blob, result = convert()
    figure = startup_bytes(RangedBlob(blob).read, len(blob))
    assert figure.prefetch == 0 and figure.footer == 51
    assert result.startup_bytes == 51 + figure.toc == len(blob) - footer_toc_offset(blob)
    assert result.prioritized == ()


# -- hostile blobs ----------------------------------------------------------------------------


def blob_with(toc_member: bytes, data: bytes = b"\x1f\x8b" + bytes(30)) -> bytes:
    """Data, then the given TOC member, then a footer pointing at it."""
    return data + toc_member + _footer(len(data))


def toc_member(json_bytes: bytes, name: str = "stargz.index.json") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        info = tarfile.TarInfo(name)
        info.size = len(json_bytes)
        archive.addfile(info, io.BytesIO(json_bytes))
    return gzip.compress(buffer.getvalue(), mtime=0)


def toc(*entries: dict) -> bytes:
    return json.dumps({"version": 1, "entries": list(entries)}).encode()


GOOD = toc_member(toc({"name": ".prefetch.landmark", "type": "reg", "size": 1, "offset": 20}))


def test_a_hand_made_blob_is_read_as_the_snapshotter_would():
    blob = blob_with(GOOD)
    assert startup_bytes(RangedBlob(blob).read, len(blob)) == StartupBytes(51, len(GOOD), 20)
    both = blob_with(toc_member(toc({"name": "./.prefetch.landmark", "offset": 20},
                                    {"name": ".no.prefetch.landmark", "offset": 10})))
    assert startup_bytes(RangedBlob(both).read, len(both)).prefetch == 0  # no-prefetch wins, as in the snapshotter
    neither = blob_with(toc_member(toc({"name": "a", "type": "reg", "offset": 5})))
    assert startup_bytes(RangedBlob(neither).read, len(neither)).prefetch == 0
    nested = blob_with(toc_member(toc({"name": "dir/.prefetch.landmark", "offset": 25})))
    assert startup_bytes(RangedBlob(nested).read, len(nested)).prefetch == 0  # only the root landmark counts


def corrupt_footer(blob: bytes, at: int, value: bytes) -> bytes:
    footer = bytearray(blob[-51:])
    footer[at:at + len(value)] = value
    return blob[:-51] + bytes(footer)


GOOD_BLOB = blob_with(GOOD)
HOSTILE = {
    "smaller than a footer": (b"\x1f\x8b" * 20, "a blob of 40 bytes cannot hold the 51-byte eStargz footer"),
    "not gzip": (corrupt_footer(GOOD_BLOB, 0, b"PK"), "not a gzip member with an Extra field"),
    "no extra field": (corrupt_footer(GOOD_BLOB, 3, b"\x00"), "not a gzip member with an Extra field"),
    "legacy extra length": (corrupt_footer(GOOD_BLOB, 10, struct.pack("<H", 22)),
                            "not the eStargz 'SG' subfield of 22 bytes"),
    "wrong subfield id": (corrupt_footer(GOOD_BLOB, 12, b"EX"), "not the eStargz 'SG' subfield of 22 bytes"),
    "not hex": (corrupt_footer(GOOD_BLOB, 16, b"0x00000000000020"), "not 16 hex digits followed by 'STARGZ'"),
    "no magic": (corrupt_footer(GOOD_BLOB, 32, b"STARGY"), "not 16 hex digits followed by 'STARGZ'"),
    "offset past the footer": (corrupt_footer(GOOD_BLOB, 16, b"%016x" % len(GOOD_BLOB)),
                               f"the footer points at a TOC at byte {len(GOOD_BLOB)}, which is not before the footer"),
    "offset at the footer": (corrupt_footer(GOOD_BLOB, 16, b"%016x" % (len(GOOD_BLOB) - 51)),
                             "which is not before the footer"),
    "garbage after the toc": (blob_with(GOOD + b"junk"), "ends before the footer"),
    "truncated toc": (blob_with(GOOD[:-9]), "is truncated"),
    "toc not gzip": (blob_with(b"\x00" * 64), "is not valid gzip"),
    "toc not a tar": (blob_with(gzip.compress(b"{}" * 300)), "is not a tar stream"),
    "toc entry misnamed": (blob_with(toc_member(toc(), name="index.json")),
                           "first entry is 'index.json', not the regular file 'stargz.index.json'"),
    "toc not json": (blob_with(toc_member(b"{not json")), "stargz.index.json is not valid JSON"),
    "toc version 2": (blob_with(toc_member(json.dumps({"version": 2, "entries": []}).encode())),
                      "is not an eStargz TOC (an object with version 1 and a list of entries)"),
    "entries not a list": (blob_with(toc_member(b'{"version": 1, "entries": {}}')), "is not an eStargz TOC"),
    "landmark past the toc": (blob_with(toc_member(toc({"name": ".prefetch.landmark", "offset": 10 ** 9}))),
                              ".prefetch.landmark has offset 1000000000, not a position inside the blob's data "
                              "(before the TOC at byte 32)"),
    "landmark offset negative": (blob_with(toc_member(toc({"name": ".prefetch.landmark", "offset": -1}))),
                                 ".prefetch.landmark has offset -1"),
    "landmark offset a string": (blob_with(toc_member(toc({"name": ".prefetch.landmark", "offset": "20"}))),
                                 ".prefetch.landmark has offset '20'"),
}


@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_blobs_are_refused_with_the_reason(case):
    blob, message = HOSTILE[case]
    with pytest.raises(EstargzBlobError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        startup_bytes(RangedBlob(blob).read, len(blob))


def test_the_toc_member_size_is_bounded_before_anything_but_the_footer_is_read():
    ranged = RangedBlob(GOOD_BLOB)
    with pytest.raises(EstargzBlobError, match=f"the TOC member is {len(GOOD)} bytes, more than the limit of 100"):
        startup_bytes(ranged.read, len(GOOD_BLOB), max_toc_bytes=100)
    assert ranged.reads == [(len(GOOD_BLOB) - 51, 51)]
    assert startup_bytes(RangedBlob(GOOD_BLOB).read, len(GOOD_BLOB), max_toc_bytes=len(GOOD)).toc == len(GOOD)


def test_a_toc_that_decompresses_past_the_limit_is_refused():
    bomb = toc_member(toc(*({"name": f"f{index}", "type": "reg"} for index in range(20000))))
    assert len(bomb) < 100_000
    blob = blob_with(bomb)
    with pytest.raises(EstargzBlobError, match="the TOC member decompresses to more than 65536 bytes"):
        startup_bytes(RangedBlob(blob).read, len(blob), max_toc_uncompressed=65536)


def test_a_short_ranged_read_is_refused():
    with pytest.raises(EstargzBlobError, match=f"reading 51 bytes at byte {len(GOOD_BLOB) - 51} returned 50"):
        startup_bytes(lambda start, length: GOOD_BLOB[start:start + length - 1], len(GOOD_BLOB))
    with pytest.raises(EstargzBlobError, match="a blob of True bytes"):
        startup_bytes(RangedBlob(GOOD_BLOB).read, True)
