"""The agent on a real node: a private containerd 1.6, the stargz snapshotter built from Debian's
source, runc and FUSE. Images are pulled through containerd's CRI image service as kubelet does,
through a counting proxy, by a host name that is not `localhost` (so plain HTTP works only
because of what the agent configured)."""

import json
import threading
from dataclasses import replace
from pathlib import Path

import grpc
import pytest

from agent import containerd
from agent.inputs import load_inputs
from agent.node import check, install, uninstall
from agent.paths import SNAPSHOTTER_UNIT
from agent.run import KeepRunning, install_from, run
from agent.status import Code, read_status
from tests.support.node import push_lazy_image

pytestmark = [pytest.mark.node, pytest.mark.registry]


def configure(node, *registries: str, docker_config: dict | None = None) -> None:
    """What the DaemonSet mounts: agent.json, and the pull Secret as dockerconfig.json."""
    node.config_dir.mkdir(exist_ok=True)
    document = {"registries": [{"url": url} for url in registries], "no_background_fetch": True}
    (node.config_dir / "agent.json").write_text(json.dumps(document))
    if docker_config is not None:
        (node.config_dir / "dockerconfig.json").write_text(json.dumps(docker_config))


@pytest.fixture
def lazy_image(registry, tmp_path):
    return push_lazy_image(tmp_path, registry.url, "team/app")


def layer_bytes(proxy, image) -> int:
    served = proxy.blob_bytes()
    return sum(served.get(digest, 0) for digest in image.layer_sizes)


def assert_lazy(node, image, proxy):
    """Every layer is a remote snapshot on a FUSE mount, no layer blob is in the content store,
    and only a small part of the layers crossed the wire."""
    labels = node.snapshot_labels("stargz")
    remote = {values["containerd.io/snapshot/cri.layer-digest"] for values in labels.values()
              if values.get("containerd.io/snapshot/remote") == "remote snapshot"}
    assert remote == set(image.layer_sizes)
    mounts = node.fuse_mounts()
    assert len(mounts) == len(image.layer_sizes)
    assert {(fstype, source) for _, fstype, source in mounts} == {("fuse.rawBridge", "stargz")}
    assert not node.content_digests() & set(image.layer_sizes)
    assert layer_bytes(proxy, image) < 0.15 * sum(image.layer_sizes.values())


def test_a_twin_pulled_through_cri_is_lazy_and_runs(make_node, registry, lazy_image, counting_proxy, registry_name):
    proxy = counting_proxy(registry.url)
    host = f"{registry_name}:{proxy.port}"
    node = make_node()
    configure(node, f"http://{host}")

    status = install_from(node.agent(), node.config_dir)

    assert status.ready, (status, node.services.log(SNAPSHOTTER_UNIT))
    assert (status.code, status.reason) == (Code.READY, "containerd uses the stargz snapshotter")
    assert status.containerd_version.startswith("1.6.")
    assert read_status(node.agent().state_dir) == status
    assert node.services.verbs(SNAPSHOTTER_UNIT) == ["enable", "start"]
    assert node.services.verbs("containerd") == ["restart"]
    hosts_toml = Path(f"{node.prefix}/etc/containerd/certs.d/{host}/hosts.toml").read_text()
    assert f'server = "http://{host}"' in hosts_toml

    node.cri().pull(lazy_image.ref(host))
    assert_lazy(node, lazy_image, proxy)
    assert node.run(lazy_image.ref(host), "reader", "/bin/cat", "/data/first.txt").encode() == \
        lazy_image.files["data/first.txt"]
    assert layer_bytes(proxy, lazy_image) < 0.15 * sum(lazy_image.layer_sizes.values())


# The stargz snapshotter reads blobs in aligned units of its `chunk_size` (fs/remote's default,
# 50,000 bytes, which the agent leaves as it is) and first probes each blob with a 2-byte range.
SNAPSHOTTER_FETCH_UNIT = 50_000
RANGE_PROBE = 2


