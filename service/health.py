"""The service's own status: ``GET /`` (what is here) and ``GET /health`` (store, snapshot, counts, limits)."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from fastapi import APIRouter, Request

import negdb
from negdb.service.live import row_counts
from negdb.service.state import State

router = APIRouter(tags=["service"])

ENDPOINTS = ["/health", "/models", "/checkpoints", "/neurons", "/neuron/{model}/{checkpoint}/{layer}/{index}",
             "/sets", "/sets/{name}", "/results", "/ablations", "/analyses", "/schema", "POST /sql"]
BROWSER = ["/ui", "/search", "/m/{model}/{checkpoint}/{layer}/{neuron}", "/browse"]


@router.get("/", include_in_schema=False)
def index(request: Request) -> Any:
    """What is here; a web browser (``Accept: text/html``) gets the neuron browser's home page."""
    home = getattr(request.app.state, "browser_home", None)
    if home is not None and "text/html" in request.headers.get("accept", ""):
        return home(request, request.query_params.get("model"), request.query_params.get("checkpoint"))
    return {"service": "negdb query service", "version": negdb.__version__, "docs": "/docs",
            "openapi": "/openapi.json", "endpoints": ENDPOINTS, "browser": BROWSER}


@router.get("/health", summary="Service status, store path, segment and row counts, snapshot age")
def health(state: State) -> dict[str, Any]:
    with state.snapshot() as snap:
        counts = row_counts(snap.listing, state.live.tables)
        now = time.time()
        return {
            "status": "ok", "version": negdb.__version__, "store": str(state.root if isinstance(state.root, str) else state.root.resolve()),
            "snapshot": {"taken_at": dt.datetime.fromtimestamp(snap.built_at, dt.timezone.utc).isoformat(),
                         "age_s": round(now - snap.built_at, 3),
                         "checked_s_ago": round(max(0.0, now - snap.checked_at), 3),
                         "segments": snap.segments, "refreshes": state.live.rebuilds},
            "tables": counts,
            "limits": {"max_rows": state.max_rows, "timeout_s": state.timeout_s},
        }
