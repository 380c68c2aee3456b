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
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from negdb.store.layout import StoreLayout
from negdb.store.segments import write_segment
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
    """A stored evaluation: its ``eval_results`` row and the paths of its details."""

    row: dict[str, Any]
    root: Path
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
            path = self.root / "tables" / table / f"{self.result_id}.parquet"
            self._frames[table] = (pl.from_arrow(pq.read_table(path)) if path.exists()  # type: ignore[assignment]
                                   else pl.DataFrame())
        return self._frames[table]

    def items(self) -> pl.DataFrame:
        """Per-item scores (``eval_items`` rows), in item order."""
        return self._read("eval_items").sort("item")

    def metrics(self) -> pl.DataFrame:
        return self._read("eval_metrics")

    def tokens(self) -> pl.DataFrame:
        return self._read("eval_tokens")


def _path(layout: StoreLayout, table: Table, result_id: str) -> Path:
    return layout.table_dir(table.name) / f"{result_id}.parquet"


def lookup(layout: StoreLayout, result_id: str) -> StoredResult | None:
    """The stored evaluation ``result_id``, or ``None`` when it is not (completely) stored."""
    path = _path(layout, EVAL_RESULTS, result_id)
    if not path.exists():
        return None
    rows = pq.read_table(path).to_pylist()
    return StoredResult(rows[0], layout.root) if rows else None


def _with_id(table: Table, rows: list[dict[str, Any]], result_id: str) -> pa.Table:
    return table.from_rows([{**r, "result_id": result_id} for r in rows])


def publish(layout: StoreLayout, row: dict[str, Any], items: list[dict[str, Any]], metrics: list[dict[str, Any]],
            tokens: list[dict[str, Any]] | None = None) -> StoredResult:
    """Write the details first, then the result row (first writer wins for each segment)."""
    rid = str(row["result_id"])
    write_segment(_path(layout, EVAL_ITEMS, rid), _with_id(EVAL_ITEMS, items, rid), exclusive=True,
                  row_group_size=65536)
    if tokens:
        write_segment(_path(layout, EVAL_TOKENS, rid), _with_id(EVAL_TOKENS, tokens, rid), exclusive=True,
                      row_group_size=262144)
    write_segment(_path(layout, EVAL_METRICS, rid), _with_id(EVAL_METRICS, metrics, rid), exclusive=True)
    write_segment(_path(layout, EVAL_RESULTS, rid), EVAL_RESULTS.from_rows([row]), exclusive=True)
    stored = lookup(layout, rid)
    assert stored is not None
    return stored
