"""Keys and storage of an analysis: detail segments first, the ``analyses`` row last (the "done" marker).

Every analysis is keyed by :func:`analysis_id` (its kind and every argument that changes its numbers). Its rows
live in one segment per table, named by that key; the ``analyses`` row is written last, so a visible analysis
always has its details, and a repeated command finds it with :func:`lookup` and computes nothing.
"""

from __future__ import annotations

import json
import time
from typing import Any

from negdb.store.layout import StoreLayout, short_hash
from negdb.store.runs import now
from negdb.store.tables import ANALYSES, Table

ANALYSIS_VERSION = 1
"""Bumped whenever a change to an analysis could change a stored number (part of every key)."""


def canonical(obj: Any) -> str:
    """Canonical JSON (sorted keys, no spaces; non-JSON values as strings)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def analysis_id(kind: str, config: dict[str, Any]) -> str:
    """The key of an analysis of ``kind`` with the arguments ``config`` (16 hex digits)."""
    return short_hash(kind, canonical(config), ANALYSIS_VERSION, n=16)


def lookup(layout: StoreLayout, aid: str) -> dict[str, Any] | None:
    """The ``analyses`` row of ``aid``, or ``None`` when it is not (completely) stored."""
    found = layout.read_segment(ANALYSES.name, aid)
    rows = [] if found is None else found.to_pylist()
    return rows[0] if rows else None


def publish(layout: StoreLayout, aid: str, *, kind: str, model_id: str, revision: str | None,
            config: dict[str, Any], summary: dict[str, Any], seconds: float,
            tables: dict[Table, list[dict[str, Any]]]) -> dict[str, Any]:
    """Write each table's rows (``analysis_id`` filled in), then the ``analyses`` row; first writer wins."""
    for table, rows in tables.items():
        if rows:
            layout.put_segment(table.name, aid, table.from_rows([{**r, "analysis_id": aid} for r in rows]))
    row = {"analysis_id": aid, "kind": kind, "model_id": model_id, "revision": revision,
           "config_json": canonical(config), "summary_json": canonical(summary), "seconds": round(seconds, 3),
           "created_at": now()}
    layout.put_segment(ANALYSES.name, aid, ANALYSES.from_rows([row]))
    stored = lookup(layout, aid)
    assert stored is not None
    return stored


class Timer:
    """Seconds since construction (``with Timer() as t: ...; t.seconds``)."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()

    def __enter__(self) -> "Timer":
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.t0
