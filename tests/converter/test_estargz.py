"""The eStargz writer: format, tar features, chunking, ordering, determinism, input formats."""

import base64
import gzip
import hashlib
import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import isal
import pytest
import zstandard

from converter.errors import InvalidOptionsError, PrioritizedFileError
from converter.estargz import PROFILES, LayerOptions, convert_layer
from converter.overlay import LayerPaths

from .estargz_support import (
    Entry,
    build_tar,
    check_chunks,
    convert,
    footer_toc_offset,
    gunzip,
    member_starts,
    read_toc,
    tree,
)

LANDMARK_DIGEST = "sha256:dc0e9c3658a1a3ed1ec94274d8b19925c93e1abb7ddba294923ad9bde30f8cb8"
EMPTY_DIGEST = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
CHUNK = 4096
ROOT = Path(__file__).resolve().parents[2]


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def features() -> list[Entry]:
    """One of everything a layer can hold."""
    long_dir = "usr/share/" + "very-long-directory-name-" * 5
    return [
        Entry("./", tarfile.DIRTYPE, mode=0o755),
        Entry("usr/", tarfile.DIRTYPE, mode=0o755, uname="root", gname="root"),
        Entry("usr/bin/", tarfile.DIRTYPE, mode=0o755),
        Entry("usr/bin/tool", data=b"#!/bin/sh\necho hi\n", mode=0o4755, uid=0, gid=0, uname="root", gname="root"),
        Entry("usr/bin/tool-link", tarfile.LNKTYPE, linkname="usr/bin/tool"),
        Entry("usr/bin/sym", tarfile.SYMTYPE, linkname="../../etc/conf", mode=0o777),
        Entry("tmp/", tarfile.DIRTYPE, mode=0o1777),
        Entry("tmp/sgid", data=b"x", mode=0o2750, uid=1000, gid=1000, uname="app", gname="staff"),
        Entry("tmp/again", data=b"y" * 3, uid=1000, gid=1000, uname="app", gname="staff"),
        Entry("dev/null", tarfile.CHRTYPE, devmajor=1, devminor=3, mode=0o666),
        Entry("dev/loop0", tarfile.BLKTYPE, devmajor=7, devminor=0, mode=0o660),
        Entry("run/fifo", tarfile.FIFOTYPE, mode=0o600),
        Entry("etc/.wh..wh..opq", data=b""),
        Entry("etc/.wh.removed", data=b""),
        Entry("etc/conf", data=b"key=value\n" * 50, mtime=1234567890,
              pax={"SCHILY.xattr.security.capability": "\x01\x00\x00\x02\x00\x20\x00\x00",
                   "SCHILY.xattr.user.comment": "héllo"}),
        Entry(long_dir + "/" + "f" * 120, data=b"deep file"),
        Entry("links/long-target", tarfile.SYMTYPE, linkname="/" + "t" * 150),
        Entry("names/ünïcode-ファイル", data=b"unicode"),
        Entry("ids/big", data=b"big ids", uid=3_000_000, gid=4_000_000, uname="u" * 20, gname="g" * 20),
        Entry("empty-file", data=b""),
        Entry("old/epoch", data=b"zero mtime", mtime=0),
    ]


# -- round trip -------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT])
def test_every_tar_feature_round_trips(fmt):
    layer = build_tar(features(), fmt)
    blob, _ = convert(layer, chunk_size=CHUNK)
    assert tree(gunzip(blob), skip_estargz=True) == tree(layer)
    assert check_chunks(blob) >= 8


def test_blob_is_one_tar_with_landmark_first_and_toc_last():
    blob, _ = convert(build_tar(features()))
    with tarfile.open(fileobj=io.BytesIO(gunzip(blob))) as tar:
        names = tar.getnames()
    assert names[0] == ".no.prefetch.landmark"
    assert names[-1] == "stargz.index.json"
    assert ".prefetch.landmark" not in names
    assert gunzip(blob).endswith(bytes(1024))


