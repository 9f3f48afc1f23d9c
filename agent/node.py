"""The agent's verbs on a node: `install`, `check` and `uninstall`.

`install` (idempotent: nothing changed means nothing written and nothing restarted):
1. preflight: `/dev/fuse` exists, containerd answers and its version is supported;
2. the snapshotter: binary, config.toml, credentials, CA files and systemd unit on the host; the
   service enabled and started (never restarted while lazily pulled layers are mounted: that
   would cut running containers off their files; the restart then waits, see `Status.notes`),
   and its socket answers — before containerd is pointed at it;
3. containerd: its config edited (a backup of the original kept in the state directory),
   hosts.toml files for registries that need one, and a restart only when config.toml changed.
   If containerd does not answer again, or its CRI plugin refuses the new config, the previous
   file is put back and containerd restarted with it;
4. `check`: containerd answers, its introspection lists the `stargz` snapshotter plugin loaded,
   its CRI plugin loaded, and the snapshotter's socket answers.

`uninstall` first removes the images containerd unpacked only for the stargz snapshotter (their
layers have no blob in the content store, so once the CRI plugin is back on overlayfs containerd
could not unpack them again: kubelet pulls them anew instead). It then puts containerd's config
back byte for byte when nothing else changed it since the agent wrote it (otherwise only the
agent's keys are taken out, and the status says so), removes our hosts.toml files, restarts
containerd, then stops and removes the snapshotter service, its unit, binary and configuration,
and the agent's state. Containers created while the snapshotter was CRI's default keep their root
filesystems on its snapshots: while any exists, the snapshotter is left running for them (no
longer started at boot) and a one-shot unit removes its files at the next boot.

What the agent remembers between runs lives in `<state_dir>/state.json` on the host, so a new
agent pod (restart or upgrade) picks up where the previous one left off.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from . import containerd, containerd_config, files
from .containerd_config import SNAPSHOTTER, Change, ConfigError
from .inputs import AgentInputs
from .paths import BOOT_CLEANUP_UNIT, SNAPSHOTTER_UNIT, HostPaths
from .services import ServiceError, ServiceManager
from .status import Code, Status, fuse_missing, restart_failed, write_status

STATE_FILE = "state.json"
CONFIG_BACKUP = "containerd-config.toml.orig"
# Where the agent image keeps the upstream daemon it installs on the host.
IMAGE_SNAPSHOTTER = "/usr/local/bin/containerd-stargz-grpc"


class Failure(Exception):
    """Stops an install: the node is not ready, for the reason given."""

    def __init__(self, code: Code, reason: str):
        super().__init__(reason)
        self.code, self.reason = code, reason


@dataclass
class Node:
    """One node as the agent sees it: host paths, the host's filesystem and its service manager."""

    services: ServiceManager
    paths: HostPaths = field(default_factory=HostPaths)
    host_root: Path = Path("/host")
    snapshotter_source: Path = Path(IMAGE_SNAPSHOTTER)
    restart_timeout: float = 60.0  # seconds containerd gets to answer again after a restart
    start_timeout: float = 30.0  # seconds the snapshotter gets to answer on its socket

    def host_file(self, path: str) -> Path:
        return self.host_root / path.lstrip("/")

    @property
    def state_dir(self) -> Path:
        return self.host_file(self.paths.state_dir)

    def load_state(self) -> dict:
        try:
            return json.loads((self.state_dir / STATE_FILE).read_text())
        except FileNotFoundError:
            return {}

    def save_state(self, state: dict) -> None:
        write_if_changed(self.state_dir / STATE_FILE, json.dumps(state, indent=2).encode(), 0o600)


def sha256(data: bytes | None) -> str | None:
    return None if data is None else hashlib.sha256(data).hexdigest()


