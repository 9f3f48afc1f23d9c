"""Reading kubeconfigs: one context's inline credentials; plugins and file references refused clearly."""

import base64

import pytest
import yaml
from django.core.exceptions import ValidationError

from clusters.compatibility import verdict
from clusters.kubeconfig import MAX_KUBECONFIG_BYTES, context_names, parse_kubeconfig
from clusters.validators import parse_label_selector, selector_matches
from tests.clusters.conftest import alias_bomb

CA = """-----BEGIN CERTIFICATE-----
MIIBdzCCAR2gAwIBAgIUZ1jA0K1YkS0m1rj7c8Yh2sQx3BkwCgYIKoZIzj0EAwIw
-----END CERTIFICATE-----
"""


def kubeconfig(user: dict, cluster: dict | None = None, current: str = "prod") -> str:
    return yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": current,
        "clusters": [{"name": "c", "cluster": cluster or {
            "server": "https://10.0.0.1:6443", "certificate-authority-data": base64.b64encode(CA.encode()).decode()}}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "prod", "context": {"cluster": "c", "user": "u"}},
                     {"name": "staging", "context": {"cluster": "c", "user": "u"}}],
    })


def test_token_context_is_read():
    credentials = parse_kubeconfig(kubeconfig({"token": "abc"}))
    assert (credentials.context, credentials.server, credentials.token) == ("prod", "https://10.0.0.1:6443", "abc")
    assert credentials.ca_data == CA
    assert parse_kubeconfig(kubeconfig({"token": "abc"}), "staging").context == "staging"


def test_client_certificate_is_read():
    pem = base64.b64encode(b"-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n").decode()
    key = base64.b64encode(b"-----BEGIN PRIVATE KEY-----\nx\n-----END PRIVATE KEY-----\n").decode()
    credentials = parse_kubeconfig(kubeconfig({"client-certificate-data": pem, "client-key-data": key}))
    assert "BEGIN PRIVATE KEY" in credentials.client_key and not credentials.token


@pytest.mark.parametrize(("text", "message"), [
    ("{not yaml", "not valid YAML"),
    ("- a list", "no `contexts`"),
    ("!!python/object/apply:os.system ['echo hi']", "not valid YAML"),
    (kubeconfig({"exec": {"command": "aws", "apiVersion": "client.authentication.k8s.io/v1"}}), "exec plugin"),
    (kubeconfig({"auth-provider": {"name": "gcp"}}), "auth-provider"),
    (kubeconfig({"tokenFile": "/var/run/token"}), "file reference"),
    (kubeconfig({"token": "t"}, {"server": "https://k", "certificate-authority": "/etc/ca.crt"}), "file reference"),
    (kubeconfig({"token": "t"}, {"server": "ftp://k"}), "not usable"),
    (kubeconfig({}), "no token and no client certificate"),
    (kubeconfig({"token": "t"}, current=""), "Choose a context; the kubeconfig has: prod, staging"),
    (kubeconfig({"token": "t"}, {"server": "https://k", "certificate-authority-data": "???"}), "base64"),
])
def test_bad_kubeconfigs_give_clear_errors(text, message):
    with pytest.raises(ValidationError) as error:
        parse_kubeconfig(text)
    assert message in " ".join(error.value.messages)


def test_unknown_context_lists_the_available_ones():
    with pytest.raises(ValidationError, match="no context 'dev'; it has: prod, staging"):
        parse_kubeconfig(kubeconfig({"token": "t"}), "dev")


@pytest.mark.parametrize(("kubelet", "runtime", "version", "os_image", "expected"), [
    ("v1.16.0", "containerd", "1.4.3", "Ubuntu 18.04", "compatible"),
    ("v1.15.9", "containerd", "1.4.3", "Ubuntu 18.04", "incompatible"),
    ("v1.24.3+k3s1", "containerd", "1.4.2", "Ubuntu 18.04", "incompatible"),
    ("v1.24.3", "cri-o", "1.25.0", "Ubuntu 18.04", "incompatible"),
    ("v1.24.3", "containerd", "1.6.8", "Debian GNU/Linux 12", "incompatible"),
    ("v1.24.3", "containerd", "1.6.8", "CentOS Linux 7 (Core)", "warning"),
    ("v1.24.3", "containerd", "1.6.8", "TencentOS Server 3.1", "compatible"),
])
def test_compatibility_verdicts(kubelet, runtime, version, os_image, expected):
    assert verdict(kubelet, runtime, version, os_image).compatibility == expected


def test_thresholds_are_settings(settings):
    settings.APPARATE_MIN_KUBERNETES_VERSION = "1.25"
    judged = verdict("v1.24.3", "containerd", "1.6.8", "Ubuntu 22.04")
    assert judged.compatibility == "incompatible" and judged.reasons == ["Kubernetes v1.24.3 is older than 1.25."]


def test_label_selectors():
    terms = parse_label_selector("zone in (a, b), !gpu, tier=web, env!=prod")
    assert selector_matches(terms, {"zone": "a", "tier": "web"})
    assert not selector_matches(terms, {"zone": "a", "tier": "web", "gpu": "1"})
    assert not selector_matches(terms, {"zone": "c", "tier": "web"})
    with pytest.raises(ValidationError):
        parse_label_selector("bad key!=x")


def test_yaml_aliases_are_refused_before_they_expand():
    bomb = alias_bomb()
    assert len(bomb) < 600
    with pytest.raises(ValidationError) as error:
        parse_kubeconfig(bomb)
    assert error.value.messages == [
        "The kubeconfig uses a YAML alias (line 2); kubeconfigs do not need them and the console refuses them. "
        "Export it with `kubectl config view --raw --flatten --minify --context <name>`."]
    assert context_names(bomb) == []
    # An anchor without an alias expands nothing and is read.
    anchored = kubeconfig({"token": "abc"}).replace("current-context: prod", "current-context: &ctx prod")
    assert parse_kubeconfig(anchored).token == "abc"


def test_size_cap_is_512_kib_exactly():
    text = kubeconfig({"token": "abc"})
    exactly = text + "#" + "x" * (MAX_KUBECONFIG_BYTES - len(text) - 2) + "\n"
    assert len(exactly.encode()) == MAX_KUBECONFIG_BYTES == 512 * 1024
    assert parse_kubeconfig(exactly).token == "abc"
    with pytest.raises(ValidationError, match="larger than 512 KiB"):
        parse_kubeconfig(exactly + "\n")


def test_values_repeated_in_messages_are_shortened():
    names = [f"context-{n:05d}" for n in range(5000)]
    document = yaml.safe_load(kubeconfig({"token": "t"}))
    document["contexts"] = [{"name": n, "context": {"cluster": "c", "user": "u"}} for n in names]
    document["current-context"] = "x" * 5000
    with pytest.raises(ValidationError) as error:
        parse_kubeconfig(yaml.safe_dump(document))
    message = error.value.messages[0]
    assert message == (f"The kubeconfig has no context '{'x' * 100}…'; it has: "
                       f"{', '.join(names[:20])} and 4980 more.")
    long_server = "https://" + "a" * 300 + "/?q=1"
    with pytest.raises(ValidationError) as error:
        parse_kubeconfig(kubeconfig({"token": "t"}, {"server": long_server}))
    assert error.value.messages[0].startswith(f"The server URL '{long_server[:100]}…' is not usable")
