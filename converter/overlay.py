"""How the layers of an image stack up, for a few paths: which layer a path really lives in.

An image's filesystem is its layers applied bottom to top. A path lives in the top-most layer that
has an entry for it, unless a layer above that one hides it:

- a whiteout `dir/.wh.<name>` deletes `dir/<name>` (and everything under it) from the layers below;
- an opaque marker `dir/.wh..wh..opq` hides everything the layers below hold under `dir`;
- a non-directory entry (file, symlink, ...) at a parent path replaces the directory, so nothing
  below it is reachable any more.

`LayerPaths` watches the entries of one layer for a fixed, small set of paths (a rule's prioritized
files), so the image converter can prioritize each file in the layer where it really lives. It keeps
a few sets of those paths, never the layer's full list of names. Paths are normalized tar names
(`converter.tarinput.clean_name`: no leading slash). Feeding the same entries again (a second pass
over the layer) gives the same answers.
"""

import posixpath
from collections.abc import Iterable

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"


class LayerPaths:
    """What one layer holds of `paths`, and which of them it hides from the layers below it."""

    def __init__(self, paths: Iterable[str]):
        self.paths = tuple(paths)
        self._wanted = frozenset(self.paths)
        self._under: dict[str, list[str]] = {}  # proper ancestor directory -> watched paths below it
        for path in self.paths:
            parent = posixpath.dirname(path)
            while parent:
                self._under.setdefault(parent, []).append(path)
                parent = posixpath.dirname(parent)
        self._present: set[str] = set()
        self._whited_out: set[str] = set()
        self._ancestor_is_dir: dict[str, bool] = {}  # last entry seen at a watched ancestor path

    def see(self, name: str, is_dir: bool) -> None:
        """Record one entry of the layer (its normalized name)."""
        base = posixpath.basename(name)
        parent = posixpath.dirname(name)
        if base == OPAQUE_MARKER:
            self._whited_out.update(self.paths if not parent else self._under.get(parent, ()))
        elif base.startswith(WHITEOUT_PREFIX):
            target = posixpath.join(parent, base[len(WHITEOUT_PREFIX):])
            if target in self._wanted:
                self._whited_out.add(target)
            self._whited_out.update(self._under.get(target, ()))
        else:
            if name in self._wanted:
                self._present.add(name)
            if name in self._under:
                self._ancestor_is_dir[name] = is_dir

    @property
    def present(self) -> tuple[str, ...]:
        """The watched paths this layer has an entry for, in the watched order."""
        return tuple(path for path in self.paths if path in self._present)

    @property
    def hidden(self) -> tuple[str, ...]:
        """The watched paths this layer does not have but hides from every layer below it."""
        hidden = set(self._whited_out)
        for ancestor, is_dir in self._ancestor_is_dir.items():
            if not is_dir:
                hidden.update(self._under[ancestor])
        return tuple(path for path in self.paths if path in hidden and path not in self._present)
