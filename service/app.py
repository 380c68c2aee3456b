"""The read-only HTTP query service: FastAPI over one shared, self-refreshing catalog snapshot.

``create_app(store)`` returns the application; ``negdb serve`` (see :mod:`negdb.service.server`) runs it with
uvicorn. Interactive docs are at ``/docs``, the OpenAPI schema at ``/openapi.json``. Every query that carries user
text (``POST /sql``, ``GET /neurons?where=``) goes through ``Catalog.query`` with the server's row and time limits;
see ``docs/SERVICE.md`` for the endpoints and why readers never block writers nor see partial results.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, Field

import negdb
from negdb.errors import NegdbError
from negdb.service.encode import ARROW_STREAM, SafeJSONResponse, arrow_stream, json_safe, table_records, table_rows
from negdb.service.live import LiveCatalog, Snapshot, row_counts

DEFAULT_MAX_ROWS = 10_000
DEFAULT_TIMEOUT_S = 10.0


# ------------------------------------------------------------------------------------------------ errors


class NotFound(Exception):
    """An unknown model, checkpoint, neuron or set: HTTP 404."""


def _is_timeout(err: BaseException) -> bool:
    """Whether ``Catalog.query`` stopped the statement at its time limit (``QueryTimeout``)."""
    return any(cls.__name__ == "QueryTimeout" for cls in type(err).__mro__)


def _one_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _error(status: int, message: str, **extra: Any) -> SafeJSONResponse:
    return SafeJSONResponse({"error": message, **extra}, status_code=status)


# ---------------------------------------------------------------------------------------------- requests


class SqlRequest(BaseModel):
    """One read-only SQL statement (SELECT or WITH) over the catalog's tables and views."""

    sql: str = Field(..., description="exactly one SELECT/WITH statement, e.g. "
                     "\"SELECT layer, count(*) FROM neurons WHERE w_dist > 0.9 GROUP BY 1\"")
    max_rows: int | None = Field(None, ge=1, description="return at most this many rows (at most the server's "
                                 "limit, which is the default); more rows set truncated=true")
    params: list[Any] | None = Field(None, description="values for the statement's ? placeholders, in order")


def _wants_arrow(request: Request, fmt: str | None) -> bool:
    if fmt is not None:
        if fmt not in ("json", "arrow"):
            raise NegdbError(f"format={fmt}: use json or arrow")
        return fmt == "arrow"
    return ARROW_STREAM in request.headers.get("accept", "").lower()


# --------------------------------------------------------------------------------------------------- app


