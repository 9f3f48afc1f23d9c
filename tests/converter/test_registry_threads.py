"""One registry client shared by several threads (the Images refresh HEADs tags from a pool): the
threads authenticate once between them, whichever scheme the registry asks for, and each uses its
own HTTP session."""

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.support.images import push_image

pytestmark = pytest.mark.registry

THREADS = 8


def at_once(function) -> list:
    """`function()` from THREADS threads released together, so their first requests race."""
    start = threading.Barrier(THREADS)

    def run():
        start.wait(timeout=30)
        return function()

    with ThreadPoolExecutor(THREADS) as pool:
        return [future.result() for future in [pool.submit(run) for _ in range(THREADS)]]


def test_threads_sharing_a_client_fetch_one_token_per_scope(registry, faulty_proxy, make_client, tmp_path):
    digest = push_image(tmp_path, f"{registry.host}/team/app:1")
    proxy = faulty_proxy(registry.url, bearer=("bob", "token-pass"))
    client = make_client(proxy.url, "bob", "token-pass")
    # every thread's first HEAD goes out without a token and meets the challenge
    assert {head.digest for head in at_once(lambda: client.head_manifest("team/app", "1"))} == {digest}
    assert [r["query"]["scope"] for r in proxy.state.token_requests] == [["repository:team/app:pull"]]
    # a revoked token: each thread's request is refused, the token is fetched again once
    proxy.state.tokens.clear()
    assert {head.digest for head in at_once(lambda: client.head_manifest("team/app", "1"))} == {digest}
    assert len(proxy.state.token_requests) == 2


def test_threads_sharing_a_client_all_get_in_with_basic_credentials(registry_factory, make_client, tmp_path):
    secured = registry_factory(htpasswd=("alice", "s3cret-pass"))
    digest = push_image(tmp_path, f"{secured.host}/team/app:1", credentials=("alice", "s3cret-pass"))
    client = make_client(secured.url, "alice", "s3cret-pass")
    # a thread whose anonymous request comes back after another learnt the scheme retries with it
    assert {head.digest for head in at_once(lambda: client.head_manifest("team/app", "1"))} == {digest}


def test_each_thread_has_its_own_session_and_close_closes_them_all(registry, make_client, tmp_path):
    push_image(tmp_path, f"{registry.host}/team/app:1")
    client = make_client(registry.url)
    sessions = at_once(lambda: (client.head_manifest("team/app", "1"), client._session)[1])
    assert len({id(session) for session in sessions}) == THREADS
    assert client._session not in sessions  # the calling thread's is its own too
    client.close()
    assert all(not session.adapters["http://"].poolmanager.pools for session in sessions)
    assert client.tags("team/app") == ["1"]  # usable again after close, as before
