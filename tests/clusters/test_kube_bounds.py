"""A hostile API server cannot make the console read unbounded answers (issue 11, finding 8).

The emulator serves the answers (raw bytes, optionally gzip-encoded) over real HTTP; the console
reads them through clusters.kube with the official client's connection pool.
"""

import gzip
import json

import pytest

from clusters import kube
from clusters.actions import sync
from clusters.actions.sync import sync_nodes
from clusters.choices import ConnectionStatus
from clusters.kube import KubeError, session_for
from clusters.models import Node

pytestmark = pytest.mark.django_db
NODES = "^/api/v1/nodes$"
MIB = 1024 * 1024


def node_list(items: list, padding: int = 0, cont: str = "") -> bytes:
    """A NodeList, with `padding` bytes of whitespace inside it (valid JSON of any size)."""
    head = json.dumps({"kind": "NodeList", "apiVersion": "v1", "metadata": {"continue": cont}})[:-1]
    return (head + ', "items": [' + " " * padding + ",".join(json.dumps(i) for i in items) + "]}").encode()


def test_the_limits_are_what_the_readme_says():
    assert (kube.MAX_RESPONSE_BYTES, kube.MAX_ERROR_BYTES) == (16 * MIB, 64 * 1024)
    assert (kube.MAX_LIST_BYTES, kube.MAX_LIST_PAGES, kube.MAX_LIST_ITEMS) == (64 * MIB, 100, 20000)


def test_an_answer_just_under_the_limit_is_read_and_one_byte_over_is_refused(kube_emulator, register):
    kube_emulator.add_node("real-node")
    cluster = register(kube_emulator)
    item = kube_emulator.get_object("nodes", "real-node")
    body = node_list([item])
    fits = node_list([item], padding=kube.MAX_RESPONSE_BYTES - len(body))
    assert len(fits) == kube.MAX_RESPONSE_BYTES
    kube_emulator.answer_next("GET", NODES, fits)
    assert sync_nodes(cluster).created == 1

    kube_emulator.answer_next("GET", NODES, node_list([item], padding=kube.MAX_RESPONSE_BYTES - len(body) + 1))
    result = sync_nodes(cluster)
    assert not result.ok
    assert result.message == (f"{kube_emulator.url} sent more than 16 MiB in answer to GET /api/v1/nodes; "
                              "the console reads no more than that.")
    cluster.refresh_from_db()
    assert cluster.connection_status == ConnectionStatus.ERROR and cluster.last_error == result.message


def test_a_gzip_bomb_is_refused_after_16_mib_of_decoded_bytes(kube_emulator, register):
    kube_emulator.add_node("real-node")
    cluster = register(kube_emulator)
    bomb = gzip.compress(node_list([], padding=512 * MIB), compresslevel=9)
    assert len(bomb) < 600 * 1024  # half a megabyte on the wire
    kube_emulator.answer_next("GET", NODES, bomb, headers={"Content-Encoding": "gzip"})
    result = sync_nodes(cluster)
    assert not result.ok and "sent more than 16 MiB in answer to GET /api/v1/nodes" in result.message
    assert not Node.objects.exists()

    # An honest gzip answer (what kube-apiserver sends when asked, as the console asks) is read.
    honest = gzip.compress(node_list([kube_emulator.get_object("nodes", "real-node")]))
    kube_emulator.answer_next("GET", NODES, honest, headers={"Content-Encoding": "gzip"})
    assert sync_nodes(cluster).created == 1


def test_an_oversized_error_body_gives_a_short_message(kube_emulator, register):
    cluster = register(kube_emulator)
    huge = json.dumps({"kind": "Status", "message": "x" * (20 * MIB), "code": 500}).encode()
    kube_emulator.answer_next("GET", "^/version$", huge, status=500)
    ok, message = sync.test_connection(cluster)
    assert not ok and message == "The API server answered 500 (its error body was larger than 64 KiB)."
    small = json.dumps({"kind": "Status", "message": "etcdserver: " + "y" * 5000, "code": 503}).encode()
    kube_emulator.answer_next("GET", "^/version$", small, status=503)
    ok, message = sync.test_connection(cluster)
    assert not ok and message.startswith("The API server answered 503 (etcdserver: yyy")
    assert len(message) < 600 and message.endswith("…).")


def test_endless_continue_pages_are_refused(kube_emulator, register):
    cluster = register(kube_emulator)
    kube_emulator.answer_next("GET", NODES, node_list([], cont="again"), times=kube.MAX_LIST_PAGES + 5)
    result = sync_nodes(cluster)
    assert not result.ok
    assert result.message == f"{kube_emulator.url} listed more than 100 pages of Node; the console stops there."
    assert kube_emulator.count("GET", NODES) == kube.MAX_LIST_PAGES


def test_too_many_items_and_too_many_bytes_in_a_listing_are_refused(kube_emulator, register):
    cluster = register(kube_emulator)
    item = {"metadata": {"name": "n"}}
    page = node_list([item] * 2001, cont="more")
    kube_emulator.answer_next("GET", NODES, page, times=10)
    with session_for(cluster) as session, pytest.raises(KubeError) as error:
        session.list("Node")
    assert error.value.message == f"{kube_emulator.url} listed more than 20000 Node objects; the console stops there."
    assert kube_emulator.count("GET", NODES) == 10

    padded = node_list([], padding=15 * MIB, cont="more")
    kube_emulator.answer_next("GET", NODES, padded, times=10)
    with session_for(cluster) as session, pytest.raises(KubeError) as error:
        session.list("Node")
    assert error.value.message == f"{kube_emulator.url} sent more than 64 MiB listing Node; the console stops there."


@pytest.mark.parametrize(("body", "headers"), [
    (b"<html>proxy login</html>", {"Content-Type": "text/html"}),
    (b"[" * 100000 + b"]" * 100000, {}),  # valid JSON nested too deep to decode
    (b"\x1f\x8b\x08\x00garbage", {"Content-Encoding": "gzip"}),
], ids=["html", "nested-too-deep", "broken-gzip"])
def test_answers_that_are_not_kubernetes_json_are_refused_clearly(kube_emulator, register, body, headers):
    kube_emulator.answer_next("GET", "^/version$", body, headers=headers)
    ok, message = sync.test_connection(register(kube_emulator))
    assert not ok and message == f"{kube_emulator.url} did not answer like a Kubernetes API server."


def test_a_redirect_is_not_followed(kube_emulator_factory, register):
    emulator, elsewhere = kube_emulator_factory(), kube_emulator_factory()
    emulator.answer_next("GET", "^/version$", b"", status=307, headers={"Location": f"{elsewhere.url}/version"})
    ok, message = sync.test_connection(register(emulator))
    assert not ok and message == f"{emulator.url} answered GET /version with a redirect (307), which the console " \
                                 "does not follow."
    assert elsewhere.requests == []  # the token never left for the other host