def test_diff_id_and_uncompressed_size_describe_the_decompressed_blob():
    blob, result = convert(build_tar(features()))
    raw = gunzip(blob)
    assert result.diff_id == sha(raw)
    assert result.uncompressed_size == len(raw)
    assert result.digest == sha(blob)
    assert result.size == len(blob)
    assert result.toc_digest == sha(read_toc(blob)[1])


def test_gnu_long_names_and_link_names_survive():
    name = "a/" + "n" * 200
    target = "b/" + "t" * 200
    layer = build_tar([Entry(name, data=b"1"), Entry(target, tarfile.SYMTYPE, linkname=name),
                       Entry("c/" + "h" * 200, tarfile.LNKTYPE, linkname=name)], tarfile.GNU_FORMAT)
    blob, _ = convert(layer)
    assert tree(gunzip(blob), skip_estargz=True) == tree(layer)
    toc, _ = read_toc(blob)
    by_name = {e["name"]: e for e in toc["entries"]}
    assert by_name[target]["linkName"] == name
    assert by_name["c/" + "h" * 200] == {"name": "c/" + "h" * 200, "type": "hardlink",
                                         "modtime": "2023-11-14T22:13:20Z", "linkName": name, "mode": 0o644}


# -- TOC --------------------------------------------------------------------------------------


def toc_by_name(blob):
    toc, _ = read_toc(blob)
    assert toc["version"] == 1
    return {e["name"]: e for e in toc["entries"] if e["type"] != "chunk"}


def test_toc_entries_carry_the_right_keys_and_omit_zero_values():
    entries = toc_by_name(convert(build_tar(features()), chunk_size=CHUNK)[0])
    assert entries[".no.prefetch.landmark"] == {
        "name": ".no.prefetch.landmark", "type": "reg", "size": 1, "offset": entries[".no.prefetch.landmark"]["offset"],
        "digest": LANDMARK_DIGEST, "chunkDigest": LANDMARK_DIGEST}
    assert entries["./"] == {"name": "./", "type": "dir", "modtime": "2023-11-14T22:13:20Z", "mode": 0o755}
    tool = entries["usr/bin/tool"]
    assert list(tool) == ["name", "type", "size", "modtime", "mode", "offset", "digest", "chunkDigest"]
    assert tool["mode"] == 0o4755 and tool["size"] == 18 and tool["digest"] == sha(b"#!/bin/sh\necho hi\n")
    assert entries["tmp/"]["mode"] == 0o1777
    assert entries["tmp/sgid"]["mode"] == 0o2750
    assert entries["usr/bin/sym"]["linkName"] == "../../etc/conf"
    assert entries["dev/null"]["devMajor"] == 1 and entries["dev/null"]["devMinor"] == 3
    assert entries["dev/loop0"]["devMajor"] == 7 and "devMinor" not in entries["dev/loop0"]
    assert entries["run/fifo"]["type"] == "fifo"
    assert entries["empty-file"] == {"name": "empty-file", "type": "reg", "modtime": "2023-11-14T22:13:20Z",
                                     "mode": 0o644, "digest": EMPTY_DIGEST}
    assert entries["etc/.wh..wh..opq"]["type"] == "reg" and "offset" not in entries["etc/.wh..wh..opq"]
    assert entries["etc/conf"]["modtime"] == "2009-02-13T23:31:30Z"
    assert entries["etc/conf"]["xattrs"] == {
        "security.capability": base64.b64encode(b"\x01\x00\x00\x02\x00\x20\x00\x00").decode(),
        "user.comment": base64.b64encode("héllo".encode()).decode()}
    assert "modtime" not in entries["old/epoch"]
    assert entries["ids/big"]["uid"] == 3_000_000 and entries["ids/big"]["gid"] == 4_000_000


