"""Editing containerd's config.toml: exact keys per schema, formatting kept, undo, refusals.

The 1.6 file is Debian's containerd `config default`; the 2.x files follow containerd 2.x's
layout (version 3) — containerd 2.x itself cannot run here (Debian bookworm ships 1.6)."""

import difflib
from pathlib import Path

import pytest
import tomlkit

from agent.containerd_config import Change, ConfigError, apply, holds_any, revert

CONFIGS = Path(__file__).parent / "configs"
SOCKET = "/run/containerd-stargz-grpc/containerd-stargz-grpc.sock"
HOSTS = "/etc/containerd/certs.d"


def diff(before: str, after: str) -> list[str]:
    return [line for line in difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=0)
            if line[:1] in "+-" and line[:3] not in ("+++", "---")]


def test_version_2_sets_the_cri_plugin_keys_and_the_proxy_plugin_and_nothing_else():
    original = (CONFIGS / "containerd-1.6-default.toml").read_text()
    edit = apply(original, 1, SOCKET, HOSTS)
    assert diff(original, edit.text) == [
        "-      disable_snapshot_annotations = true",
        "+      disable_snapshot_annotations = false",
        '-      snapshotter = "overlayfs"',
        '+      snapshotter = "stargz"',
        '-      config_path = ""',
        '+      config_path = "/etc/containerd/certs.d"',
        "+[proxy_plugins.stargz]",
        '+type = "snapshot"',
        f'+address = "{SOCKET}"',
        "+",
    ]
    assert [c.path for c in edit.changes] == [
        ("proxy_plugins", "stargz", "type"), ("proxy_plugins", "stargz", "address"),
        ("plugins", "io.containerd.grpc.v1.cri", "containerd", "snapshotter"),
        ("plugins", "io.containerd.grpc.v1.cri", "containerd", "disable_snapshot_annotations"),
        ("plugins", "io.containerd.grpc.v1.cri", "registry", "config_path"),
    ]
    assert edit.changes[2] == Change(edit.changes[2].path, True, "overlayfs", "stargz")
    assert (edit.schema, edit.hosts_dir) == (2, HOSTS)


def test_version_3_uses_the_images_plugin_and_keeps_literal_strings():
    original = (CONFIGS / "containerd-2.x.toml").read_text()
    edit = apply(original, 2, SOCKET, HOSTS)
    assert diff(original, edit.text) == [
        "-    snapshotter = 'overlayfs'",
        "-    disable_snapshot_annotations = true",
        "+    snapshotter = 'stargz'",
        "+    disable_snapshot_annotations = false",
        "-      config_path = ''",
        "+      config_path = '/etc/containerd/certs.d'",
        "+",
        "+[proxy_plugins.stargz]",
        '+type = "snapshot"',
        f'+address = "{SOCKET}"',
        "+",
    ]
    images = tomlkit.parse(edit.text)["plugins"]["io.containerd.cri.v1.images"]
    assert (images["snapshotter"], images["disable_snapshot_annotations"]) == ("stargz", False)
    # The runtime's per-handler snapshotter stays empty: it then follows the images plugin.
    assert tomlkit.parse(edit.text)["plugins"]["io.containerd.cri.v1.runtime"]["containerd"]["runtimes"]["runc"][
        "snapshotter"] == ""


def test_an_existing_config_path_is_kept_and_its_first_directory_used():
    original = (CONFIGS / "containerd-2.x-registry.toml").read_text()
    edit = apply(original, 2, SOCKET, HOSTS)
    assert edit.hosts_dir == "/etc/containerd/certs.d"
    assert "registry" not in {c.path[-2] for c in edit.changes}
    assert 'config_path = "/etc/containerd/certs.d:/etc/docker/certs.d"' in edit.text
    assert "# Registry mirrors and CAs are managed by the platform team in certs.d." in edit.text


def test_no_registry_needing_hosts_leaves_config_path_alone():
    original = (CONFIGS / "containerd-1.6-default.toml").read_text()
    edit = apply(original, 1, SOCKET, None)
    assert edit.hosts_dir == ""
    assert 'config_path = ""' in edit.text


