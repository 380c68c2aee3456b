"""Stored evaluations: their keys, segments and read-back.

One evaluation = one benchmark under one intervention (or none) on one checkpoint. Its key
(:class:`EvalKey`) hashes everything the numbers depend on; the result lives in four segments named by that
hash, written in this order so that a visible ``eval_results`` row always has its details::

    tables/eval_items/<result_id>.parquet     per-item scores (windows for perplexity)
    tables/eval_tokens/<result_id>.parquet    per-token losses (perplexity only)
    tables/eval_metrics/<result_id>.parquet   every metric, overall and per group
    tables/eval_results/<result_id>.parquet   the result row: the "done" marker
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

import polars as pl
import pyarrow as pa

from negdb.store.layout import StoreLayout
from negdb.store.tables import EVAL_ITEMS, EVAL_METRICS, EVAL_RESULTS, EVAL_TOKENS, Table

SCORING_VERSION = 1
"""Bumped whenever a change to scoring could change a stored number (part of every key)."""


@dataclass(frozen=True)
class EvalKey:
    """Everything a stored evaluation depends on; :attr:`result_id` is its SHA-256."""

    model_id: str
    revision: str
    commit: str | None
    mode: str
    set_id: str | None
    benchmark: str
    bench_hash: str
    scoring: tuple[tuple[str, Any], ...]
    limit: int | None
    seed: int

    @property
    def result_id(self) -> str:
        blob = json.dumps({**asdict(self), "scoring": dict(self.scoring), "version": SCORING_VERSION},
                          sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()


@dataclass(frozen=True)
class StoredResult:
    """A stored evaluation: its ``eval_results`` row and the store of its details."""

    row: dict[str, Any]
    layout: StoreLayout
    _frames: dict[str, pl.DataFrame] = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def result_id(self) -> str:
        return str(self.row["result_id"])

    @property
    def benchmark(self) -> str:
        return str(self.row["benchmark"])

    def _read(self, table: str) -> pl.DataFrame:
        """The result's segment of ``table`` (read once: segments are immutable)."""
        if table not in self._frames:
            found = self.layout.read_segment(table, self.result_id)
            self._frames[table] = pl.from_arrow(found) if found is not None else pl.DataFrame()  # type: ignore[assignment]
        return self._frames[table]

    def items(self) -> pl.DataFrame:
        """Per-item scores (``eval_items`` rows), in item order."""
        return self._read("eval_items").sort("item")

    def metrics(self) -> pl.DataFrame:
        return self._read("eval_metrics")

    def tokens(self) -> pl.DataFrame:
        return self._read("eval_tokens")


def lookup(layout: StoreLayout, result_id: str) -> StoredResult | None:
    """The stored evaluation ``result_id``, or ``None`` when it is not (completely) stored."""
    found = layout.read_segment(EVAL_RESULTS.name, result_id)
    rows = [] if found is None else found.to_pylist()
    return StoredResult(rows[0], layout) if rows else None


def _with_id(table: Table, rows: list[dict[str, Any]], result_id: str) -> pa.Table:
    return table.from_rows([{**r, "result_id": result_id} for r in rows])


def publish(layout: StoreLayout, row: dict[str, Any], items: list[dict[str, Any]], metrics: list[dict[str, Any]],
            tokens: list[dict[str, Any]] | None = None) -> StoredResult:
    """Write the details first, then the result row (first writer wins for each segment)."""
    rid = str(row["result_id"])
    layout.put_segment(EVAL_ITEMS.name, rid, _with_id(EVAL_ITEMS, items, rid), row_group_size=65536)
    if tokens:
        layout.put_segment(EVAL_TOKENS.name, rid, _with_id(EVAL_TOKENS, tokens, rid), row_group_size=262144)
    layout.put_segment(EVAL_METRICS.name, rid, _with_id(EVAL_METRICS, metrics, rid))
    layout.put_segment(EVAL_RESULTS.name, rid, EVAL_RESULTS.from_rows([row]))
    stored = lookup(layout, rid)
    assert stored is not None
    return stored