@pytest.mark.parametrize("prioritized", [(), ("/data/first.txt",)], ids=["no-prioritized-files", "prioritized"])
def test_the_startup_figure_is_what_a_lazy_pull_fetches(make_node, registry, counting_proxy, registry_name, tmp_path,
                                                        prioritized):
    """The converter's per-layer startup figure (footer, TOC, prioritized region) against the bytes
    a real lazy pull fetched before any container ran. Tolerance: the snapshotter rounds each range
    it needs (the tail with footer and TOC; the head up to `.prefetch.landmark` when files are
    prioritized) out to its fetch unit, so it may fetch up to one unit more per range, plus its probe."""
    image = push_lazy_image(tmp_path, registry.url, "team/startup", prioritized=prioritized)
    proxy = counting_proxy(registry.url)
    host = f"{registry_name}:{proxy.port}"
    node = make_node()
    configure(node, f"http://{host}")
    assert install_from(node.agent(), node.config_dir).ready

    node.cri().pull(image.ref(host))

    assert_lazy(node, image, proxy)
    served = proxy.blob_bytes()
    for digest, size in image.layer_sizes.items():
        figure = image.startup_bytes[digest]
        ranges = 2 if image.prioritized[digest] else 1  # a prefetch region is a second range
        fetched = served[digest] - RANGE_PROBE
        assert figure <= fetched <= min(size, figure + ranges * SNAPSHOTTER_FETCH_UNIT), (digest, figure, fetched)
    # /data/first.txt lives in one layer only, and only that layer prefetches.
    placed = [files for files in image.prioritized.values() if files]
    assert placed == ([list(prioritized)] if prioritized else [])


def test_without_the_agent_the_twin_is_pulled_in_full(make_node, registry, lazy_image, counting_proxy,
                                                      registry_name):
    proxy = counting_proxy(registry.url)
    node = make_node()
    cri = node.cri()

    # By name, plain HTTP needs the hosts.toml the agent writes: containerd tries HTTPS.
    with pytest.raises(grpc.RpcError, match=r'Head "https://.*tls: first record does not look like a TLS handshake'):
        cri.pull(lazy_image.ref(f"{registry_name}:{proxy.port}"))
    # By loopback address containerd speaks HTTP on its own: a normal, full pull.
    cri.pull(lazy_image.ref(f"127.0.0.1:{proxy.port}"))

    assert set(lazy_image.layer_sizes) <= node.content_digests()
    assert layer_bytes(proxy, lazy_image) >= sum(lazy_image.layer_sizes.values())
    assert node.fuse_mounts() == []
    assert node.snapshot_labels("overlayfs")
    assert check(node.agent()).code == Code.SNAPSHOTTER_NOT_LOADED


def test_a_second_install_writes_nothing_and_restarts_nothing(make_node, registry_name):
    node = make_node()
    configure(node, f"http://{registry_name}:5000")
    agent = node.agent()
    assert install_from(agent, node.config_dir).ready
    paths = node.paths
    written = {Path(path): (Path(path).read_bytes(), Path(path).stat().st_mtime_ns) for path in (
        paths.containerd_config, paths.unit_file, paths.snapshotter_binary, paths.snapshotter_config,
        f"{paths.state_dir}/state.json", f"{node.prefix}/etc/containerd/certs.d/{registry_name}:5000/hosts.toml")}
    node.services.calls.clear()

    status = install_from(agent, node.config_dir)

    assert status.ready
    assert node.services.calls == []
    assert {path: (path.read_bytes(), path.stat().st_mtime_ns) for path in written} == written