def test_user_and_group_names_are_written_only_when_they_change():
    layer = build_tar([
        Entry("a", data=b"1", uid=0, gid=0, uname="root", gname="root"),
        Entry("b", data=b"2", uid=0, gid=0, uname="root", gname="root"),
        Entry("c", data=b"3", uid=1000, gid=50, uname="app", gname="staff"),
        Entry("d", data=b"4", uid=0, gid=0, uname="root", gname="wheel"),
        Entry("e", data=b"5", uid=1000, gid=50, uname="app2", gname="staff"),
        Entry("f", data=b"6", uid=7, gid=7),
    ])
    names = {n: (e.get("userName"), e.get("groupName")) for n, e in toc_by_name(convert(layer)[0]).items()}
    assert names["a"] == ("root", "root")
    assert names["b"] == (None, None)
    assert names["c"] == ("app", "staff")
    assert names["d"] == (None, "wheel")
    assert names["e"] == ("app2", None)
    assert names["f"] == (None, None)


def test_toc_json_is_stored_without_trailing_bytes_and_digest_matches():
    blob, result = convert(build_tar(features()))
    _, toc_json = read_toc(blob)
    assert toc_json.endswith(b"}")
    assert result.toc_digest == sha(toc_json)


# -- members, chunks, footer -------------------------------------------------------------------


def test_footer_is_the_51_byte_estargz_footer_pointing_at_the_toc_member():
    blob, _ = convert(build_tar(features()))
    offset = footer_toc_offset(blob)
    assert blob[-51:] == (b"\x1f\x8b\x08\x04\x00\x00\x00\x00\x00\xff\x1a\x00SG\x16\x00"
                          + b"%016xSTARGZ" % offset + b"\x01\x00\x00\xff\xff" + bytes(8))
    starts = member_starts(blob)
    assert starts[-2:] == [offset, len(blob) - 51]
    assert gzip.decompress(blob[-51:]) == b""


def test_every_member_has_a_plain_gzip_header_mtime_0_os_255_no_name():
    blob, _ = convert(build_tar(features()), chunk_size=CHUNK)
    for start in member_starts(blob)[:-1]:
        assert blob[start:start + 4] == b"\x1f\x8b\x08\x00", start
        assert blob[start + 4:start + 8] == bytes(4)
        assert blob[start + 9] == 0xFF


def test_a_member_starts_at_each_payload_and_at_each_chunk():
    sizes = {"exact": CHUNK, "under": CHUNK - 1, "over": CHUNK + 1, "three": 3 * CHUNK, "tiny": 1, "empty": 0}
    layer = build_tar([Entry(n, data=os.urandom(s)) for n, s in sizes.items()])
    blob, _ = convert(layer, chunk_size=CHUNK)
    toc, _ = read_toc(blob)
    offsets = [e["offset"] for e in toc["entries"] if "offset" in e]
    assert len(offsets) == len(set(offsets))
    chunks = {}
    for entry in toc["entries"]:
        if entry["type"] in ("reg", "chunk"):
            chunks.setdefault(entry["name"], []).append(entry)
    assert [len(chunks[n]) for n in sizes] == [1, 1, 2, 3, 1, 1]
    assert "chunkSize" not in chunks["exact"][0] and "chunkSize" not in chunks["under"][0]
    over = chunks["over"]
    assert over[0]["chunkSize"] == CHUNK and over[1]["chunkOffset"] == CHUNK and "chunkSize" not in over[1]
    assert over[1]["type"] == "chunk" and set(over[1]) == {"name", "type", "offset", "chunkOffset", "chunkDigest"}
    assert [c.get("chunkOffset", 0) for c in chunks["three"]] == [0, CHUNK, 2 * CHUNK]
    assert [c.get("chunkSize") for c in chunks["three"]] == [CHUNK, CHUNK, None]
    assert chunks["three"][0]["digest"] != chunks["three"][0]["chunkDigest"]
    assert check_chunks(blob) == 1 + 1 + 1 + 2 + 3 + 1  # landmark + files
    assert tree(gunzip(blob), skip_estargz=True) == tree(layer)


def test_many_tiny_files_each_get_a_member():
    layer = build_tar([Entry(f"d/{i:04}", data=b"%d" % i) for i in range(1500)])
    blob, _ = convert(layer)
    assert len(member_starts(blob)) == 1 + 1 + 1500 + 2  # header member, landmark, files, TOC, footer
    assert check_chunks(blob) == 1501
    assert tree(gunzip(blob), skip_estargz=True) == tree(layer)


