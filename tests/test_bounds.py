"""negdb.store.bounds: the time limit and the cancel watcher of user queries (issue 13)."""

from __future__ import annotations

import threading
import time

import pytest

from negdb.store import bounds


def _closed() -> None:
    raise RuntimeError("Connection Error: Connection already closed!")


@pytest.fixture
def thread_errors(monkeypatch: pytest.MonkeyPatch) -> list[BaseException]:
    seen: list[BaseException] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: seen.append(args.exc_value))
    return seen


def test_cancel_after_the_cursor_closed_raises_nothing(thread_errors: list[BaseException]) -> None:
    """The watcher may see the cancel just as the query ends and its cursor closes: no error in any thread."""
    cancel = threading.Event()
    with bounds.time_bound(None, _closed, "late", cancel):
        cancel.set()
        time.sleep(5 * bounds.CANCEL_POLL_S)
    assert thread_errors == []


def test_time_limit_on_a_closed_cursor_raises_nothing(thread_errors: list[BaseException]) -> None:
    with bounds.time_bound(0.05, _closed, "late") as fired:
        time.sleep(0.5)
    assert fired.is_set()
    assert thread_errors == []


def test_cancel_interrupts_and_time_limit_fires() -> None:
    calls: list[float] = []
    cancel = threading.Event()
    start = time.monotonic()
    with bounds.time_bound(None, lambda: calls.append(time.monotonic()), "late", cancel) as fired:
        cancel.set()
        time.sleep(5 * bounds.CANCEL_POLL_S)
    assert len(calls) == 1 and calls[0] - start < 2 and not fired.is_set()
    with bounds.time_bound(0.05, lambda: calls.append(time.monotonic()), "late") as fired:
        time.sleep(0.5)
    assert fired.is_set() and len(calls) == 2