def test_a_config_containerd_refuses_is_rolled_back(make_node, registry_name):
    # An old-style mirror: containerd 1.6 refuses `registry.mirrors` together with `config_path`,
    # which the agent sets for a plain-HTTP registry.
    node = make_node()
    config = Path(node.paths.containerd_config)
    original = config.read_text().replace(
        '[plugins."io.containerd.grpc.v1.cri".registry.mirrors]\n',
        '[plugins."io.containerd.grpc.v1.cri".registry.mirrors]\n\n'
        '        [plugins."io.containerd.grpc.v1.cri".registry.mirrors."docker.io"]\n'
        '          endpoint = ["https://mirror.example"]\n')
    assert original != config.read_text()
    config.write_text(original)
    node.services.restart("containerd")
    node.wait_for_containerd()
    node.services.calls.clear()
    configure(node, f"http://{registry_name}:5000")

    status = install_from(node.agent(), node.config_dir)

    assert status.code == Code.CONTAINERD_RESTART_FAILED
    assert status.reason.startswith("containerd did not come back after its configuration was changed (its CRI "
                                    "plugin did not load: io.containerd.grpc.v1.cri: ")
    assert "`mirrors` cannot be set when `config_path` is provided" in status.reason
    assert status.reason.endswith("); the previous configuration was restored and containerd restarted with it")
    assert config.read_text() == original
    assert node.services.verbs("containerd") == ["restart", "restart"]
    loaded = {plugin.name: plugin.error for plugin in containerd.plugins(node.address)}
    assert loaded[containerd.CRI_PLUGIN] == ""
    assert read_status(node.agent().state_dir).code == Code.CONTAINERD_RESTART_FAILED


def test_uninstall_restores_the_original_config_byte_for_byte(make_node, registry, lazy_image, counting_proxy,
                                                              registry_name):
    proxy = counting_proxy(registry.url)
    host = f"{registry_name}:{proxy.port}"
    node = make_node()
    config = Path(node.paths.containerd_config)
    original = config.read_bytes()
    loopback = f"127.0.0.1:{proxy.port}"
    cri = node.cri()
    cri.pull(lazy_image.ref(loopback, twin=False))  # before the agent: unpacked for overlayfs
    configure(node, f"http://{host}")
    agent = node.agent()
    assert install_from(agent, node.config_dir).ready
    assert config.read_bytes() != original
    cri.pull(lazy_image.ref(host))
    assert node.fuse_mounts()
    node.services.calls.clear()

    status = uninstall(agent)

    assert (status.code, status.reason, status.notes) == (
        Code.REMOVED, "the snapshotter was removed and containerd's configuration restored", [])
    assert config.read_bytes() == original
    # The lazily pulled twin is gone with its remote snapshots; the image pulled before the agent stays.
    assert cri.status(lazy_image.ref(host)) is None
    assert cri.status(lazy_image.ref(loopback, twin=False)) is not None
    assert node.fuse_mounts() == []
    # containerd works on overlayfs again: the twin is pulled in full, unpacked and run from there.
    cri.pull(lazy_image.ref(loopback))
    assert set(lazy_image.layer_sizes) <= node.content_digests()
    assert node.run(lazy_image.ref(loopback), "after", "/bin/cat", "/data/first.txt",
                    snapshotter="overlayfs").encode() == lazy_image.files["data/first.txt"]
    assert node.services.calls == [("restart", "containerd"), ("stop", SNAPSHOTTER_UNIT),
                                   ("disable", SNAPSHOTTER_UNIT), ("daemon-reload", "")]
    for path in (node.paths.unit_file, node.paths.snapshotter_binary, node.paths.snapshotter_config_dir,
                 node.paths.state_dir, f"{node.prefix}/etc/containerd/certs.d/{host}"):
        assert not Path(path).exists(), path
    assert not node.services.is_active(SNAPSHOTTER_UNIT)
    assert containerd.SNAPSHOTTER_PLUGIN not in {plugin.name for plugin in containerd.plugins(node.address)}


