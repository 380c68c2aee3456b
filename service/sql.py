"""User SQL over the catalog: ``POST /sql`` (one read-only statement) and ``GET /schema`` (views and columns)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from negdb.errors import NotFound
from negdb.service.encode import ARROW_STREAM, tabular
from negdb.service.limits import cancel_of
from negdb.service.state import State

router = APIRouter(tags=["sql"])


class SqlRequest(BaseModel):
    """One read-only SQL statement (SELECT or WITH) over the catalog's tables and views."""

    sql: str = Field(..., description="exactly one SELECT/WITH statement, e.g. "
                     "\"SELECT layer, count(*) FROM neurons WHERE w_dist > 0.9 GROUP BY 1\"")
    max_rows: int | None = Field(None, ge=1, description="return at most this many rows (at most the server's "
                                 "limit, which is the default); more rows set truncated=true")
    params: list[Any] | None = Field(None, description="values for the statement's ? placeholders, in order")


@router.post("/sql", summary="Run one read-only SQL statement (JSON or Arrow IPC stream)",
             responses={200: {"content": {"application/json": {}, ARROW_STREAM: {}},
                              "description": "JSON {columns, types, rows, row_count, truncated, elapsed_ms}, or "
                                             "an Arrow IPC stream (headers X-Negdb-Truncated, X-Negdb-Rows, "
                                             "X-Negdb-Elapsed-Ms) with `Accept: " + ARROW_STREAM + "`"}})
def sql(body: SqlRequest, request: Request, state: State,
        format: str | None = Query(None, description="json or arrow (overrides the Accept header)")) -> Response:
    """Exactly one SELECT/WITH statement over the tables (models, checkpoints, slices, stat_specs,
    activations, runs, neuron_stats, neuron_sets, neuron_set_members) and the view `neurons`.
    Anything else (several statements, COPY, ATTACH, file readers, settings) is refused with 400."""
    limit = state.row_limit(body.max_rows, "max_rows")
    with state.snapshot() as snap:
        table, truncated, elapsed = state.run(snap, body.sql, body.params, limit=limit, cancel=cancel_of(request))
    return tabular(request, format, table, truncated, elapsed)


@router.get("/schema", summary="The views of the catalog with their columns, types and meanings (`negdb schema`)")
def schema(state: State, view: str | None = Query(None, description="only this view")) -> dict[str, Any]:
    with state.snapshot() as snap:  # describe() runs on cursors of its own, safe alongside other requests
        rows = snap.catalog.describe()
        docs = snap.catalog.view_docs()
    known = list(dict.fromkeys(r[0] for r in rows))
    if view is not None and view not in known:
        raise NotFound(f"unknown view {view!r}: the views are {', '.join(known)}")
    return {"views": [{"name": v, "doc": docs.get(v, ""),
                       "columns": [{"name": c, "type": t, "meaning": m} for w, c, t, m in rows if w == v]}
                      for v in known if view is None or v == view]}