def test_long_runs_of_headers_are_compressed_as_they_grow():
    # ~6 MB of headers after one file: more than the writer keeps queued for one member.
    layer = build_tar([Entry("first", data=b"payload")]
                      + [Entry(f"dirs/{i:05}-" + "x" * 80 + "/", tarfile.DIRTYPE) for i in range(4000)]
                      + [Entry("last", data=b"end")])
    blob, _ = convert(layer, chunk_size=CHUNK)
    assert tree(gunzip(blob), skip_estargz=True) == tree(layer)
    assert check_chunks(blob) == 3
    assert len(member_starts(blob)) == 1 + 1 + 1 + 1 + 2


def test_large_file_is_split_into_default_size_chunks():
    data = os.urandom((4 << 20) * 2 + 12345)
    blob, _ = convert(build_tar([Entry("big", data=data)]))
    toc, _ = read_toc(blob)
    chunks = [e for e in toc["entries"] if e["name"] == "big"]
    assert [c.get("chunkOffset", 0) for c in chunks] == [0, 4 << 20, 8 << 20]
    assert chunks[0]["digest"] == sha(data)
    assert check_chunks(blob) == 4


# -- determinism ------------------------------------------------------------------------------


def test_output_is_deterministic_and_independent_of_workers():
    layer = build_tar(features() + [Entry(f"f{i}", data=os.urandom(i * 700)) for i in range(30)])
    blobs = {convert(layer, chunk_size=CHUNK, workers=w)[0] for w in (1, 2, 7)}
    assert len(blobs) == 1
    assert convert(layer, chunk_size=CHUNK)[0] in blobs


def mixed_layer() -> bytes:
    """Text, incompressible data, long runs of headers and tiny files: every way members are fed."""
    text = b"".join(b"line %d of some source file, with words repeated\n" % i for i in range(40000))
    entries = [Entry(f"d{i}/", tarfile.DIRTYPE) for i in range(3000)]
    entries += [Entry(f"text/{i}.txt", data=text[i * 997:i * 997 + i * 131]) for i in range(200)]
    entries += [Entry(f"bin/{i}.bin", data=hashlib.shake_256(b"%d" % i).digest(i * 3001)) for i in range(60)]
    return build_tar([*entries, Entry("big.txt", data=text), Entry("big.bin", data=os.urandom(3 << 20))])


FAST_CHILD = """
import hashlib, io, sys
from converter.estargz import PROFILES, LayerOptions, convert_layer
out = io.BytesIO()
convert_layer(sys.stdin.buffer, out, LayerOptions(**PROFILES["fast"], workers=int(sys.argv[1]), chunk_size=1 << 20))
print(hashlib.sha256(out.getvalue()).hexdigest())
"""


def test_fast_profile_output_is_the_same_in_every_run_and_with_any_number_of_workers():
    layer = gzip.compress(mixed_layer(), compresslevel=1)
    in_process = {convert(layer, chunk_size=1 << 20, workers=w, **PROFILES["fast"])[0] for w in (1, 2, 5)}
    assert len(in_process) == 1
    # fresh processes too: their heaps hold other garbage, the library is loaded anew
    digests = {subprocess.run([sys.executable, "-c", FAST_CHILD, str(w)], input=layer, capture_output=True,
                              check=True, cwd=ROOT, timeout=120).stdout.decode().strip() for w in (1, 3)}
    assert digests == {hashlib.sha256(in_process.pop()).hexdigest()}


def test_isal_cache_keys_name_the_cpu_variant():
    keys = {level: LayerOptions(compressor="isal", level=level).cache_key() for level in range(4)}
    assert all(f"compressor=isal/{isal.ISAL_VERSION}+probe-" in key for key in keys.values())
    assert len({key.split(";")[2] for key in keys.values()}) == 4  # each level probed on its own
    assert keys[2] == LayerOptions(compressor="isal", level=2).cache_key()  # stable within the process
    assert "+probe-" not in LayerOptions().cache_key()  # zlib-ng gives the same bytes on every x86-64 CPU


