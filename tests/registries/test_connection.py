""""Test connection" against real servers: Debian's docker-registry (anonymous and htpasswd), a closed
port, an unknown host, a web server that is not a registry, and a TLS server with a private CA."""

import datetime
import ipaddress
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from core.roles import Role
from registries import actions
from registries.models import Instance
from tests.support.registry import free_port

pytestmark = [pytest.mark.django_db, pytest.mark.registry]
HTMX = {"HTTP_HX_REQUEST": "true"}


class FakeV2Handler(BaseHTTPRequestHandler):
    """Answers /v2/ like a registry when `registry_like`, else like a plain web site (404)."""

    registry_like = False

    def do_GET(self):
        if self.registry_like and self.path == "/v2/":
            self.send_response(200)
            self.send_header("Docker-Distribution-API-Version", "registry/2.0")
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b"{}")
            return
        self.send_response(404)
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        self.wfile.write(b"<html>Welcome to our web site</html>")

    def log_message(self, *args):
        pass


@pytest.fixture
def serve():
    servers = []

    def start(registry_like: bool = False, context: ssl.SSLContext | None = None) -> int:
        handler = type("Handler", (FakeV2Handler,), {"registry_like": registry_like})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        if context is not None:
            server.socket = context.wrap_socket(server.socket, server_side=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server.server_address[1]

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def self_signed(tmp_path) -> tuple[str, ssl.SSLContext]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "apparate test CA")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    pem = certificate.public_bytes(serialization.Encoding.PEM).decode()
    (tmp_path / "cert.pem").write_text(pem)
    (tmp_path / "key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    return pem, context


def make(url: str, **fields) -> Instance:
    return Instance.objects.create(name=f"i{Instance.objects.count()}", url=url, **fields)


def test_anonymous_registry_connects(registry):
    result = actions.test_connection(make(registry.url))
    assert result.ok, result
    assert "anonymously" in result.summary


def test_htpasswd_registry_with_right_and_wrong_password(registry_factory):
    running = registry_factory(htpasswd=("robot", "s3cret-pass"))
    good = actions.test_connection(make(running.url, username="robot", password="s3cret-pass"))
    assert good.ok and "as 'robot'" in good.summary
    bad = actions.test_connection(make(running.url, username="robot", password="wrong-pass-77"))
    assert not bad.ok
    assert bad.summary == "The registry refused the credentials"
    assert "robot" in bad.detail and "wrong-pass-77" not in bad.detail + bad.hint + bad.summary
    anonymous = actions.test_connection(make(running.url))
    assert not anonymous.ok and "requires credentials" in anonymous.detail


def test_closed_port_is_unreachable(settings):
    settings.APPARATE_REGISTRY_TIMEOUT = 5
    result = actions.test_connection(make(f"http://127.0.0.1:{free_port()}"))
    assert not result.ok
    assert result.summary == "The registry could not be reached"
    assert "port" in result.hint


def test_unknown_host_is_unreachable(settings):
    settings.APPARATE_REGISTRY_TIMEOUT = 5
    result = actions.test_connection(make("http://no-such-registry.invalid"))
    assert not result.ok
    assert result.summary == "The registry could not be reached"
    assert "DNS" in result.hint


def test_web_server_that_is_not_a_registry(serve):
    result = actions.test_connection(make(f"http://127.0.0.1:{serve()}"))
    assert not result.ok
    assert "not a Docker/OCI registry" in result.detail


def test_tls_with_private_ca(tmp_path, serve):
    pem, context = self_signed(tmp_path)
    url = f"https://127.0.0.1:{serve(registry_like=True, context=context)}"
    untrusted = actions.test_connection(make(url))
    assert not untrusted.ok
    assert untrusted.summary == "TLS verification failed" and "CA bundle" in untrusted.hint
    assert actions.test_connection(make(url, ca_bundle=pem)).ok
    assert actions.test_connection(make(url, verify_tls=False)).ok


def test_button_and_api_show_the_result(client_as, api_as, registry_factory):
    running = registry_factory(htpasswd=("robot", "s3cret-pass"))
    instance = make(running.url, username="robot", password="wrong-pass-77")
    partial = client_as(Role.OPERATOR).post(f"/instances/{instance.pk}/test-connection/", **HTMX)
    assert partial.status_code == 200
    text = partial.content.decode()
    assert "connection-failed" in text and "refused the credentials" in text and "wrong-pass-77" not in text
    assert "<html" not in text
    api = api_as(Role.ADMIN)
    answer = api.post(f"/api/v1/instances/{instance.pk}/test-connection/")
    assert answer.status_code == 200
    assert answer.json()["ok"] is False and "wrong-pass-77" not in answer.content.decode()
    instance.password = "s3cret-pass"
    instance.save()
    assert api.post(f"/api/v1/instances/{instance.pk}/test-connection/").json()["ok"] is True
