"""The agent's pure parts: inputs, rendered files, version range, reasons, the systemd commands,
the status command's exit codes, and the committed gRPC modules."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent.containerd import parse_version, supported_version_problem
from agent.files import hosts_toml, snapshotter_config, snapshotter_unit
from agent.inputs import AgentInputs, InputError, Registry, load_inputs, parse_registry
from agent.paths import HostPaths
from agent.services import ServiceError, SystemdManager
from agent.status import Code, Status, fuse_missing, restart_failed, write_status

ROOT = Path(__file__).resolve().parents[2]
PEM = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\n-----END CERTIFICATE-----"


@pytest.mark.parametrize(("url", "expected"), [
    ("http://registry.example:5000", Registry("registry.example:5000", "http")),
    ("https://REG.example", Registry("reg.example", "https")),
    ("http://10.0.0.7:5000/", Registry("10.0.0.7:5000", "http")),
    ("http://[::1]:5000", Registry("[::1]:5000", "http")),
])
def test_registry_urls(url, expected):
    assert parse_registry({"url": url}, "agent.json") == expected


@pytest.mark.parametrize(("entry", "message"), [
    ({"url": "registry.example:5000"}, "agent.json: 'registry.example:5000' is not a registry URL like "
                                       "http://host:port or https://host"),
    ({"url": "ftp://registry.example"}, "agent.json: 'ftp://registry.example' is not a registry URL like "
                                        "http://host:port or https://host"),
    ({"url": "http://reg.example/team"}, "agent.json: 'http://reg.example/team' has a path; give the registry's "
                                         "address only"),
    ({"url": "http://user:pw@reg.example"}, "agent.json: 'http://user:pw@reg.example' is not a registry URL like "
                                            "http://host:port or https://host"),
    ({"url": "http://reg.example", "ca": PEM}, "agent.json: 'http://reg.example' is plain HTTP, a CA certificate "
                                               "does not apply"),
    ({"url": "https://reg.example", "ca": "not a pem"}, "agent.json: the \"ca\" of 'https://reg.example' is not a "
                                                        "PEM certificate"),
    ({"host": "reg.example"}, "agent.json: each registry needs a \"url\" string"),
])
def test_bad_registry_entries_say_what_is_wrong(entry, message):
    with pytest.raises(InputError) as refused:
        parse_registry(entry, "agent.json")
    assert str(refused.value) == message


def test_load_inputs(tmp_path):
    with pytest.raises(InputError, match=r"agent.json is missing: the suite's ConfigMap is not mounted$"):
        load_inputs(tmp_path)
    (tmp_path / "agent.json").write_text(json.dumps({"registries": [
        {"url": "http://a:5000"}, {"url": "https://b", "ca": PEM}], "no_background_fetch": True}))
    inputs = load_inputs(tmp_path)
    assert inputs == AgentInputs((Registry("a:5000", "http"), Registry("b", "https", PEM + "\n")), None, True)
    assert [r.needs_hosts_file for r in inputs.registries] == [True, True]
    assert not Registry("c", "https").needs_hosts_file
    (tmp_path / "dockerconfig.json").write_text('{"credsStore": "x"}')
    with pytest.raises(InputError, match=r"dockerconfig.json is not a docker config with an \"auths\" object$"):
        load_inputs(tmp_path)
    (tmp_path / "agent.json").write_text(json.dumps({"registries": [{"url": "http://a"}, {"url": "http://A"}]}))
    with pytest.raises(InputError, match=r"agent.json: a registry is listed twice$"):
        load_inputs(tmp_path)


def test_snapshotter_config_is_upstreams_format():
    inputs = AgentInputs((Registry("vm:5000", "http"), Registry("reg.example", "https")), None, True)
    assert snapshotter_config(inputs) == (
        "# Written by the apparate node agent; removed when the agent is uninstalled.\n"
        "no_background_fetch = true\n\n"
        '[[resolver.host."vm:5000".mirrors]]\nhost = "vm:5000"\ninsecure = true\n\n'
        '[[resolver.host."reg.example".mirrors]]\nhost = "reg.example"\ninsecure = false\n')


def test_the_unit_runs_the_snapshotter_before_containerd_with_the_credentials():
    unit = snapshotter_unit(HostPaths(containerd_service="k3s"), with_private_cas=False)
    assert "Before=k3s.service\n" in unit
    assert "Environment=DOCKER_CONFIG=/etc/apparate/stargz/docker\n" in unit
    assert ("ExecStart=/opt/apparate/bin/containerd-stargz-grpc --log-level=info "
            "--address=/run/containerd-stargz-grpc/containerd-stargz-grpc.sock "
            "--config=/etc/apparate/stargz/config.toml --root=/var/lib/containerd-stargz-grpc\n") in unit
    assert "Restart=always\n" in unit and "WantedBy=multi-user.target\n" in unit
    with_ca = snapshotter_unit(HostPaths(), with_private_cas=True)
    assert ("Environment=DOCKER_CONFIG=/etc/apparate/stargz/docker "
            "SSL_CERT_DIR=/etc/apparate/stargz/certs:/etc/ssl/certs:/etc/pki/tls/certs\n") in with_ca


def test_hosts_toml():
    assert hosts_toml(Registry("vm:5000", "http"), None) == (
        "# Written by the apparate node agent; removed when the agent is uninstalled.\n"
        'server = "http://vm:5000"\n\n[host."http://vm:5000"]\ncapabilities = ["pull", "resolve"]\n')
    assert hosts_toml(Registry("reg", "https", PEM), "/etc/containerd/certs.d/reg/apparate-ca.crt").endswith(
        'capabilities = ["pull", "resolve"]\nca = "/etc/containerd/certs.d/reg/apparate-ca.crt"\n')


@pytest.mark.parametrize(("text", "parsed", "problem"), [
    ("1.6.20~ds1", (1, 6, 20), None),
    ("v1.7.13-k3s1", (1, 7, 13), None),
    ("1.5.0", (1, 5, 0), None),
    ("2.0.0-rc.1", (2, 0, 0), None),
    ("2.2", (2, 2, 0), None),
    ("1.4.13", (1, 4, 13), "containerd 1.4.13 is not supported: the agent supports containerd >= 1.5 and < 3.0"),
    ("3.0.0", (3, 0, 0), "containerd 3.0.0 is not supported: the agent supports containerd >= 1.5 and < 3.0"),
    ("dev", None, "containerd reports version 'dev', which the agent cannot read; supported: >= 1.5 and < 3.0"),
])
def test_containerd_versions(text, parsed, problem):
    assert parse_version(text) == parsed
    assert supported_version_problem(text) == problem


def test_reasons():
    assert fuse_missing("/dev/fuse") == ("/dev/fuse is missing: install fuse (e.g. `yum install -y fuse` or "
                                         "`apt-get install -y fuse3`) and load its kernel module (`modprobe fuse`), "
                                         "then restart the agent")
    assert restart_failed("timeout", None) == (
        "containerd did not come back after its configuration was changed (timeout); the previous configuration was "
        "restored and containerd restarted with it")
    assert restart_failed("timeout", "refused").endswith("restarted with it, but it still does not answer: refused")


class Recorder:
    def __init__(self, returncode=0, stderr=""):
        self.commands, self.returncode, self.stderr = [], returncode, stderr

    def __call__(self, command):
        self.commands.append(list(command))
        return subprocess.CompletedProcess(command, self.returncode, "", self.stderr)


def test_systemd_is_reached_through_pid_1():
    run = Recorder()
    manager = SystemdManager(run)
    manager.restart("containerd")
    manager.daemon_reload()
    assert run.commands == [
        ["nsenter", "--target", "1", "--mount", "--uts", "--ipc", "--net", "--pid", "--", "systemctl", "restart",
         "containerd.service"],
        ["nsenter", "--target", "1", "--mount", "--uts", "--ipc", "--net", "--pid", "--", "systemctl",
         "daemon-reload"],
    ]
    assert manager.is_active("containerd")
    assert not SystemdManager(Recorder(returncode=3)).is_active("containerd")
    with pytest.raises(ServiceError) as failed:
        SystemdManager(Recorder(returncode=5, stderr="Unit x.service not found.\n")).start("x")
    assert str(failed.value) == "systemctl start x.service failed (exit 5): Unit x.service not found."


def _status_command(host_root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "APPARATE_HOST_ROOT": str(host_root)}
    return subprocess.run([sys.executable, "-m", "agent", "status"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)


def test_the_status_command_is_a_readiness_probe(tmp_path):
    state_dir = tmp_path / HostPaths().state_dir.lstrip("/")
    missing = _status_command(tmp_path)
    assert (missing.returncode, json.loads(missing.stdout)["ready"]) == (2, False)
    write_status(state_dir, Status.failed(Code.FUSE_MISSING, fuse_missing("/dev/fuse")))
    not_ready = _status_command(tmp_path)
    assert not_ready.returncode == 1
    assert json.loads(not_ready.stdout)["code"] == "fuse_missing"
    write_status(state_dir, Status(True, Code.READY, "containerd uses the stargz snapshotter", "1.6.20"))
    ready = _status_command(tmp_path)
    assert ready.returncode == 0
    assert {k: v for k, v in json.loads(ready.stdout).items() if k != "checked_at"} == {
        "ready": True, "code": "ready", "reason": "containerd uses the stargz snapshotter",
        "containerd_version": "1.6.20", "notes": []}


def test_committed_grpc_modules_match_their_protos(tmp_path):
    protos = sorted(str(p.relative_to(ROOT)) for p in [*ROOT.glob("agent/proto/*.proto"),
                                                        *ROOT.glob("tests/support/cri/*.proto")])
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I", ".", f"--python_out={tmp_path}",
                    f"--grpc_python_out={tmp_path}", *protos], cwd=ROOT, check=True, timeout=120)
    generated = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.py"))
    assert len(generated) == 2 * len(protos)
    for path in generated:
        assert (ROOT / path).read_text() == (tmp_path / path).read_text(), path


def test_the_agent_imports_no_django_and_no_app():
    code = ("import sys, agent.cli, agent.node, agent.run\n"
            "print(sorted({m.split('.')[0] for m in sys.modules}))")
    loaded = json.loads(subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                                       check=True, timeout=60).stdout.replace("'", '"'))
    assert not set(loaded) & {"django", "rest_framework", "celery", "console", "registries", "rules", "pipeline",
                              "clusters", "converter", "kubernetes"}
    assert {"agent", "grpc", "tomlkit"} <= set(loaded)
