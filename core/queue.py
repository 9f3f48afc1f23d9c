"""Handing work to workers once a transaction commits, and what a broker that does not answer does.

Work a request starts is saved as a row first and sent to a worker after commit (DESIGN §4). When
the broker cannot take the message, the row would otherwise stand as queued or pending for nobody:
`send_on_commit` lets the caller record that on it (`unavailable`, e.g. failed with
UNAVAILABLE_REASON) and lets the error stand, so the request answers 503 with Retry-After
(core.errors).
"""

from collections.abc import Callable

from django.db import transaction
from kombu.exceptions import OperationalError as BrokerUnavailable

__all__ = ["UNAVAILABLE_REASON", "BrokerUnavailable", "send_on_commit"]

UNAVAILABLE_REASON = "The task queue (the message broker) was unavailable, so no worker started this. Try again."


def send_on_commit(send: Callable[[], object], unavailable: Callable[[], object]) -> None:
    """Call `send` (a task's delay or apply_async) once the current transaction commits; when the
    broker does not answer, call `unavailable` first, then raise BrokerUnavailable."""

    def run() -> None:
        try:
            send()
        except BrokerUnavailable:
            unavailable()
            raise

    transaction.on_commit(run)
