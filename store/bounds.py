"""Memory and time bounds for user queries beyond what DuckDB's ``memory_limit`` and ``interrupt()`` give.

DuckDB's ``memory_limit`` bounds its buffer-managed memory (hash tables, sorts, materialised results) but not
strings and lists that functions build: ``repeat('x', 2000000000)``, ``range(500000000)``, ``list_transform``
of ranges, a doubling recursive CTE, or the constant folding of such an expression while a statement is bound.
:func:`memory_bound` closes that gap with the kernel: while at least one user query runs, the process's soft
``RLIMIT_DATA`` (private writable memory: the heap and anonymous mappings, which is where DuckDB allocates)
is set to what the process used when the first of them started plus ``budget`` per running query. An
allocation past it fails, and DuckDB turns the failure into an ``OutOfMemoryException`` that ends only that
query (measured against the hostile corpus: tests/hostile_sql.txt, bench/bench_hostile.py); when the last query
ends the limit is put back. Nothing is bounded on platforms without ``RLIMIT_DATA`` (the statement check and
DuckDB's own limit still apply).

:func:`time_bound` interrupts a query at its time limit. DuckDB checks for an interrupt between chunks of rows,
not inside one value's computation (``list_transform(range(2000), lambda i: range(200000))`` is one row), so a
query can outlive its limit by as long as its memory bound lets it compute; a process that must not wait (the
CLI, which has nothing else to do) registers :func:`on_stuck`: called ``STUCK_GRACE_S`` after the interrupt if
the query is still running, it may end the process with the one-line error.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator

try:
    import resource
except ImportError:  # pragma: no cover - not on Windows
    resource = None  # type: ignore[assignment]

_lock = threading.Lock()
_active = 0
_base = 0
_budget = 0
_saved: tuple[int, int] | None = None


def data_size() -> int:
    """The process's private writable memory in bytes (``VmData`` of /proc/self/status), 0 if unknown."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmData:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _apply() -> None:
    soft = _base + _active * _budget
    hard = _saved[1] if _saved else resource.RLIM_INFINITY
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))


@contextlib.contextmanager
def memory_bound(budget: int) -> Iterator[None]:
    """Bound the memory the block may allocate to ``budget`` bytes more than the process used when it began (with
    several blocks at once in threads: the total of their budgets over what was used when the first began)."""
    global _active, _base, _budget, _saved
    if resource is None or not hasattr(resource, "RLIMIT_DATA") or budget <= 0:
        yield
        return
    with _lock:
        if _active == 0:
            _saved = resource.getrlimit(resource.RLIMIT_DATA)
            _base = data_size()
            _budget = budget
        else:
            _budget = max(_budget, budget)
        _active += 1
        if _base:
            _apply()
    try:
        yield
    finally:
        with _lock:
            _active -= 1
            if _active == 0 and _saved is not None:
                resource.setrlimit(resource.RLIMIT_DATA, _saved)
                _saved = None
            elif _base:
                _apply()


STUCK_GRACE_S = 2.0
"""Seconds a query may run on after its interrupt before the :func:`on_stuck` handler is called."""

_stuck_handler: Callable[[str], None] | None = None


def on_stuck(handler: Callable[[str], None] | None) -> None:
    """Register what to do with a query that ignores its interrupt (called with the time-out message from a timer
    thread; e.g. the CLI prints it and ends the process). None: keep waiting (the default, for library use)."""
    global _stuck_handler
    _stuck_handler = handler


CANCEL_POLL_S = 0.05
"""How often a running query looks at its cancel event (seconds)."""


@contextlib.contextmanager
def time_bound(timeout_s: float | None, interrupt: Callable[[], None], message: str,
               cancel: threading.Event | None = None) -> Iterator[threading.Event]:
    """Call ``interrupt`` after ``timeout_s`` seconds (None: never) or as soon as ``cancel`` is set (e.g. the client
    of a service request went away); the yielded event says whether the time limit fired. If the block is still
    running ``STUCK_GRACE_S`` after the time limit, the :func:`on_stuck` handler gets ``message``."""
    fired = threading.Event()
    done = threading.Event()
    watcher = None

    def safe_interrupt() -> None:
        # a timer or the watcher may fire just as the block ends and its cursor closes: nothing is left to stop
        with contextlib.suppress(Exception):
            interrupt()

    if cancel is not None:
        def watch() -> None:
            while not done.wait(CANCEL_POLL_S):
                if cancel.is_set():
                    safe_interrupt()
                    return

        watcher = threading.Thread(target=watch, name="negdb-cancel", daemon=True)
        watcher.start()
    if timeout_s is None:
        try:
            yield fired
        finally:
            done.set()
        return

    def stop() -> None:
        fired.set()
        safe_interrupt()

    def stuck() -> None:
        handler = _stuck_handler
        if handler is not None:
            handler(message)

    timers = [threading.Timer(timeout_s, stop), threading.Timer(timeout_s + STUCK_GRACE_S, stuck)]
    for t in timers:
        t.daemon = True
        t.start()
    try:
        yield fired
    finally:
        done.set()
        for t in timers:
            t.cancel()