def write_file(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace `path` atomically (a reader sees the old file or the new one, never half)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_if_changed(path: Path, data: bytes, mode: int = 0o644) -> bool:
    """Write only when the content differs; True when it was written."""
    try:
        if path.read_bytes() == data:
            return False
    except FileNotFoundError:
        pass
    write_file(path, data, mode)
    return True


def read_optional(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def lazy_mounts(node: Node) -> list[str]:
    """Mount points of the snapshotter's FUSE layers, from the host's mount table."""
    root = node.paths.snapshotter_root.rstrip("/") + "/"
    mounts = []
    for line in node.host_file("/proc/1/mountinfo").read_text().splitlines():
        fields, _, after = line.partition(" - ")
        mount_point = fields.split(" ")[4].replace("\\040", " ")
        if after.startswith("fuse") and mount_point.startswith(root):
            mounts.append(mount_point)
    return mounts


# ---- install


def install(node: Node, inputs: AgentInputs) -> Status:
    """Set the node up for lazy pulling; returns (and writes) its status."""
    version = ""
    try:
        version = preflight(node)
        notes = install_snapshotter(node, inputs)
        notes += configure_containerd(node, inputs, version)
    except Failure as failure:
        status = Status.failed(failure.code, failure.reason, containerd_version=version)
    else:
        status = check(node)
        status.notes = notes + status.notes
    write_status(node.state_dir, status)
    return status


def preflight(node: Node) -> str:
    """containerd's version, once FUSE and containerd are known to be usable."""
    if not node.host_file(node.paths.fuse_device).exists():
        raise Failure(Code.FUSE_MISSING, fuse_missing(node.paths.fuse_device))
    try:
        version = containerd.version(node.paths.containerd_address)
    except containerd.Unreachable as error:
        raise Failure(Code.CONTAINERD_UNREACHABLE, f"containerd does not answer: {error}") from error
    problem = containerd.supported_version_problem(version)
    if problem:
        raise Failure(Code.CONTAINERD_UNSUPPORTED, problem)
    return version


def _ca_file_name(host: str) -> str:
    return host.replace(":", "_").strip("[]") + ".crt"


def install_snapshotter(node: Node, inputs: AgentInputs) -> list[str]:
    paths, services = node.paths, node.services
    host = node.host_file
    changed = write_if_changed(host(paths.snapshotter_binary), node.snapshotter_source.read_bytes(), 0o755)
    changed |= write_if_changed(host(paths.snapshotter_config), files.snapshotter_config(inputs).encode())
    # The snapshotter reads credentials on every authentication: changing them needs no restart.
    docker_json = host(paths.docker_config_dir) / "config.json"
    if inputs.docker_config is not None:
        write_if_changed(docker_json, inputs.docker_config, 0o600)
    else:
        docker_json.unlink(missing_ok=True)
    ca_dir = host(paths.snapshotter_ca_dir)
    wanted_cas = {_ca_file_name(r.host): r.ca_pem.encode() for r in inputs.registries if r.ca_pem}
    for name, pem in wanted_cas.items():
        changed |= write_if_changed(ca_dir / name, pem)
    for stale in (set(os.listdir(ca_dir)) - set(wanted_cas)) if ca_dir.is_dir() else ():
        (ca_dir / stale).unlink()
        changed = True
    unit_written = write_if_changed(host(paths.unit_file), files.snapshotter_unit(paths, bool(wanted_cas)).encode())
    state = node.load_state()
    notes = []
    try:
        cancel_boot_cleanup(node)
        if unit_written:
            services.daemon_reload()
            services.enable(SNAPSHOTTER_UNIT)
        if not services.is_active(SNAPSHOTTER_UNIT):
            services.start(SNAPSHOTTER_UNIT)
            state.pop("snapshotter_restart_pending", None)
        elif changed or unit_written or state.get("snapshotter_restart_pending"):
            in_use = lazy_mounts(node)
            if in_use:
                state["snapshotter_restart_pending"] = True
                notes.append(f"the snapshotter's new binary or configuration takes effect once no lazily pulled "
                             f"layer is mounted ({len(in_use)} are now): restarting it would cut running "
                             "containers off their files")
            else:
                services.restart(SNAPSHOTTER_UNIT)
                state.pop("snapshotter_restart_pending", None)
    except ServiceError as error:
        raise Failure(Code.SERVICE_FAILED, f"the snapshotter service could not be started: {error}") from error
    finally:
        node.save_state(state)
    try:
        containerd.wait_for(lambda: _raise_unless_answers(paths.snapshotter_address), node.start_timeout)
    except containerd.Unreachable as error:
        raise Failure(Code.SNAPSHOTTER_NOT_ANSWERING, f"the stargz snapshotter does not answer: {error}") from error
    return notes


def _raise_unless_answers(address: str) -> None:
    problem = containerd.snapshotter_answers(address)
    if problem:
        raise containerd.Unreachable(problem)


def write_hosts_files(node: Node, inputs: AgentInputs, hosts_dir: str, state: dict) -> list[str]:
    """hosts.toml (and the CA it names) for each registry that needs one; an existing hosts.toml we
    did not write is left alone: whoever wrote it manages that registry."""
    notes = []
    written = set(state.get("hosts_files", []))
    for registry in inputs.registries:
        if not registry.needs_hosts_file:
            continue
        directory = f"{hosts_dir.rstrip('/')}/{registry.host}"
        hosts_file = f"{directory}/hosts.toml"
        existing = read_optional(node.host_file(hosts_file))
        if existing is not None and not existing.startswith(files.MARKER.encode()):
            notes.append(f"{hosts_file} exists and was not written by the agent; left as it is")
            continue
        ca_path = None
        if registry.ca_pem:
            ca_path = f"{directory}/{files.CA_FILE}"
            write_if_changed(node.host_file(ca_path), registry.ca_pem.encode())
            written.add(ca_path)
        write_if_changed(node.host_file(hosts_file), files.hosts_toml(registry, ca_path).encode())
        written.add(hosts_file)
    state["hosts_files"] = sorted(written)
    return notes


def _record(previous: dict | None, before: bytes | None, edit: containerd_config.Edit) -> tuple[dict, bool]:
    """What uninstall needs to undo this edit, merged with what earlier installs did; the flag is
    True when `before` is a new original (whose bytes are then kept for a byte-for-byte restore)."""
    if previous is not None and previous["written_sha256"] != sha256(before):
        # Something else rewrote the file since we last wrote it.
        if containerd_config.holds_any(before.decode() if before else "", _changes(previous)):
            previous = {**previous, "byte_for_byte": False}
        else:
            previous = None  # none of our settings is left: this file is a new original
    if previous is None:
        return {"original_existed": before is not None, "byte_for_byte": True,
                "changes": [c.as_dict() for c in edit.changes],
                "created_tables": [list(t) for t in edit.created_tables]}, True
    known = {tuple(c["path"]) for c in previous["changes"]}
    return {**previous,
            "changes": previous["changes"] + [c.as_dict() for c in edit.changes if c.path not in known],
            "created_tables": previous["created_tables"] + [list(t) for t in edit.created_tables]}, False


def _changes(record: dict) -> list[Change]:
    return [Change.from_dict(c) for c in record["changes"]]


def configure_containerd(node: Node, inputs: AgentInputs, version: str) -> list[str]:
    paths = node.paths
    config_file = node.host_file(paths.containerd_config)
    before = read_optional(config_file)
    needs_hosts = any(registry.needs_hosts_file for registry in inputs.registries)
    try:
        text = before.decode() if before is not None else None
        edit = containerd_config.apply(text, containerd.parse_version(version)[0], paths.snapshotter_address,
                                       paths.registry_hosts_dir if needs_hosts else None)
    except (ConfigError, UnicodeDecodeError) as error:
        raise Failure(Code.CONFIG_NOT_WRITTEN, f"the containerd config {paths.containerd_config} could not be "
                                               f"written: {error}") from error
    state = node.load_state()
    notes = write_hosts_files(node, inputs, edit.hosts_dir, state) if edit.hosts_dir else []
    if not edit.changed:
        node.save_state(state)
        return notes
    previous = state.get("config")
    record, fresh_original = _record(previous, before, edit)
    if fresh_original and before is not None:
        write_file(node.state_dir / CONFIG_BACKUP, before, 0o600)
    new = edit.text.encode()
    mode = config_file.stat().st_mode & 0o7777 if before is not None else 0o644
    try:
        write_file(config_file, new, mode)
    except OSError as error:
        raise Failure(Code.CONFIG_NOT_WRITTEN, f"the containerd config {paths.containerd_config} could not be "
                                               f"written: {error.strerror or error}") from error
    # Saved before the restart, so an agent killed meanwhile still knows how to undo the edit.
    node.save_state({**state, "config": {**record, "written_sha256": sha256(new)}})
    problem = restart_containerd(node)
    if problem:
        if before is None:
            config_file.unlink(missing_ok=True)
        else:
            write_file(config_file, before, mode)
        node.save_state({**state, "config": previous} if previous else {k: v for k, v in state.items()
                                                                          if k != "config"})
        raise Failure(Code.CONTAINERD_RESTART_FAILED, restart_failed(problem, restart_containerd(node)))
    return notes


def restart_containerd(node: Node) -> str | None:
    """Restart containerd and wait until it answers with its CRI plugin loaded; else why not."""
    address = node.paths.containerd_address
    try:
        node.services.restart(node.paths.containerd_service)
        containerd.wait_for(lambda: containerd.version(address), node.restart_timeout)
        loaded = containerd.plugins(address)
    except (ServiceError, containerd.Unreachable) as error:
        return str(error)
    refused = [f"{plugin.name}: {plugin.error}" for plugin in loaded
               if plugin.name in containerd.CRI_PLUGINS and plugin.error]
    return "its CRI plugin did not load: " + "; ".join(refused) if refused else None


# ---- check


def check(node: Node) -> Status:
    """Is the node ready to lazy-pull right now? Asks containerd and the snapshotter, writes nothing."""
    paths = node.paths
    try:
        version = preflight(node)
        loaded = {plugin.name: plugin for plugin in containerd.plugins(paths.containerd_address)}
    except Failure as failure:
        return Status.failed(failure.code, failure.reason)
    except containerd.Unreachable as error:
        return Status.failed(Code.CONTAINERD_UNREACHABLE, f"containerd does not answer: {error}")
    cri = loaded.get(containerd.CRI_PLUGIN)
    if cri is None or cri.error:
        why = cri.error if cri else "it is not in containerd's plugin list"
        return Status.failed(Code.CRI_NOT_LOADED, f"containerd's CRI plugin is not loaded: {why}",
                             containerd_version=version)
    stargz = loaded.get(containerd.SNAPSHOTTER_PLUGIN)
    if stargz is None:
        return Status.failed(Code.SNAPSHOTTER_NOT_LOADED, "containerd has no stargz snapshotter plugin: its "
                             f"configuration ({paths.containerd_config}) does not declare it",
                             containerd_version=version)
    if stargz.error:
        return Status.failed(Code.SNAPSHOTTER_NOT_LOADED, f"containerd could not load the stargz snapshotter "
                             f"plugin: {stargz.error}", containerd_version=version)
    problem = containerd.snapshotter_answers(paths.snapshotter_address)
    if problem:
        return Status.failed(Code.SNAPSHOTTER_NOT_ANSWERING, f"the stargz snapshotter does not answer: {problem}",
                             containerd_version=version)
    return Status(True, Code.READY, "containerd uses the stargz snapshotter", containerd_version=version)


# ---- uninstall


def uninstall(node: Node) -> Status:
    """Put the node back as it was before the agent; returns (does not write) the final status."""
    state = node.load_state()
    notes: list[str] = []
    paths, services = node.paths, node.services
    in_use = release_lazy_images(node, notes)
    config_changed = restore_containerd_config(node, state.get("config"), notes)
    for host_path in reversed(state.get("hosts_files", [])):
        file = node.host_file(host_path)
        content = read_optional(file)
        if content is not None and (host_path.endswith(files.CA_FILE) or content.startswith(files.MARKER.encode())):
            file.unlink()
        _remove_empty_dir(file.parent)
    if config_changed:
        problem = restart_containerd(node)
        if problem:
            return Status.failed(Code.CONTAINERD_RESTART_FAILED, "containerd's original configuration was put back, "
                                 f"but containerd does not answer after a restart: {problem}", notes=notes)
    if in_use:
        return _leave_running_for(node, in_use, notes)
    try:
        if services.is_active(SNAPSHOTTER_UNIT):
            services.stop(SNAPSHOTTER_UNIT)
        _remove_unit(node, SNAPSHOTTER_UNIT, paths.unit_file)
    except ServiceError as error:
        return Status.failed(Code.SERVICE_FAILED, f"the snapshotter service could not be removed: {error}",
                             notes=notes)
    node.host_file(paths.snapshotter_binary).unlink(missing_ok=True)
    shutil.rmtree(node.host_file(paths.snapshotter_config_dir), ignore_errors=True)
    in_use = lazy_mounts(node)
    if in_use:
        notes.append(f"{paths.snapshotter_root} was kept: {len(in_use)} lazily pulled layers are still mounted "
                     "there; remove it after a reboot")
    else:
        shutil.rmtree(node.host_file(paths.snapshotter_root), ignore_errors=True)
    shutil.rmtree(node.state_dir, ignore_errors=True)
    return Status(False, Code.REMOVED, REMOVED, notes=notes)


REMOVED = "the snapshotter was removed and containerd's configuration restored"


def release_lazy_images(node: Node, notes: list[str]) -> list[containerd.ContainerRef]:
    """Remove the images containerd unpacked only for the stargz snapshotter, while containerd still
    reaches it (so their snapshots are collected); the containers still on its snapshots."""
    address = node.paths.containerd_address
    try:
        for image in containerd.images_unpacked_only_for(address, SNAPSHOTTER):
            containerd.remove_image(address, image)
        return containerd.containers_on(address, SNAPSHOTTER)
    except containerd.Unreachable as error:
        notes.append(f"lazily pulled images could not be removed (containerd does not answer: {error}); "
                     "kubelet cannot start containers from them once containerd is back on its own snapshotter: "
                     "remove them with `crictl rmi`")
        return []


def _remove_unit(node: Node, name: str, unit_file: str) -> None:
    unit = node.host_file(unit_file)
    if unit.exists():
        node.services.disable(name)
        unit.unlink()
        node.services.daemon_reload()


def cancel_boot_cleanup(node: Node) -> None:
    """A new install takes the snapshotter back: the cleanup an earlier uninstall left for the next boot
    must not remove it."""
    _remove_unit(node, BOOT_CLEANUP_UNIT, node.paths.boot_cleanup_unit_file)


def _leave_running_for(node: Node, in_use: list[containerd.ContainerRef], notes: list[str]) -> Status:
    """containerd no longer uses the snapshotter, but these containers' files are on its snapshots (FUSE
    mounts it serves, layer directories under its root): stopping it or removing its root would cut them
    off. It keeps running for them, no longer starts at boot, and its files go at the next boot."""
    paths = node.paths
    try:
        _remove_unit(node, SNAPSHOTTER_UNIT, paths.unit_file)
        write_if_changed(node.host_file(paths.boot_cleanup_unit_file), files.boot_cleanup_unit(paths).encode())
        node.services.daemon_reload()
        node.services.enable(BOOT_CLEANUP_UNIT)
    except ServiceError as error:
        return Status.failed(Code.SERVICE_FAILED, f"the snapshotter's removal at boot could not be set up: {error}",
                             notes=notes)
    shown = ", ".join(str(container) for container in in_use[:5])
    more = f" and {len(in_use) - 5} more" if len(in_use) > 5 else ""
    notes.append(f"{len(in_use)} containers created while the snapshotter was containerd's default still use its "
                 f"snapshots ({shown}{more}): it keeps running for them, no longer starts at boot, and "
                 f"{BOOT_CLEANUP_UNIT}.service removes its files at the next boot")
    shutil.rmtree(node.state_dir, ignore_errors=True)
    return Status(False, Code.REMOVED, REMOVED, notes=notes)


def _remove_empty_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):  # not empty (someone else's files) or already gone
        directory.rmdir()


def restore_containerd_config(node: Node, record: dict | None, notes: list[str]) -> bool:
    """Undo our edit of containerd's config; True when the file changed."""
    if record is None:
        return False
    config_file = node.host_file(node.paths.containerd_config)
    current = read_optional(config_file)
    if record["byte_for_byte"] and sha256(current) == record["written_sha256"]:
        if not record["original_existed"]:
            config_file.unlink(missing_ok=True)
        else:
            original = (node.state_dir / CONFIG_BACKUP).read_bytes()
            write_file(config_file, original, config_file.stat().st_mode & 0o7777)
        return True
    if current is None:
        notes.append(f"{node.paths.containerd_config} was removed by something else; nothing to restore")
        return False
    text, kept = containerd_config.revert(current.decode(), _changes(record),
                                          [tuple(t) for t in record["created_tables"]])
    notes.append(f"{node.paths.containerd_config} was changed by something else since the agent wrote it: only the "
                 "agent's settings were taken out")
    notes.extend(kept)
    if text.encode() == current:
        return False
    write_file(config_file, text.encode(), config_file.stat().st_mode & 0o7777)
    return True