def create_app(store: str | Path, *, max_rows: int = DEFAULT_MAX_ROWS, timeout_s: float = DEFAULT_TIMEOUT_S,
               check_interval: float = 0.5, max_concurrent_queries: int | None = None) -> FastAPI:
    """The read-only query service of the store at ``store``.

    Args:
        store: the store folder (must hold a negdb store).
        max_rows: the most rows one answer returns (``POST /sql`` and ``GET /neurons`` may ask for fewer).
        timeout_s: a statement still running after this many seconds is stopped (HTTP 408).
        check_interval: seconds between checks of the store's segment listing (new data appears after at most
            about this long).
        max_concurrent_queries: queries running at once (default: twice the CPU count); more requests wait
            for a slot (the time limit counts from the start of the query). DuckDB parallelises each query over
            the cores already, so more at once only adds contention (bench/RESULTS.md).
    """
    root = Path(store).expanduser()
    if not (root / "negdb.json").is_file():
        raise NegdbError(f"{root} is not a negdb store (no negdb.json): fill it with `negdb --store {root} ingest`"
                         " or pass the right --store")
    if max_rows < 1:
        raise NegdbError(f"--max-rows must be at least 1 (got {max_rows})")
    if not timeout_s > 0:
        raise NegdbError(f"--timeout must be a positive number of seconds (got {timeout_s})")

    live = LiveCatalog(root, check_interval=check_interval)
    slots = threading.BoundedSemaphore(max_concurrent_queries or 2 * (os.cpu_count() or 1))

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI):  # type: ignore[no-untyped-def]
        yield
        live.close()

    app = FastAPI(
        title="negdb query service",
        version=negdb.__version__,
        description=(
            "Read-only access to a negdb store: per-neuron statistics of MLP pre-activations (w_dist, moments, "
            "quantiles, md, ...) of models and their training checkpoints, and saved neuron sets. Answers are JSON, "
            f"or an Arrow IPC stream where the request sends `Accept: {ARROW_STREAM}`. Errors are JSON "
            "`{\"error\": \"...\"}`: 400 bad input or refused SQL, 404 unknown model/checkpoint/neuron/set, "
            "408 a statement over the time limit."),
        lifespan=lifespan,
        default_response_class=SafeJSONResponse,
    )
    app.state.live = live
    app.state.max_rows = max_rows
    app.state.timeout_s = timeout_s

    # -------------------------------------------------------------------------------------- error mapping

    @app.exception_handler(NegdbError)
    async def _negdb_error(_req: Request, err: NegdbError) -> Response:
        if _is_timeout(err):
            return _error(408, str(err))
        return _error(400, str(err))

    @app.exception_handler(NotFound)
    async def _not_found(_req: Request, err: NotFound) -> Response:
        return _error(404, str(err))

    @app.exception_handler(Exception)
    async def _internal(_req: Request, err: Exception) -> Response:
        return _error(500, f"internal error ({type(err).__name__}): {_one_line(err)}")

    @app.exception_handler(RequestValidationError)
    async def _invalid(_req: Request, err: RequestValidationError) -> Response:
        parts = []
        for e in err.errors():
            where = ".".join(str(p) for p in e.get("loc", ()) if p != "body")
            parts.append(f"{where}: {e.get('msg')}" if where else str(e.get("msg")))
        return _error(400, "invalid request: " + "; ".join(parts))

    try:
        import duckdb

        @app.exception_handler(duckdb.Error)
        async def _duckdb_error(_req: Request, err: Exception) -> Response:
            if isinstance(err, duckdb.InterruptException):
                return _error(408, f"the query ran past the time limit of {timeout_s:g} s and was stopped: "
                                   "narrow it (WHERE model_id/revision/layer) or aggregate")
            return _error(400, _one_line(err))
    except ImportError:  # pragma: no cover
        pass

    # ----------------------------------------------------------------------------------------- helpers

    @contextlib.contextmanager
    def snapshot() -> Iterator[Snapshot]:
        with live.use() as snap:
            yield snap

    def run(snap: Snapshot, sql: str, params: list[Any] | None = None, *,
            limit: int | None = None) -> tuple[pa.Table, bool, float]:
        """One statement through ``Catalog.query`` with the server's limits: (table, truncated, elapsed ms)."""
        with slots:
            start = time.perf_counter()
            res = snap.catalog.query(sql, params, max_rows=limit, timeout_s=timeout_s)
            return res.table, bool(res.truncated), (time.perf_counter() - start) * 1000.0

    def records(snap: Snapshot, sql: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
        """The service's own metadata queries (models, checkpoints, shapes): small, so not row-limited."""
        table, _, _ = run(snap, sql, params)
        return table_records(table)

    def row_limit(asked: int | None, what: str) -> int:
        if asked is None:
            return max_rows
        if asked < 1:
            raise NegdbError(f"{what} must be at least 1 (got {asked})")
        if asked > max_rows:
            raise NegdbError(f"{what}={asked} is above this server's limit of {max_rows} rows: ask for fewer, "
                             "aggregate in SQL, or start `negdb serve` with a larger --max-rows")
        return asked

    def tabular(request: Request, fmt: str | None, table: pa.Table, truncated: bool, elapsed_ms: float) -> Response:
        if _wants_arrow(request, fmt):
            return Response(arrow_stream(table), media_type=ARROW_STREAM, headers={
                "X-Negdb-Truncated": "true" if truncated else "false",
                "X-Negdb-Rows": str(table.num_rows),
                "X-Negdb-Elapsed-Ms": f"{elapsed_ms:.3f}"})
        return SafeJSONResponse({
            "columns": table.column_names, "types": [str(f.type) for f in table.schema],
            "rows": table_rows(table), "row_count": table.num_rows, "truncated": truncated,
            "elapsed_ms": round(elapsed_ms, 3)})

    def known_keys(snap: Snapshot) -> dict[str, set[str]]:
        """model_id -> its checkpoints' revisions (models without checkpoints map to an empty set)."""
        def compute() -> dict[str, set[str]]:
            keys: dict[str, set[str]] = {}
            for r in records(snap, "SELECT model_id, NULL AS revision FROM models UNION ALL "
                                   "SELECT model_id, revision FROM checkpoints"):
                revs = keys.setdefault(r["model_id"], set())
                if r["revision"] is not None:
                    revs.add(r["revision"])
            return keys
        return snap.remember("keys", compute)

    def check_model(snap: Snapshot, model: str) -> None:
        keys = known_keys(snap)
        if model not in keys:
            models = sorted(keys)
            shown = ", ".join(models[:20]) + (f", ... ({len(models)} in all)" if len(models) > 20 else "")
            raise NotFound(f"unknown model '{model}': the store holds {shown or 'no models yet'} (GET /models)")

    def check_checkpoint(snap: Snapshot, model: str | None, revision: str) -> None:
        keys = known_keys(snap)
        found = revision in keys.get(model, ()) if model is not None else any(revision in r for r in keys.values())
        if not found:
            where = f"model '{model}'" if model else "any model"
            raise NotFound(f"unknown checkpoint '{revision}' of {where} (GET /checkpoints"
                           + (f"?model={model}" if model else "") + " lists them)")

    # --------------------------------------------------------------------------------------- endpoints

    @app.get("/", include_in_schema=False)
    def index() -> dict[str, Any]:
        return {"service": "negdb query service", "version": negdb.__version__, "docs": "/docs",
                "openapi": "/openapi.json",
                "endpoints": ["/health", "/models", "/checkpoints", "/neurons", "/neuron/{model}/{checkpoint}/"
                              "{layer}/{index}", "/sets", "/sets/{name}", "/results", "/ablations", "/analyses", "POST /sql"]}

    @app.get("/health", summary="Service status, store path, segment and row counts, snapshot age")
    def health() -> dict[str, Any]:
        with snapshot() as snap:
            counts = row_counts(snap.listing, live.tables)
            now = time.time()
            return {
                "status": "ok", "version": negdb.__version__, "store": str(root.resolve()),
                "snapshot": {"taken_at": dt.datetime.fromtimestamp(snap.built_at, dt.timezone.utc).isoformat(),
                             "age_s": round(now - snap.built_at, 3),
                             "checked_s_ago": round(max(0.0, now - snap.checked_at), 3),
                             "segments": snap.segments, "refreshes": live.rebuilds},
                "tables": counts,
                "limits": {"max_rows": max_rows, "timeout_s": timeout_s},
            }

    @app.post("/sql", summary="Run one read-only SQL statement (JSON or Arrow IPC stream)",
              responses={200: {"content": {"application/json": {}, ARROW_STREAM: {}},
                               "description": "JSON {columns, types, rows, row_count, truncated, elapsed_ms}, or "
                                              "an Arrow IPC stream (headers X-Negdb-Truncated, X-Negdb-Rows, "
                                              "X-Negdb-Elapsed-Ms) with `Accept: " + ARROW_STREAM + "`"}})
    def sql(body: SqlRequest, request: Request,
            format: str | None = Query(None, description="json or arrow (overrides the Accept header)")) -> Response:
        """Exactly one SELECT/WITH statement over the tables (models, checkpoints, slices, stat_specs,
        activations, runs, neuron_stats, neuron_sets, neuron_set_members) and the view `neurons`.
        Anything else (several statements, COPY, ATTACH, file readers, settings) is refused with 400."""
        limit = row_limit(body.max_rows, "max_rows")
        with snapshot() as snap:
            table, truncated, elapsed = run(snap, body.sql, body.params, limit=limit)
        return tabular(request, format, table, truncated, elapsed)

    @app.get("/models", summary="Models in the store, with their checkpoint counts")
    def models() -> dict[str, Any]:
        with snapshot() as snap:
            rows = records(snap, "SELECT m.*, coalesce(c.n, 0) AS n_checkpoints FROM models m LEFT JOIN "
                                 "(SELECT model_id, count(DISTINCT revision) AS n FROM checkpoints GROUP BY 1) c "
                                 "USING (model_id) ORDER BY model_id")
        return {"models": rows}

    @app.get("/checkpoints", summary="Checkpoints (model, revision, step, tokens seen), in training order")
    def checkpoints(model: str | None = Query(None, description="only this model (a model_id of GET /models)")
                    ) -> dict[str, Any]:
        with snapshot() as snap:
            if model is not None:
                check_model(snap, model)
            rows = records(snap, "SELECT * FROM checkpoints WHERE (? IS NULL OR model_id = ?) "
                                 "ORDER BY model_id, step NULLS LAST, revision", [model, model])
        return {"checkpoints": rows}

    @app.get("/results", summary="Stored evaluations (eval_results), newest last")
    def results(model: str | None = Query(None, description="only this model_id"),
                benchmark: str | None = Query(None, description="only this benchmark (blimp, tse, wikitext2, ...)"),
                limit: int | None = Query(None, description="at most this many rows")) -> dict[str, Any]:
        n = row_limit(limit, "limit")
        with snapshot() as snap:
            table, truncated, _ = run(snap, "SELECT * EXCLUDE (versions_json) FROM eval_results WHERE (? IS NULL OR "
                                            "model_id = ?) AND (? IS NULL OR benchmark = ?) ORDER BY created_at",
                                      [model, model, benchmark, benchmark], limit=n)
        return {"results": table_records(table), "truncated": truncated}

    @app.get("/results/{result_id}/metrics", summary="Every metric of one stored evaluation, overall and per group")
    def result_metrics(result_id: str) -> dict[str, Any]:
        with snapshot() as snap:
            rows = records(snap, "SELECT * FROM eval_metrics WHERE result_id = ? OR result_id LIKE ? || '%' "
                                 "ORDER BY metric, level, grp NULLS FIRST", [result_id, result_id])
        if not rows:
            raise NotFound(f"no stored evaluation {result_id!r}: GET /results lists them")
        return {"metrics": rows}

    @app.get("/ablations", summary="Stored ablation experiments, one row per condition and seed")
    def ablations(model: str | None = Query(None, description="only this model_id")) -> dict[str, Any]:
        with snapshot() as snap:
            rows = records(snap, "SELECT * EXCLUDE (config_json) FROM ablations WHERE (? IS NULL OR model_id = ?) "
                                 "ORDER BY created_at, ablation_id, condition, seed", [model, model])
        return {"ablations": rows}

    @app.get("/analyses", summary="Stored analyses (negdb analyze pos | layers | training | pairs; negdb sweep), "
                                   "newest last")
    def analyses(model: str | None = Query(None, description="only this model_id"),
                 kind: str | None = Query(None, description="only this kind: pos, layers, training, pairs or sweep")
                 ) -> dict[str, Any]:
        with snapshot() as snap:
            rows = records(snap, "SELECT * FROM analyses WHERE (? IS NULL OR model_id = ?) AND (? IS NULL OR kind = ?) "
                                 "ORDER BY created_at, analysis_id", [model, model, kind, kind])
        return {"analyses": rows}

    @app.get("/analyses/{analysis_id}", summary="One stored analysis with the rows of its result tables")
    def analysis(analysis_id: str) -> dict[str, Any]:
        from negdb.store.tables import ANALYSIS_TABLES

        with snapshot() as snap:
            head = records(snap, "SELECT * FROM analyses WHERE analysis_id = ?", [analysis_id])
            if not head:
                raise NotFound(f"no stored analysis {analysis_id!r}: GET /analyses lists them")
            tables = {t.name: records(snap, f"SELECT * EXCLUDE (analysis_id) FROM {t.name} WHERE analysis_id = ?",
                                      [analysis_id]) for t in ANALYSIS_TABLES}
        return {"analysis": head[0], "tables": {k: v for k, v in tables.items() if v}}

    @app.get("/neurons", summary="Per-neuron statistics (the neurons view), filtered by a boolean expression",
             responses={200: {"content": {"application/json": {}, ARROW_STREAM: {}}}})
    def neurons(request: Request,
                model: str | None = Query(None, description="model_id (GET /models)"),
                checkpoint: str | None = Query(None, description="revision, e.g. step1000 or final"),
                where: str | None = Query(None, description="boolean expression over the view's columns, e.g. "
                                          "\"w_dist > 0.9 AND layer < 4\""),
                limit: int | None = Query(None, description="at most this many rows (default and maximum: the "
                                          "server's limit)"),
                format: str | None = Query(None, description="json or arrow (overrides the Accept header)"),
                ) -> Response:
        """Rows of `neurons` in (model_id, revision, layer, neuron) order; `truncated` says whether more match."""
        n = row_limit(limit, "limit")
        conds, params = [], []
        if model is not None:
            conds.append("model_id = ?")
            params.append(model)
        if checkpoint is not None:
            conds.append("revision = ?")
            params.append(checkpoint)
        # the keys filter an inner query, so no expression text can widen them
        sql_text = "SELECT * FROM neurons" + (" WHERE " + " AND ".join(conds) if conds else "")
        if where is not None:
            from negdb.query.safety import check_where

            if not where.strip():
                raise NegdbError("where is empty: give a boolean expression like w_dist > 0.9, or leave it out")
            try:
                checked = check_where(where)
            except NegdbError as err:  # its messages name the CLI option
                raise NegdbError(str(err).replace("the --where expression", "where")) from None
            sql_text = f"SELECT * FROM ({sql_text}) AS n WHERE ({checked})"
        sql_text += " ORDER BY model_id, revision, layer, neuron"
        with snapshot() as snap:
            if model is not None:
                check_model(snap, model)
            if checkpoint is not None:
                check_checkpoint(snap, model, checkpoint)
            table, truncated, elapsed = run(snap, sql_text, params, limit=n)
        return tabular(request, format, table, truncated, elapsed)

    def neuron_report(model: str, checkpoint: str, layer: int, index: int, bins: int, contexts: int,
                      window: int) -> dict[str, Any]:
        with snapshot() as snap:
            check_model(snap, model)
            check_checkpoint(snap, model, checkpoint)
            layers = snap.remember(f"layers {model!r} {checkpoint!r}", lambda: {
                r["layer"]: r["n"] for r in records(
                    snap, "SELECT layer, max(neuron) + 1 AS n FROM neuron_stats WHERE model_id = ? AND revision = ? "
                          "GROUP BY layer ORDER BY layer", [model, checkpoint])})
            if not 0 <= index < layers.get(layer, 0):
                have = (f"layers {', '.join(map(str, sorted(layers)))} with neurons 0-{max(layers.values()) - 1}"
                        if layers else "no statistics yet")
                raise NotFound(f"no statistics for neuron {index} of layer {layer} of {model}@{checkpoint} ({have})")
            from negdb.query import neuron

            with snap.lock:  # negdb's own queries share the snapshot's connection: one at a time
                rep = neuron.report(snap.catalog, model, checkpoint, layer, index, bins=bins, contexts=contexts,
                                    window=window)
            return rep.to_dict()

    report_doc = ("Statistics, histogram (with the fitted Gaussian's expected counts) and token contexts of one "
                  "neuron (`negdb neuron`).")

    @app.get("/neuron", summary="One neuron's report (model etc. as query parameters)", description=report_doc)
    def neuron_by_query(model: str = Query(..., description="model_id (may contain '/')"),
                        checkpoint: str = Query(..., description="revision"),
                        layer: int = Query(..., ge=0), index: int = Query(..., ge=0),
                        bins: int = Query(40, ge=1, le=1000), contexts: int = Query(5, ge=0, le=100),
                        window: int = Query(8, ge=0, le=256)) -> dict[str, Any]:
        return neuron_report(model, checkpoint, layer, index, bins, contexts, window)

    @app.get("/neuron/{model_path:path}", summary="One neuron's report: /neuron/{model}/{checkpoint}/{layer}/{index}",
             description=report_doc + " The model id may contain '/' (hub ids, local paths: "
             "/neuron/EleutherAI/pythia-70m/step1000/3/17, /neuron//abs/path/run/final/0/5) or be percent-encoded; "
             "the last three path segments are always checkpoint, layer and neuron index.")
    def neuron_by_path(model_path: str, bins: int = Query(40, ge=1, le=1000), contexts: int = Query(5, ge=0, le=100),
                       window: int = Query(8, ge=0, le=256)) -> dict[str, Any]:
        parts = model_path.rsplit("/", 3)
        if len(parts) != 4 or not parts[0] or not parts[1]:
            raise NegdbError("use /neuron/{model}/{checkpoint}/{layer}/{index}, e.g. /neuron/pythia-70m/step1000/3/17")
        model, checkpoint, layer_s, index_s = parts
        try:
            layer, index = int(layer_s), int(index_s)
        except ValueError:
            raise NegdbError(f"layer and index must be whole numbers (got '{layer_s}' and '{index_s}')") from None
        if layer < 0 or index < 0:
            raise NegdbError("layer and index must be at least 0")
        return neuron_report(model, checkpoint, layer, index, bins, contexts, window)

    @app.get("/sets", summary="Saved neuron sets (without members)")
    def sets_list() -> dict[str, Any]:
        from negdb.query import sets

        with snapshot() as snap, snap.lock:
            frame = sets.list_sets(snap.catalog)
        rows = frame.to_dicts() if hasattr(frame, "to_dicts") else json_safe(frame)
        for r in rows:
            for key, parsed in (("counts_json", "counts"), ("expression", "expression")):
                if isinstance(r.get(key), str):
                    with contextlib.suppress(ValueError):
                        r[parsed] = json.loads(r.pop(key))
        return {"sets": rows}

    @app.get("/sets/{name}", summary="One saved neuron set with its members [[layer, neuron], ...]")
    def sets_get(name: str) -> dict[str, Any]:
        from negdb.query import sets

        with snapshot() as snap:
            with snap.lock:
                names = set(sets.list_sets(snap.catalog)["name"].to_list())
                if name not in names:
                    raise NotFound(f"no neuron set named '{name}' (GET /sets lists them)")
                found = sets.get(snap.catalog, name)
        return found.to_dict()

    return app
