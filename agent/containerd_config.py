"""containerd's config.toml, edited for the stargz snapshotter: pure text in, text out (no I/O).

`apply(text, ...)` returns the file with the snapshotter wired in, `revert(text, record)` takes
our settings out again. Both go through tomlkit, so comments, order and formatting of everything
else stay as they were. The keys depend on the schema the file declares:

- `version = 2` (containerd 1.x, also read by 2.x): the CRI plugin is
  `plugins."io.containerd.grpc.v1.cri"`; `containerd.snapshotter = "stargz"`,
  `containerd.disable_snapshot_annotations = false` (without it CRI pulls are never lazy: the
  snapshotter gets no image reference), `registry.config_path` for hosts.toml files.
- `version = 3` (containerd 2.x): the image service is `plugins."io.containerd.cri.v1.images"`,
  with `snapshotter`, `disable_snapshot_annotations` and `registry.config_path` directly in it.
- both: `[proxy_plugins.stargz]` with `type = "snapshot"` and the snapshotter's socket.

`registry.config_path` is set only when a registry needs a hosts.toml (plain HTTP or a private
CA) and the file has none; an existing one is kept and its directory used. A missing file is
containerd's defaults: we write a new one with only our keys, for the schema of the running
containerd. A file without `version` is schema 1 (containerd 1.x only), refused unless it holds
no plugin settings (then `version` is added: the top-level keys mean the same in every schema).

Every change is recorded (`Change`: the key path, its value before, ours) so uninstall can undo
exactly our keys when something else rewrote the file meanwhile.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import tomlkit
from tomlkit.exceptions import TOMLKitError
from tomlkit.items import String, StringType, Table

SNAPSHOTTER = "stargz"
CRI_V2 = ("plugins", "io.containerd.grpc.v1.cri")
IMAGES_V3 = ("plugins", "io.containerd.cri.v1.images")
PROXY = ("proxy_plugins", SNAPSHOTTER)
SUPPORTED_SCHEMAS = (2, 3)

Path = tuple[str, ...]


class ConfigError(Exception):
    """The file cannot be edited safely; the message says why, for a person."""


@dataclass(frozen=True)
class Change:
    """One key we set: where, what it was (`existed`/`before`) and what we made it."""

    path: Path
    existed: bool
    before: object
    after: object

    def as_dict(self) -> dict:
        return {**asdict(self), "path": list(self.path)}

    @classmethod
    def from_dict(cls, data: dict) -> Change:
        return cls(tuple(data["path"]), data["existed"], data["before"], data["after"])


@dataclass
class Edit:
    """The outcome of `apply`: the new text (equal to the input when nothing changed)."""

    text: str
    schema: int
    hosts_dir: str  # where hosts.toml files go: the first directory of config_path ("" when none is needed)
    changes: list[Change] = field(default_factory=list)
    created_tables: list[Path] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.changes)


def schema_for(containerd_major: int) -> int:
    """The schema containerd writes by default: 2 for 1.x, 3 from 2.0 on."""
    return 3 if containerd_major >= 2 else 2


def _parse(text: str) -> tomlkit.TOMLDocument:
    try:
        return tomlkit.parse(text)
    except TOMLKitError as error:
        raise ConfigError(f"the containerd config is not valid TOML ({error}); it was left untouched") from error


def file_schema(document: tomlkit.TOMLDocument) -> int | None:
    version = document.get("version")
    if version is None:
        return None
    if not isinstance(version, int) or isinstance(version, bool):
        raise ConfigError(f"the containerd config has a non-integer version ({version!r}); it was left untouched")
    return int(version)


def _get(document, path: Path):
    node = document
    for key in path:
        if not hasattr(node, "get") or key not in node:
            return None
        node = node[key]
    return node


def _plain(value):
    """tomlkit items as plain Python values, for comparison and for the JSON record."""
    return value.unwrap() if hasattr(value, "unwrap") else value


def _like(current, value):
    """`value` written the way `current` is: 'literal' strings stay literal (containerd 2.x writes them)."""
    if isinstance(current, String) and current.type == StringType.SLL and isinstance(value, str) \
            and "'" not in value and "\n" not in value:
        return tomlkit.string(value, literal=True)
    return value


def _table(document, path: Path, created: list[Path]):
    """The table at `path`, creating missing ones. A created table that only holds other tables
    is a super table, so no empty `[a]` header appears above `[a.b]`."""
    node = document
    for depth, key in enumerate(path):
        if key not in node:
            leaf = depth == len(path) - 1
            node.add(key, tomlkit.table(is_super_table=not leaf))
            created.append(path[: depth + 1])
        child = node[key]
        if not hasattr(child, "get") or not hasattr(child, "add"):
            raise ConfigError(f"the containerd config has {'.'.join(path[: depth + 1])} as a value, not a table; "
                              "it was left untouched")
        node = child
    return node


def _wanted(schema: int, socket: str, hosts_dir: str | None) -> list[tuple[Path, object]]:
    cri = (*CRI_V2, "containerd") if schema == 2 else IMAGES_V3
    registry = (CRI_V2 if schema == 2 else IMAGES_V3) + ("registry",)
    wanted: list[tuple[Path, object]] = [
        ((*PROXY, "type"), "snapshot"),
        ((*PROXY, "address"), socket),
        ((*cri, "snapshotter"), SNAPSHOTTER),
        ((*cri, "disable_snapshot_annotations"), False),
    ]
    if hosts_dir:
        wanted.append(((*registry, "config_path"), hosts_dir))
    return wanted


def registry_path(schema: int) -> Path:
    return (CRI_V2 if schema == 2 else IMAGES_V3) + ("registry", "config_path")


def apply(text: str | None, containerd_major: int, socket: str, hosts_dir: str | None) -> Edit:
    """Wire the stargz snapshotter into `text` (None: no file, containerd's defaults). `hosts_dir`:
    the `registry.config_path` to set when a registry needs a hosts.toml and the file names none
    (None: no registry needs one)."""
    schema_default = schema_for(containerd_major)
    document = _parse(text) if text is not None else tomlkit.document()
    schema = file_schema(document)
    changes: list[Change] = []
    created: list[Path] = []
    if schema is None:
        if "plugins" in document or "proxy_plugins" in document:
            raise ConfigError(
                "the containerd config has no `version` key, so it is schema version 1, which the agent does not "
                "edit; convert it with `containerd config migrate` (or add `version = 2` with the plugin names "
                "of schema 2) and restart the agent")
        schema = schema_default
        document["version"] = schema
        changes.append(Change(("version",), False, None, schema))
    if schema not in SUPPORTED_SCHEMAS:
        raise ConfigError(f"the containerd config declares version = {schema}; the agent edits versions 2 "
                          "(containerd 1.x) and 3 (containerd 2.x)")
    if hosts_dir:
        current = _plain(_get(document, registry_path(schema)))
        hosts_dir = current if isinstance(current, str) and current else hosts_dir
    for path, value in _wanted(schema, socket, hosts_dir):
        current = _get(document, path)
        if current is not None and _plain(current) == value:
            continue
        table = _table(document, path[:-1], created)
        if current is None:
            table.add(path[-1], value)
        else:
            table[path[-1]] = _like(current, value)
        changes.append(Change(path, current is not None, _plain(current), value))
    for path in created if text else ():
        table = _get(document, path)
        if not table.is_super_table():
            table.add(tomlkit.nl())  # a blank line before the file's next table
    new_text = document.as_string() if changes else (text or "")
    return Edit(new_text, schema, hosts_dir.split(":")[0] if hosts_dir else "", changes, created)


def holds_any(text: str, changes: list[Change]) -> bool:
    """Does `text` still hold any of our settings with our value? (`version` does not count: a
    file written by someone else has one too.)"""
    document = _parse(text)
    return any(_plain(_get(document, change.path)) == change.after for change in changes
               if change.path != ("version",))


def revert(text: str, changes: list[Change], created_tables: list[Path]) -> tuple[str, list[str]]:
    """Take our settings out of `text`: a key that still has our value gets its old value back (or
    goes, if it did not exist); one that something else changed since is left alone and named in
    the returned notes. Tables we created are removed once empty."""
    document = _parse(text)
    notes: list[str] = []
    for change in reversed(changes):
        current = _get(document, change.path)
        name = ".".join(change.path)
        if current is None:
            continue
        if _plain(current) != change.after:
            notes.append(f"{name} was changed by something else since the agent set it; left as it is")
            continue
        parent = _get(document, change.path[:-1]) if len(change.path) > 1 else document
        if change.existed:
            parent[change.path[-1]] = _like(current, change.before)
        else:
            del parent[change.path[-1]]
    for path in sorted(created_tables, key=len, reverse=True):
        table = _get(document, path)
        if isinstance(table, Table) and not table.value:
            parent = _get(document, path[:-1]) if len(path) > 1 else document
            del parent[path[-1]]
    return document.as_string(), notes