@pytest.mark.parametrize(("major", "expected"), [
    (1, f'version = 2\n\n[proxy_plugins.stargz]\ntype = "snapshot"\naddress = "{SOCKET}"\n\n'
        '[plugins."io.containerd.grpc.v1.cri".containerd]\nsnapshotter = "stargz"\n'
        'disable_snapshot_annotations = false\n\n[plugins."io.containerd.grpc.v1.cri".registry]\n'
        f'config_path = "{HOSTS}"\n'),
    (2, f'version = 3\n\n[proxy_plugins.stargz]\ntype = "snapshot"\naddress = "{SOCKET}"\n\n'
        '[plugins."io.containerd.cri.v1.images"]\nsnapshotter = "stargz"\ndisable_snapshot_annotations = false\n\n'
        f'[plugins."io.containerd.cri.v1.images".registry]\nconfig_path = "{HOSTS}"\n'),
])
def test_a_missing_file_gets_only_our_keys_in_the_running_containerds_schema(major, expected):
    edit = apply(None, major, SOCKET, HOSTS)
    assert edit.text == expected
    assert edit.changes[0] == Change(("version",), False, None, 2 if major == 1 else 3)


def test_a_file_without_version_and_without_plugins_gets_a_version():
    edit = apply('root = "/data/containerd"\n', 1, SOCKET, None)
    assert edit.text.startswith('root = "/data/containerd"\nversion = 2\n')
    assert tomlkit.parse(edit.text)["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["snapshotter"] == "stargz"


@pytest.mark.parametrize(("text", "message"), [
    ('[plugins.cri.containerd]\nsnapshotter = "overlayfs"\n',
     "the containerd config has no `version` key, so it is schema version 1, which the agent does not edit; "
     "convert it with `containerd config migrate` (or add `version = 2` with the plugin names of schema 2) and "
     "restart the agent"),
    ("version = 4\n", "the containerd config declares version = 4; the agent edits versions 2 (containerd 1.x) and 3 "
                      "(containerd 2.x)"),
    ('version = "2"\n', "the containerd config has a non-integer version ('2'); it was left untouched"),
    ('version = 2\nproxy_plugins = "x"\n',
     "the containerd config has proxy_plugins as a value, not a table; it was left untouched"),
])
def test_files_the_agent_will_not_edit_are_refused_with_the_reason(text, message):
    with pytest.raises(ConfigError) as refused:
        apply(text, 1, SOCKET, HOSTS)
    assert str(refused.value) == message


def test_invalid_toml_is_refused():
    with pytest.raises(ConfigError, match=r"^the containerd config is not valid TOML \(.*\); it was left untouched$"):
        apply("version = 2\n[plugins\n", 1, SOCKET, HOSTS)


def test_applying_twice_changes_nothing_the_second_time():
    for name, major in (("containerd-1.6-default.toml", 1), ("containerd-2.x.toml", 2)):
        once = apply((CONFIGS / name).read_text(), major, SOCKET, HOSTS)
        twice = apply(once.text, major, SOCKET, HOSTS)
        assert (twice.changed, twice.text) == (False, once.text)


def test_dotted_keys_are_edited_in_place():
    text = 'version = 2\nplugins."io.containerd.grpc.v1.cri".containerd.snapshotter = "overlayfs"\n'
    edit = apply(text, 1, SOCKET, None)
    assert edit.text.splitlines()[1] == 'plugins."io.containerd.grpc.v1.cri".containerd.snapshotter = "stargz"'


def test_revert_undoes_our_keys_and_reports_the_ones_changed_since():
    original = (CONFIGS / "containerd-1.6-default.toml").read_text()
    edit = apply(original, 1, SOCKET, HOSTS)
    assert revert(edit.text, edit.changes, edit.created_tables) == (original, [])

    # Someone turned the snapshotter to native meanwhile: theirs stays.
    changed = edit.text.replace('snapshotter = "stargz"', 'snapshotter = "native"')
    text, notes = revert(changed, edit.changes, edit.created_tables)
    assert notes == ["plugins.io.containerd.grpc.v1.cri.containerd.snapshotter was changed by something else since "
                     "the agent set it; left as it is"]
    assert text == original.replace('snapshotter = "overlayfs"', 'snapshotter = "native"')


def test_revert_of_a_version_3_file_keeps_its_literal_strings():
    original = (CONFIGS / "containerd-2.x.toml").read_text()
    edit = apply(original, 2, SOCKET, HOSTS)
    text, notes = revert(edit.text, edit.changes, edit.created_tables)
    assert notes == []
    assert text.rstrip("\n") == original.rstrip("\n")  # at most a trailing blank line differs


def test_holds_any_ignores_the_version_key():
    edit = apply('root = "/x"\n', 1, SOCKET, None)
    assert holds_any(edit.text, edit.changes)
    assert not holds_any("version = 2\n", edit.changes)
