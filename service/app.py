"""The read-only HTTP query service: FastAPI over one shared, self-refreshing catalog snapshot.

``create_app(store)`` returns the application; ``negdb serve`` (see :mod:`negdb.service.server`) runs it with
uvicorn. Interactive docs are at ``/docs``, the OpenAPI schema at ``/openapi.json``. Every query that carries user
text (``POST /sql``, ``GET /neurons?where=``) goes through ``Catalog.query`` with the server's row and time limits;
see ``docs/SERVICE.md`` for the endpoints and why readers never block writers nor see partial results.

The endpoints live in one router per idea (:mod:`~negdb.service.health`, :mod:`~negdb.service.sql`,
:mod:`~negdb.service.neurons`, :mod:`~negdb.service.results`); what they share (the live catalog, the limits,
the model and checkpoint checks) is one :class:`~negdb.service.state.ServiceState`, reached through the
``State`` dependency. Errors become JSON ``{"error": "..."}`` here, by kind (:mod:`negdb.errors`).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import duckdb
from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response

import negdb
from negdb.errors import NegdbError, NotFound, QueryTimeout, one_line
from negdb.service import health, neurons, results, sql
from negdb.service.encode import ARROW_STREAM, SafeJSONResponse, error
from negdb.service.limits import DEFAULT_MAX_QUEUED, Limits, RequestLimits
from negdb.service.state import DEFAULT_MAX_ROWS, DEFAULT_TIMEOUT_S, ServiceState

__all__ = ["DEFAULT_MAX_ROWS", "DEFAULT_TIMEOUT_S", "ROUTERS", "NotFound", "create_app"]

# every router of the service, in the order of the OpenAPI document
ROUTERS: tuple[APIRouter, ...] = (health.router, sql.router, neurons.router, results.router)

DESCRIPTION = (
    "Read-only access to a negdb store: per-neuron statistics of MLP pre-activations (w_dist, moments, "
    "quantiles, md, ...) of models and their training checkpoints, saved neuron sets, and stored evaluations, "
    f"ablations and analyses. Answers are JSON, or an Arrow IPC stream where the request sends `Accept: "
    f"{ARROW_STREAM}`. Errors are JSON `{{\"error\": \"...\"}}`: 400 bad input or refused SQL, 404 unknown "
    "model/checkpoint/neuron/set/result, 408 a statement over the time limit, 413/414/431 a request body, URL or "
    "headers over the server's limits, 503 (with Retry-After) when the server is busy.")


def create_app(store: str | Path, *, max_rows: int = DEFAULT_MAX_ROWS, timeout_s: float = DEFAULT_TIMEOUT_S,
               check_interval: float = 0.5, max_concurrent_queries: int | None = None,
               max_queued: int = DEFAULT_MAX_QUEUED, max_body: int = Limits.max_body,
               allow_writes: bool = False) -> FastAPI:
    """The query service and neuron browser of the store at ``store``.

    Args:
        store: the store folder (must hold a negdb store).
        max_rows: the most rows one answer returns (``POST /sql`` and ``GET /neurons`` may ask for fewer).
        timeout_s: a statement still running after this many seconds is stopped (HTTP 408).
        check_interval: seconds between checks of the store's segment listing (new data appears after at most
            about this long).
        max_concurrent_queries: queries running at once (default: twice the CPU count); more requests wait
            for a slot (the time limit counts from the start of the query). DuckDB parallelises each query over
            the cores already, so more at once only adds contention (bench/RESULTS.md).
        max_queued: requests that may wait for a query slot; one more gets 503 with Retry-After at once
            (:mod:`negdb.service.limits`, which also limits body, URL and header sizes and cancels the query
            of a client that went away).
        max_body: the largest request body (bytes); a larger one gets 413.
        allow_writes: let the browser save neuron sets (``POST /search/save``); read-only by default.
    """
    state = ServiceState.open(store, max_rows=max_rows, timeout_s=timeout_s, check_interval=check_interval,
                              max_concurrent_queries=max_concurrent_queries, allow_writes=allow_writes)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI):  # type: ignore[no-untyped-def]
        browser.warm()  # type: ignore[attr-defined]  # before the first request, not in it
        yield
        state.close()

    # the neuron browser: server-rendered pages over the same state, and their vendored scripts
    from fastapi.staticfiles import StaticFiles

    from negdb.service.browser import STATIC, make_router

    browser = make_router(state)

    app = FastAPI(title="negdb query service", version=negdb.__version__, description=DESCRIPTION,
                  lifespan=lifespan, default_response_class=SafeJSONResponse)
    app.state.negdb = state
    slots = max_concurrent_queries or 2 * (os.cpu_count() or 1)
    app.add_middleware(RequestLimits, limits=Limits(max_body=max_body, max_in_flight=slots + max_queued))
    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    app.state.browser_home = browser.home  # type: ignore[attr-defined]  # GET / for a browser (health.index)
    app.include_router(browser)
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    return app


def install_error_handlers(app: FastAPI) -> None:
    """Every error as JSON ``{"error": "one line"}``: 404 :class:`~negdb.errors.NotFound`, 408
    :class:`~negdb.errors.QueryTimeout`, 400 any other :class:`~negdb.errors.NegdbError`, a DuckDB error or an
    invalid request, 500 anything else (a bug)."""

    @app.exception_handler(NegdbError)
    async def _negdb_error(_req: Request, err: NegdbError) -> Response:
        return error(400, str(err))

    @app.exception_handler(NotFound)
    async def _not_found(_req: Request, err: NotFound) -> Response:
        return error(404, str(err))

    @app.exception_handler(QueryTimeout)
    async def _timeout(_req: Request, err: QueryTimeout) -> Response:
        return error(408, str(err))

    @app.exception_handler(Exception)
    async def _internal(_req: Request, err: Exception) -> Response:
        return error(500, f"internal error ({type(err).__name__}): {one_line(err)}")

    @app.exception_handler(RequestValidationError)
    async def _invalid(_req: Request, err: RequestValidationError) -> Response:
        parts = []
        for e in err.errors():
            where = ".".join(str(p) for p in e.get("loc", ()) if p != "body")
            parts.append(f"{where}: {e.get('msg')}" if where else str(e.get("msg")))
        return error(400, "invalid request: " + "; ".join(parts))

    @app.exception_handler(duckdb.Error)
    async def _duckdb_error(req: Request, err: Exception) -> Response:
        if isinstance(err, duckdb.InterruptException):
            limit = req.app.state.negdb.timeout_s
            return error(408, f"the query ran past the time limit of {limit:g} s and was stopped: narrow it "
                              "(WHERE model_id/revision/layer) or aggregate")
        return error(400, one_line(err))
