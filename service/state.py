"""What every endpoint of the service shares: the live catalog, the limits, and the checks built on them.

One :class:`ServiceState` is made by :func:`negdb.service.app.create_app` and kept on ``app.state.negdb``; an
endpoint asks for it with the :data:`State` dependency (``def f(state: State)``), so routers hold no globals and
a test or another app can build its own.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import pyarrow as pa
from fastapi import Depends, Request

from negdb.errors import BadArgument, BadQuery, NotFound, StoreError
from negdb.query.encode import table_records
from negdb.service.live import LiveCatalog, Snapshot

DEFAULT_MAX_ROWS = 10_000
DEFAULT_TIMEOUT_S = 10.0


@dataclass
class ServiceState:
    """The store being served, its live catalog snapshot and the per-query limits."""

    root: Path | str
    live: LiveCatalog
    max_rows: int = DEFAULT_MAX_ROWS
    timeout_s: float = DEFAULT_TIMEOUT_S
    slots: threading.BoundedSemaphore = field(
        default_factory=lambda: threading.BoundedSemaphore(2 * (os.cpu_count() or 1)))
    allow_writes: bool = False
    """Whether the browser may save neuron sets (``negdb serve --allow-writes``); the API never writes."""

    @classmethod
    def open(cls, store: str | Path, *, max_rows: int = DEFAULT_MAX_ROWS, timeout_s: float = DEFAULT_TIMEOUT_S,
             check_interval: float = 0.5, max_concurrent_queries: int | None = None,
             allow_writes: bool = False) -> ServiceState:
        """Check the arguments and open the store's live catalog (see ``create_app`` for their meaning)."""
        from negdb.store.objects import is_url, objects_for

        root: Path | str = str(store) if is_url(store) else Path(store).expanduser()
        if not objects_for(root).exists("negdb.json"):
            raise StoreError(f"{root} is not a negdb store (no negdb.json): fill it with `negdb --store {root} "
                             "ingest` or pass the right --store")
        if max_rows < 1:
            raise BadArgument(f"--max-rows must be at least 1 (got {max_rows})")
        if not timeout_s > 0:
            raise BadArgument(f"--timeout must be a positive number of seconds (got {timeout_s})")
        slots = threading.BoundedSemaphore(max_concurrent_queries or 2 * (os.cpu_count() or 1))
        return cls(root, LiveCatalog(root, check_interval=check_interval), max_rows, timeout_s, slots, allow_writes)

    def close(self) -> None:
        self.live.close()

    # ---------------------------------------------------------------------------------------- queries

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[Snapshot]:
        """The current catalog snapshot, held for the duration of one request."""
        with self.live.use() as snap:
            yield snap

    def run(self, snap: Snapshot, sql: str, params: list[Any] | None = None, *,
            limit: int | None = None, cancel: threading.Event | None = None) -> tuple[pa.Table, bool, float]:
        """One statement through ``Catalog.query`` with the server's limits: (table, truncated, elapsed ms).

        ``cancel`` (the request's, set by :class:`negdb.service.limits.RequestLimits` when the client goes away)
        stops the statement, or keeps it from starting while it waits for a query slot."""
        with self.slots:
            if cancel is not None and cancel.is_set():
                raise BadQuery("the query was cancelled: its client went away")
            start = time.perf_counter()
            res = snap.catalog.query(sql, params, max_rows=limit, timeout_s=self.timeout_s, cancel=cancel)
            return res.table, bool(res.truncated), (time.perf_counter() - start) * 1000.0

    def records(self, snap: Snapshot, sql: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
        """The service's own metadata queries (models, checkpoints, shapes): small, so not row-limited."""
        table, _, _ = self.run(snap, sql, params)
        return table_records(table)

    def row_limit(self, asked: int | None, what: str) -> int:
        """The rows to return when a request asks for ``asked`` (``None``: the server's limit)."""
        if asked is None:
            return self.max_rows
        if asked < 1:
            raise BadArgument(f"{what} must be at least 1 (got {asked})")
        if asked > self.max_rows:
            raise BadArgument(f"{what}={asked} is above this server's limit of {self.max_rows} rows: ask for "
                              "fewer, aggregate in SQL, or start `negdb serve` with a larger --max-rows")
        return asked

    # ----------------------------------------------------------------------------------------- checks

    def known_keys(self, snap: Snapshot) -> dict[str, set[str]]:
        """model_id -> its checkpoints' revisions (models without checkpoints map to an empty set)."""
        def compute() -> dict[str, set[str]]:
            keys: dict[str, set[str]] = {}
            for r in self.records(snap, "SELECT model_id, NULL AS revision FROM models UNION ALL "
                                        "SELECT model_id, revision FROM checkpoints"):
                revs = keys.setdefault(r["model_id"], set())
                if r["revision"] is not None:
                    revs.add(r["revision"])
            return keys
        return snap.remember("keys", compute)

    def check_model(self, snap: Snapshot, model: str) -> None:
        keys = self.known_keys(snap)
        if model not in keys:
            models = sorted(keys)
            shown = ", ".join(models[:20]) + (f", ... ({len(models)} in all)" if len(models) > 20 else "")
            raise NotFound(f"unknown model '{model}': the store holds {shown or 'no models yet'} (GET /models)")

    def check_checkpoint(self, snap: Snapshot, model: str | None, revision: str) -> None:
        keys = self.known_keys(snap)
        found = revision in keys.get(model, ()) if model is not None else any(revision in r for r in keys.values())
        if not found:
            where = f"model '{model}'" if model else "any model"
            raise NotFound(f"unknown checkpoint '{revision}' of {where} (GET /checkpoints"
                           + (f"?model={model}" if model else "") + " lists them)")


def get_state(request: Request) -> ServiceState:
    """The dependency behind :data:`State`: the app's :class:`ServiceState`."""
    return request.app.state.negdb


State = Annotated[ServiceState, Depends(get_state)]