def test_uninstall_leaves_the_snapshotter_to_containers_still_on_its_snapshots(make_node, registry, lazy_image,
                                                                             counting_proxy, registry_name):
    proxy = counting_proxy(registry.url)
    host = f"{registry_name}:{proxy.port}"
    node = make_node()
    config = Path(node.paths.containerd_config)
    original = config.read_bytes()
    configure(node, f"http://{host}")
    agent = node.agent()
    assert install_from(agent, node.config_dir).ready
    node.cri().pull(lazy_image.ref(host))
    node.start(lazy_image.ref(host), "server", "/bin/sleep", "3600")
    node.services.calls.clear()

    status = uninstall(agent)

    assert (status.code, status.reason) == (Code.REMOVED, "the snapshotter was removed and containerd's "
                                                          "configuration restored")
    assert status.notes == [
        "1 containers created while the snapshotter was containerd's default still use its snapshots (k8s.io/server): "
        "it keeps running for them, no longer starts at boot, and apparate-stargz-cleanup.service removes its files "
        "at the next boot"]
    assert config.read_bytes() == original
    assert node.services.calls == [("restart", "containerd"), ("disable", SNAPSHOTTER_UNIT), ("daemon-reload", ""),
                                   ("daemon-reload", ""), ("enable", "apparate-stargz-cleanup")]
    assert node.services.is_active(SNAPSHOTTER_UNIT)
    assert not Path(node.paths.unit_file).exists()
    # The container still reads what it had not read yet: the snapshotter fetches it lazily.
    served_before = layer_bytes(proxy, lazy_image)
    assert node.exec("server", "/bin/cat", "/data/third.txt").encode() == lazy_image.files["data/third.txt"]
    assert layer_bytes(proxy, lazy_image) > served_before
    cleanup = Path(node.paths.boot_cleanup_unit_file).read_text()
    assert (f"ExecStart=/bin/rm -rf {node.paths.snapshotter_binary} {node.paths.snapshotter_config_dir} "
            f"{node.paths.snapshotter_root}\n") in cleanup
    assert "Before=containerd.service\n" in cleanup and "WantedBy=multi-user.target\n" in cleanup
    assert Path(node.paths.snapshotter_binary).exists()

    # Labelled again before a reboot: the install takes the snapshotter back and cancels the cleanup.
    node.services.calls.clear()
    assert install_from(agent, node.config_dir).ready
    assert not Path(node.paths.boot_cleanup_unit_file).exists()
    assert ("disable", "apparate-stargz-cleanup") in node.services.calls


def test_uninstall_after_someone_else_edited_the_config_takes_out_only_our_keys(make_node, registry_name):
    node = make_node()
    config = Path(node.paths.containerd_config)
    original = config.read_text()
    configure(node, f"http://{registry_name}:5000")
    agent = node.agent()
    assert install_from(agent, node.config_dir).ready
    # Another tool raises a timeout in the file we edited.
    edited = config.read_text().replace('"io.containerd.timeout.shim.load" = "5s"',
                                        '"io.containerd.timeout.shim.load" = "9s"')
    assert edited != config.read_text()
    config.write_text(edited)

    status = uninstall(agent)

    assert status.code == Code.REMOVED
    assert status.notes == [f"{node.paths.containerd_config} was changed by something else since the agent wrote "
                            "it: only the agent's settings were taken out"]
    assert config.read_text() == original.replace('"io.containerd.timeout.shim.load" = "5s"',
                                                  '"io.containerd.timeout.shim.load" = "9s"')