def test_options_change_output_and_cache_key():
    layer = build_tar([Entry("a", data=b"hello " * 5000)])
    assert convert(layer, level=9)[0] != convert(layer, level=1)[0]
    assert convert(layer, compressor="isal", level=2)[0] != convert(layer)[0]
    keys = {LayerOptions().cache_key(), LayerOptions(level=1).cache_key(), LayerOptions(chunk_size=CHUNK).cache_key(),
            LayerOptions(compressor="isal", level=2).cache_key(), LayerOptions(prioritized_files=("a",)).cache_key()}
    assert len(keys) == 5
    assert LayerOptions(workers=1, max_uncompressed_bytes=10).cache_key() == LayerOptions().cache_key()
    normalized = LayerOptions(prioritized_files=("a", "b")).cache_key()
    assert LayerOptions(prioritized_files=["/a", "./b"]).cache_key() == normalized
    assert LayerOptions(prioritized_files=("a", "b"), require_prioritized=False).cache_key() == normalized
    assert LayerOptions(prioritized_files=("b", "a")).cache_key() != normalized  # the order is the front order
    assert "0.1.0" in LayerOptions().cache_key()
    assert LayerOptions().cache_key().endswith(";prioritized=-")  # unchanged: entries cached before still match
    assert ";prioritized=files-sha256:" in normalized


@pytest.mark.parametrize("options, message", [
    ({"level": 10}, "level 10 is not valid for zlib-ng"),
    ({"compressor": "isal", "level": 9}, "level 9 is not valid for isal"),
    ({"compressor": "brotli"}, "unknown compressor"),
    ({"chunk_size": 100}, "chunk size"),
    ({"workers": 0}, "workers"),
    ({"max_uncompressed_bytes": 0}, "limit"),
    ({"prioritized_files": ("/",)}, "does not name a file"),
    ({"require_prioritized": "yes"}, "require_prioritized must be True or False"),
])
def test_invalid_options_are_refused(options, message):
    with pytest.raises(InvalidOptionsError, match=message):
        LayerOptions(**options)


# -- ordering: duplicates, landmarks, prioritized files ---------------------------------------


def names_in_blob(blob):
    with tarfile.open(fileobj=io.BytesIO(gunzip(blob))) as tar:
        return tar.getnames()


class OneWayReader(io.RawIOBase):
    """A source that cannot seek, like an HTTP response body."""

    def __init__(self, data):
        self._data = io.BytesIO(data)

    def readable(self):
        return True

    def readinto(self, buffer):
        chunk = self._data.read(len(buffer))
        buffer[:len(chunk)] = chunk
        return len(chunk)


class OneWayWriter(io.RawIOBase):
    def __init__(self):
        self.data = bytearray()

    def writable(self):
        return True

    def write(self, data):
        self.data += data
        return len(data)


DUPLICATES = [
    Entry("a", data=b"first a"), Entry("dir/", tarfile.DIRTYPE), Entry("b", data=b"b" * 5000),
    Entry("./a", data=b"second a"), Entry("dir", tarfile.DIRTYPE, mode=0o700), Entry("c", data=b"c"),
]


@pytest.mark.parametrize("source_kind", ["seekable", "stream"])
@pytest.mark.parametrize("dest_kind", ["seekable", "stream"])
def test_duplicate_names_keep_the_last_at_its_later_position(source_kind, dest_kind):
    layer = gzip.compress(build_tar(DUPLICATES))
    source = io.BytesIO(layer) if source_kind == "seekable" else io.BufferedReader(OneWayReader(layer))
    dest = io.BytesIO() if dest_kind == "seekable" else OneWayWriter()
    result = convert_layer(source, dest, LayerOptions(chunk_size=CHUNK))
    blob = bytes(dest.getvalue() if dest_kind == "seekable" else dest.data)
    assert names_in_blob(blob) == [".no.prefetch.landmark", "b", "./a", "dir", "c", "stargz.index.json"]
    with tarfile.open(fileobj=io.BytesIO(gunzip(blob))) as tar:
        assert tar.extractfile("./a").read() == b"second a"
        assert tar.getmember("dir").mode == 0o700
    assert result.size == len(blob) and result.digest == sha(blob)
    assert check_chunks(blob) == 5  # landmark, b (two chunks), a, c
    # Same bytes whichever path (single pass and restart, or planned) produced them.
    assert blob == convert(build_tar(DUPLICATES), chunk_size=CHUNK)[0]


