"""Run a list of tasks on a Dask cluster: one overall progress bar, a per-worker summary, retries.

Each task is a plain function of :mod:`negdb.cluster.jobs` that writes its results to the store and returns only a
small :class:`Outcome` (what it did, on which worker, how long, its log lines): results travel through the store.
Tasks are submitted with a key that names their unit of work (``pure=False``: a re-submission runs again and finds
the work stored) and ``retries``; a worker that dies mid-task has its task rescheduled, which resumes from the
store's work folder.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tqdm.auto import tqdm

Log = Callable[[str], None]


@dataclass
class Outcome:
    """What one task did."""

    key: str
    status: str
    worker: str = ""
    seconds: float = 0.0
    log: list[str] = field(default_factory=list)
    detail: Any = None


@dataclass(frozen=True)
class Task:
    """One unit of work: ``fn(*args)`` returning an :class:`Outcome`; ``gpu`` tasks ask for a GPU resource.
    ``after``: keys of earlier tasks of the same list that must finish first (a Dask task dependency)."""

    key: str
    fn: Callable[..., Outcome]
    args: tuple
    gpu: bool = True
    after: tuple[str, ...] = ()


def _after(fn: Callable[..., Outcome], _done: list[Outcome], *args: Any) -> Outcome:
    """``fn(*args)``, run by Dask once the futures it was given as ``_done`` are finished (their results unused:
    what they computed is in the store)."""
    return fn(*args)


def worker_name() -> str:
    """The Dask worker this runs on (its address), or ``local``."""
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except (ImportError, ValueError):
        return "local"


def timed(key: str, body: Callable[[Log], tuple[str, Any]]) -> Outcome:
    """Run ``body(log)`` -> (status, detail) and wrap it into an :class:`Outcome` with its log lines."""
    lines: list[str] = []
    started = time.perf_counter()
    status, detail = body(lines.append)
    return Outcome(key, status, worker_name(), time.perf_counter() - started, lines, detail)


def _stderr(msg: str) -> None:
    tqdm.write(msg, file=sys.stderr)


def run_tasks(client: Any, tasks: list[Task], *, desc: str, progress: bool = True, log: Log = _stderr,
              retries: int = 2) -> list[Outcome]:
    """Run ``tasks`` on ``client`` (``None``: one after the other here, in order; a task's ``after`` must name
    earlier tasks); outcomes in task order."""
    from negdb.cluster.executor import gpu_resources

    out: dict[str, Outcome] = {}
    bar = tqdm(total=len(tasks), desc=desc, unit="task", disable=not progress, dynamic_ncols=True)
    try:
        if client is None:
            for t in tasks:
                out[t.key] = t.fn(*t.args)
                bar.update(1)
        else:
            from distributed import as_completed

            gpu = gpu_resources(client)
            by_key: dict[str, Any] = {}
            for t in tasks:
                fn, args = (t.fn, t.args) if not t.after else (_after, (t.fn, [by_key[k] for k in t.after], *t.args))
                by_key[t.key] = client.submit(fn, *args, key=t.key, pure=False, retries=retries,
                                              resources=gpu if t.gpu else None)
            futures = {f: k for k, f in by_key.items()}
            for future in as_completed(futures):
                outcome = future.result()
                out[futures[future]] = outcome
                bar.set_postfix_str(f"{outcome.key}: {outcome.status}")
                bar.update(1)
    finally:
        bar.close()
    ordered = [out[t.key] for t in tasks]
    for o in ordered:
        for line in o.log:
            log(line)
    log(summary(ordered))
    return ordered


def summary(outcomes: list[Outcome]) -> str:
    """One line per worker: tasks, their statuses and seconds."""
    per: dict[str, list[Outcome]] = {}
    for o in outcomes:
        per.setdefault(o.worker, []).append(o)
    lines = [f"{len(outcomes)} task(s) on {len(per)} worker(s):"]
    for worker, items in sorted(per.items()):
        counts: dict[str, int] = {}
        for o in items:
            counts[o.status] = counts.get(o.status, 0) + 1
        what = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        lines.append(f"  {worker}: {len(items)} task(s) ({what}), {sum(o.seconds for o in items):.1f} s")
    return "\n".join(lines)