def test_an_agent_restart_leaves_a_running_lazy_container_reading(make_node, registry, lazy_image, counting_proxy,
                                                                  registry_name):
    proxy = counting_proxy(registry.url)
    host = f"{registry_name}:{proxy.port}"
    node = make_node()
    configure(node, f"http://{host}")
    agent = node.agent()

    def agent_pod(stop: threading.Event) -> threading.Thread:
        thread = threading.Thread(target=run, args=(agent, node.config_dir, KeepRunning(), stop, 0.2))
        thread.start()
        return thread

    first_stop = threading.Event()
    first = agent_pod(first_stop)
    for _ in range(300):
        status = read_status(agent.state_dir)
        if status and status.ready:
            break
        first_stop.wait(0.1)
    assert status.ready
    node.cri().pull(lazy_image.ref(host))
    node.start(lazy_image.ref(host), "server", "/bin/sleep", "3600")
    assert node.exec("server", "/bin/cat", "/data/first.txt").encode() == lazy_image.files["data/first.txt"]

    first_stop.set()  # the pod is deleted (restart, upgrade): the decision is to keep running
    first.join(timeout=60)
    assert not first.is_alive()
    node.services.calls.clear()
    second_stop = threading.Event()
    second = agent_pod(second_stop)
    try:
        served_before = layer_bytes(proxy, lazy_image)
        assert node.exec("server", "/bin/cat", "/data/third.txt").encode() == lazy_image.files["data/third.txt"]
        assert layer_bytes(proxy, lazy_image) > served_before  # fetched now, lazily, by the same snapshotter
    finally:
        second_stop.set()
        second.join(timeout=60)
    assert node.services.verbs(SNAPSHOTTER_UNIT) == []
    assert node.services.verbs("containerd") == []
    assert node.services.is_active(SNAPSHOTTER_UNIT)


def test_a_registry_with_basic_auth_lazy_pulls_with_the_pull_secret(make_node, registry_factory, counting_proxy,
                                                                     registry_name, tmp_path):
    credentials = ("puller", "s3cret-pass")
    registry = registry_factory(htpasswd=credentials)
    image = push_lazy_image(tmp_path, registry.url, "private/app", credentials=credentials,
                            noise_size=4 << 20)
    proxy = counting_proxy(registry.url)
    host = f"{registry_name}:{proxy.port}"

    # Without the pull Secret the snapshotter cannot read the layers: containerd pulls them in full.
    bare = make_node()
    configure(bare, f"http://{host}")
    assert install_from(bare.agent(), bare.config_dir).ready
    bare.cri().pull(image.ref(host), credentials=credentials)
    assert set(image.layer_sizes) <= bare.content_digests()
    assert bare.fuse_mounts() == []
    assert "failed to resolve layer" in bare.services.log(SNAPSHOTTER_UNIT)

    proxy.reset()
    node = make_node()
    auth = "cHVsbGVyOnMzY3JldC1wYXNz"  # base64 of puller:s3cret-pass
    configure(node, f"http://{host}", docker_config={"auths": {host: {"auth": auth}}})
    assert install_from(node.agent(), node.config_dir).ready
    docker_json = Path(node.paths.docker_config_dir) / "config.json"
    assert docker_json.stat().st_mode & 0o777 == 0o600

    node.cri().pull(image.ref(host), credentials=credentials)

    assert_lazy(node, image, proxy)
    assert node.run(image.ref(host), "reader", "/bin/cat", "/data/second.txt").encode() == \
        image.files["data/second.txt"]


def test_no_fuse_device_is_reported_and_nothing_is_written(make_node, registry_name):
    node = make_node()
    configure(node, f"http://{registry_name}:5000")
    config = Path(node.paths.containerd_config)
    original = config.read_bytes()
    agent = node.agent()
    agent.paths = replace(agent.paths, fuse_device=f"{node.directory}/no-fuse")

    status = install_from(agent, node.config_dir)

    assert status.code == Code.FUSE_MISSING
    assert status.reason == (f"{node.directory}/no-fuse is missing: install fuse (e.g. `yum install -y fuse` or "
                             "`apt-get install -y fuse3`) and load its kernel module (`modprobe fuse`), then restart "
                             "the agent")
    assert config.read_bytes() == original
    assert node.services.calls == []
    assert not Path(node.paths.snapshotter_binary).exists()


def test_containerd_not_answering_is_reported(make_node, registry_name):
    node = make_node()
    configure(node, f"http://{registry_name}:5000")
    node.services.stop("containerd")
    node.services.calls.clear()

    status = install(node.agent(), load_inputs(node.config_dir))

    assert status.code == Code.CONTAINERD_UNREACHABLE
    assert status.reason.startswith(f"containerd does not answer: {node.address} does not answer (UNAVAILABLE: ")
    assert node.services.calls == []