def test_existing_landmarks_and_toc_in_the_input_are_dropped():
    layer = build_tar([Entry(".prefetch.landmark", data=b"\x0f"), Entry("./stargz.index.json", data=b"{}"),
                       Entry("a", data=b"a"), Entry(".no.prefetch.landmark", data=b"\x0f")])
    assert names_in_blob(convert(layer)[0]) == [".no.prefetch.landmark", "a", "stargz.index.json"]


def test_converting_an_estargz_blob_again_gives_the_same_tree():
    layer = build_tar(features())
    once, _ = convert(layer, chunk_size=CHUNK)
    twice, _ = convert(once, chunk_size=CHUNK)
    assert tree(gunzip(twice)) == tree(gunzip(once))


PRIORITY_LAYER = [
    Entry("etc/", tarfile.DIRTYPE), Entry("etc/os-release", data=b"ID=test\n"),
    Entry("usr/", tarfile.DIRTYPE), Entry("usr/lib/", tarfile.DIRTYPE), Entry("usr/lib/libc.so", data=b"elf" * 999),
    Entry("usr/bin/", tarfile.DIRTYPE), Entry("usr/bin/app", data=b"app" * 2000),
    Entry("usr/bin/app-link", tarfile.LNKTYPE, linkname="usr/bin/app"),
    Entry("var/", tarfile.DIRTYPE), Entry("var/log", data=b"log"),
]


def test_prioritized_files_come_first_with_parents_and_hardlink_targets():
    layer = build_tar(PRIORITY_LAYER)
    blob, _ = convert(layer, chunk_size=CHUNK, prioritized_files=("/usr/bin/app-link", "./var/log", "usr/lib/libc.so"))
    assert names_in_blob(blob) == [
        "usr", "usr/bin", "usr/bin/app", "usr/bin/app-link", "var", "var/log", "usr/lib", "usr/lib/libc.so",
        ".prefetch.landmark", "etc", "etc/os-release", "stargz.index.json"]
    assert sorted(tree(gunzip(blob), skip_estargz=True)) == sorted(tree(layer))
    toc, _ = read_toc(blob)
    landmark = next(e for e in toc["entries"] if e["name"] == ".prefetch.landmark")
    prefetched = [e for e in toc["entries"] if e.get("offset", 0) and e["offset"] < landmark["offset"]]
    assert {e["name"] for e in prefetched} == {"usr/bin/app", "var/log", "usr/lib/libc.so"}
    assert check_chunks(blob) == 1 + 5


def test_prioritized_files_work_from_a_non_seekable_source():
    layer = gzip.compress(build_tar(PRIORITY_LAYER))
    out = io.BytesIO()
    convert_layer(io.BufferedReader(OneWayReader(layer)), out, LayerOptions(prioritized_files=("etc/os-release",)))
    assert names_in_blob(out.getvalue())[:3] == ["etc", "etc/os-release", ".prefetch.landmark"]


def test_missing_prioritized_file_is_an_error():
    with pytest.raises(PrioritizedFileError, match="prioritized file 'usr/bin/nope' is not in the layer"):
        convert(build_tar(PRIORITY_LAYER), prioritized_files=("usr/bin/nope",))


@pytest.mark.parametrize("dest_kind", ["seekable", "stream"])
def test_missing_prioritized_files_can_be_skipped(dest_kind):
    layer = build_tar(PRIORITY_LAYER)
    dest = io.BytesIO() if dest_kind == "seekable" else OneWayWriter()
    result = convert_layer(io.BytesIO(layer), dest, LayerOptions(
        chunk_size=CHUNK, prioritized_files=("/usr/bin/nope", "var/log", "etc/os-release/x"),
        require_prioritized=False))
    blob = bytes(dest.getvalue() if dest_kind == "seekable" else dest.data)
    assert names_in_blob(blob)[:3] == ["var", "var/log", ".prefetch.landmark"]
    assert result.prioritized == ("var/log",)
    # the same bytes as asking for just the file the layer has
    assert blob == convert(layer, chunk_size=CHUNK, prioritized_files=("var/log",))[0]


