"""Reading kubeconfigs: one context's inline credentials; plugins and file references refused clearly."""

import base64

import pytest
import yaml
from django.core.exceptions import ValidationError

from clusters.compatibility import verdict
from clusters.kubeconfig import parse_kubeconfig
from clusters.validators import parse_label_selector, selector_matches

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
