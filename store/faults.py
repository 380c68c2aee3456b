"""Named crash points for fault-injection tests: ``NEGDB_CRASH_AT`` kills the process at a named point.

Writers call :func:`crash_point` at each step whose interruption must be survivable (between writing an
array and publishing it, between two segments of a publish, ...). Normally it does nothing. With the
environment variable ``NEGDB_CRASH_AT`` set to a comma-separated list of ``name``, ``name@N`` (the N-th
time the point is reached, counting from 1) or ``name:raise`` entries, the process is killed there with
``SIGKILL`` (as a power loss or ``kill -9`` would: no handler, no ``finally`` runs) or, with ``:raise``,
:class:`SimulatedCrash` is raised (to test the error paths). ``tests/test_faults.py`` runs every ingest
crash point and proves that the resumed store equals an uninterrupted one.
"""

from __future__ import annotations

import os
import signal
import threading

ENV = "NEGDB_CRASH_AT"

POINTS = frozenset({
    "vector.after_create",      # a small array created (fill value only), its data not yet written
    "vector.before_rename",     # a small array written in its temporary folder, not yet renamed into place
    "stream.before_state",      # a batch's shards written and flushed, the resume state not yet saved
    "stream.after_batch",       # a batch counted in the resume state
    "stats.after_layer",        # one layer's statistics saved in the work folder
    "publish.after_metadata",   # models / checkpoints / slices / stat_specs segments written
    "publish.after_arrays",     # kept arrays renamed into acts/, the activations segment not yet written
    "publish.after_activations",  # the activations segment written, neuron_stats not yet
    "publish.after_stats",      # the neuron_stats segment written, the run not yet marked done
    "publish.after_done",       # the run marked done, its work folder not yet removed
    "segment.before_link",      # a segment's temporary file flushed, not yet linked into place
})
"""Every crash point negdb's writers declare (a name not listed here is a programming error)."""


class SimulatedCrash(BaseException):
    """Raised at a crash point named with ``:raise`` (a BaseException: no ``except Exception`` swallows it)."""


_counts: dict[str, int] = {}
_lock = threading.Lock()


def _armed() -> dict[str, tuple[int, str]]:
    spec = os.environ.get(ENV, "").strip()
    out: dict[str, tuple[int, str]] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        part, _, how = part.partition(":")
        name, _, nth = part.partition("@")
        out[name] = (int(nth or 1), how or "kill")
    return out


def reset() -> None:
    """Forget how often each point was reached (tests that crash several runs in one process)."""
    with _lock:
        _counts.clear()


def crash_point(name: str) -> None:
    """Die here if ``NEGDB_CRASH_AT`` names this point (see the module docstring); otherwise do nothing."""
    if name not in POINTS:
        raise ValueError(f"unknown crash point {name!r}")
    if ENV not in os.environ:
        return
    armed = _armed().get(name)
    if armed is None:
        return
    with _lock:
        _counts[name] = _counts.get(name, 0) + 1
        hit = _counts[name] == armed[0]
    if not hit:
        return
    if armed[1] == "raise":
        raise SimulatedCrash(f"simulated crash at {name}")
    os.kill(os.getpid(), signal.SIGKILL)
