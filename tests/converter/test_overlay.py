"""`LayerPaths`: which of an image's prioritized files a layer holds, and which it hides below."""

import pytest

from converter.overlay import LayerPaths

WATCHED = ("usr/bin/python3", "etc/config", "data/cache/index.bin", "app/main.py", "srv/www/index.html")


def watch(*entries: tuple[str, bool]) -> LayerPaths:
    paths = LayerPaths(WATCHED)
    for name, is_dir in entries:
        paths.see(name, is_dir)
    return paths


def test_an_entry_for_a_watched_path_makes_it_present_in_watched_order():
    paths = watch(("app/main.py", False), ("usr", True), ("usr/bin/python3", False), ("usr/bin/pip", False))
    assert paths.present == ("usr/bin/python3", "app/main.py")
    assert paths.hidden == ()


@pytest.mark.parametrize("whiteout, hidden", [
    ("etc/.wh.config", ("etc/config",)),  # the file itself
    ("data/.wh.cache", ("data/cache/index.bin",)),  # a parent directory, with all below it
    (".wh.srv", ("srv/www/index.html",)),  # at the root
    ("etc/.wh.conf", ()),  # a name that only starts like a watched one
    ("data/cache/.wh.index.bin.bak", ()),
])
def test_whiteouts_hide_the_path_and_everything_below_it(whiteout, hidden):
    assert watch((whiteout, False)).hidden == hidden


@pytest.mark.parametrize("marker, hidden", [
    ("data/.wh..wh..opq", ("data/cache/index.bin",)),
    ("data/cache/.wh..wh..opq", ("data/cache/index.bin",)),
    (".wh..wh..opq", WATCHED),  # an opaque root hides every lower path
    ("etc/config/.wh..wh..opq", ()),  # inside the watched path: hides only what is below it
    ("dat/.wh..wh..opq", ()),
])
def test_an_opaque_directory_hides_what_lower_layers_hold_below_it(marker, hidden):
    assert watch((marker, False)).hidden == hidden


def test_a_non_directory_at_a_parent_path_hides_the_paths_below_it_the_last_entry_wins():
    assert watch(("usr/bin", False)).hidden == ("usr/bin/python3",)  # e.g. a symlink replacing the directory
    assert watch(("usr/bin", True)).hidden == ()
    assert watch(("usr/bin", False), ("usr/bin", True)).hidden == ()
    assert watch(("usr/bin", True), ("usr/bin", False)).hidden == ("usr/bin/python3",)


def test_a_path_present_in_the_layer_is_never_reported_hidden():
    # a layer may clear a directory (opaque marker) and fill it again: its own file is present
    paths = watch(("data/cache/.wh..wh..opq", False), ("data/cache/index.bin", False))
    assert (paths.present, paths.hidden) == (("data/cache/index.bin",), ())


def test_feeding_the_entries_again_gives_the_same_answers():
    entries = [("etc/.wh.config", False), ("usr/bin/python3", False), ("srv", False)]
    once = watch(*entries)
    twice = watch(*entries, *entries)
    assert (once.present, once.hidden) == (twice.present, twice.hidden) == (
        ("usr/bin/python3",), ("etc/config", "srv/www/index.html"))
