"""Fixtures shared by the converter tests: registry clients with fast retries, closed after the test."""

import pytest

from converter.registry import RegistryClient


@pytest.fixture
def make_client():
    """`make_client(url, username=None, password=None, **options)`: a client with quick backoff
    (retries stay real, only the sleeps are short) that is closed after the test."""
    clients: list[RegistryClient] = []

    def make(url: str, username: str | None = None, password: str | None = None, **options) -> RegistryClient:
        options = {"backoff": 0.01, "max_backoff": 0.05, "retries": 3, "timeout": 10.0, **options}
        client = RegistryClient(url, username=username, password=password, **options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()