def test_skipping_missing_files_in_a_layer_without_any_gives_the_plain_conversion():
    layer = build_tar(DUPLICATES)  # duplicates: the optimistic pass starts over with a plan as well
    result = convert(layer, chunk_size=CHUNK, prioritized_files=("nope",), require_prioritized=False)
    assert result == convert(layer, chunk_size=CHUNK)
    assert result[1].prioritized == () and names_in_blob(result[0])[0] == ".no.prefetch.landmark"


def test_a_skipped_file_does_not_excuse_a_prioritized_hardlink_to_nothing():
    layer = build_tar([Entry("link", tarfile.LNKTYPE, linkname="gone")])
    with pytest.raises(PrioritizedFileError,
                       match="prioritized hardlink 'link' points at 'gone', which is not in the layer"):
        convert(layer, prioritized_files=("link",), require_prioritized=False)


@pytest.mark.parametrize("prioritized", [(), ("usr/bin/app",)])
def test_every_entry_is_shown_to_the_paths_observer(prioritized):
    layer = build_tar([*PRIORITY_LAYER, Entry("etc/.wh.hosts"), Entry("usr/lib/.wh..wh..opq")])
    paths = LayerPaths(("usr/bin/app", "etc/hosts", "usr/lib/libc.so", "usr/lib/old.so", "nope"))
    result = convert_layer(io.BytesIO(layer), io.BytesIO(), LayerOptions(
        chunk_size=CHUNK, prioritized_files=prioritized, require_prioritized=False), paths=paths)
    assert paths.present == ("usr/bin/app", "usr/lib/libc.so")
    assert paths.hidden == ("etc/hosts", "usr/lib/old.so")
    assert result.prioritized == prioritized


# -- input formats and progress ---------------------------------------------------------------


@pytest.mark.parametrize("compress", [
    lambda b: b,
    gzip.compress,
    lambda b: gzip.compress(b[:5000]) + gzip.compress(b[5000:]) + bytes(100),  # multi-member, zero padded
    lambda b: zstandard.ZstdCompressor().compress(b),
    lambda b: (zstandard.ZstdCompressor().compress(b[:5000])
               + zstandard.ZstdCompressor(write_checksum=True).compress(b[5000:])),
], ids=["tar", "gzip", "gzip-multimember", "zstd", "zstd-multiframe"])
def test_input_compression_is_detected(compress):
    layer = build_tar(features())
    blob, _ = convert(compress(layer))
    assert tree(gunzip(blob), skip_estargz=True) == tree(layer)


def test_empty_layer_converts():
    layer = build_tar([])
    blob, _ = convert(gzip.compress(layer))
    assert names_in_blob(blob) == [".no.prefetch.landmark", "stargz.index.json"]
    assert check_chunks(blob) == 1


def test_progress_reports_cumulative_bytes_read_and_written():
    layer = gzip.compress(build_tar([Entry(f"f{i}", data=os.urandom(3000)) for i in range(20)]))
    calls = []
    out = io.BytesIO()
    result = convert_layer(io.BytesIO(layer), out, LayerOptions(chunk_size=CHUNK),
                           progress=lambda read, written: calls.append((read, written)))
    assert len(calls) > 5
    assert calls == sorted(calls)
    assert calls[-1] == (len(layer), result.size)


def test_temporary_files_go_to_the_workdir_and_are_removed(tmp_path):
    layer = build_tar([*PRIORITY_LAYER, Entry("usr/bin/app", data=b"dup")])
    seen = []

    def progress(read, written):
        seen.append(os.listdir(tmp_path))

    convert_layer(io.BufferedReader(OneWayReader(layer)), io.BytesIO(),
                  LayerOptions(prioritized_files=("etc/os-release",)), progress=progress, workdir=str(tmp_path))
    assert any(entries and entries[0].startswith("apparate-estargz-") for entries in seen)
    assert os.listdir(tmp_path) == []
