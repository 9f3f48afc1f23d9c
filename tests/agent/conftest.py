"""Fixtures of the real-node tests: the snapshotter daemon, nodes with a private containerd, a
counting proxy, and an image with its accelerated twin."""

import shutil
import tempfile
from pathlib import Path

import pytest

from tests.support.counting_proxy import counting_proxy  # noqa: F401 (a fixture)
from tests.support.gobuild import build_go
from tests.support.node import TestNode, loopback_name

STARGZ_GRPC = Path(__file__).parent / "stargz-grpc"


@pytest.fixture(scope="session")
def stargz_grpc() -> Path:
    """The snapshotter daemon of tests/agent/stargz-grpc, built from Debian's stargz source."""
    return build_go(STARGZ_GRPC)


@pytest.fixture(scope="session")
def registry_name() -> str:
    return loopback_name()


@pytest.fixture
def make_node(stargz_grpc):
    """`make_node(config_text=None)`: a node with its own containerd running, in a short temp dir
    (socket paths have a length limit); stopped, unmounted and removed after the test."""
    nodes: list[TestNode] = []

    def make(config_text: str | None = None) -> TestNode:
        node = TestNode.create(Path(tempfile.mkdtemp(prefix="apparate-node-")), stargz_grpc, config_text)
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        node.close()
        shutil.rmtree(node.directory)
