"""What the store holds about models and their neurons: ``/models``, ``/checkpoints``, ``/neurons`` (the view,
filtered), ``/neuron/...`` (one neuron's report) and ``/sets`` (saved neuron sets)."""

from __future__ import annotations

import contextlib
import json
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from negdb.errors import BadArgument, BadQuery, NegdbError, NotFound
from negdb.service.encode import ARROW_STREAM, tabular
from negdb.service.limits import cancel_of
from negdb.service.state import ServiceState, State

router = APIRouter(tags=["neurons"])


@router.get("/models", summary="Models in the store, with their checkpoint counts")
def models(state: State) -> dict[str, Any]:
    with state.snapshot() as snap:
        rows = state.records(snap, "SELECT m.*, coalesce(c.n, 0) AS n_checkpoints FROM models m LEFT JOIN "
                                   "(SELECT model_id, count(DISTINCT revision) AS n FROM checkpoints GROUP BY 1) c "
                                   "USING (model_id) ORDER BY model_id")
    return {"models": rows}


@router.get("/checkpoints", summary="Checkpoints (model, revision, step, tokens seen), in training order")
def checkpoints(state: State, model: str | None = Query(None, description="only this model (a model_id of "
                                                                          "GET /models)")) -> dict[str, Any]:
    with state.snapshot() as snap:
        if model is not None:
            state.check_model(snap, model)
        rows = state.records(snap, "SELECT * FROM checkpoints WHERE (? IS NULL OR model_id = ?) "
                                   "ORDER BY model_id, step NULLS LAST, revision", [model, model])
    return {"checkpoints": rows}


@router.get("/neurons", summary="Per-neuron statistics (the neurons view), filtered by a boolean expression",
            responses={200: {"content": {"application/json": {}, ARROW_STREAM: {}}}})
def neurons(request: Request, state: State,
            model: str | None = Query(None, description="model_id (GET /models)"),
            checkpoint: str | None = Query(None, description="revision, e.g. step1000 or final"),
            where: str | None = Query(None, description="boolean expression over the view's columns, e.g. "
                                      "\"w_dist > 0.9 AND layer < 4\""),
            limit: int | None = Query(None, description="at most this many rows (default and maximum: the "
                                      "server's limit)"),
            format: str | None = Query(None, description="json or arrow (overrides the Accept header)"),
            ) -> Response:
    """Rows of `neurons` in (model_id, revision, layer, neuron) order; `truncated` says whether more match."""
    n = state.row_limit(limit, "limit")
    keys = {k: v for k, v in (("model_id", model), ("revision", checkpoint)) if v is not None}
    params = list(keys.values())
    # the keys filter an inner query, so no expression text can widen them
    sql_text = "SELECT * FROM neurons" + (" WHERE " + " AND ".join(f"{k} = ?" for k in keys) if keys else "")
    if where is not None:
        from negdb.store.safety import check_where

        if not where.strip():
            raise BadQuery("where is empty: give a boolean expression like w_dist > 0.9, or leave it out")
        try:
            checked = check_where(where)
        except NegdbError as err:  # its messages name the CLI option
            raise type(err)(str(err).replace("the --where expression", "where")) from None
        sql_text = f"SELECT * FROM ({sql_text}) AS n WHERE ({checked})"
    sql_text += " ORDER BY model_id, revision, layer, neuron"
    with state.snapshot() as snap:
        if model is not None:
            state.check_model(snap, model)
        if checkpoint is not None:
            state.check_checkpoint(snap, model, checkpoint)
        table, truncated, elapsed = state.run(snap, sql_text, params, limit=n, cancel=cancel_of(request))
    return tabular(request, format, table, truncated, elapsed)


def neuron_report(state: ServiceState, model: str, checkpoint: str, layer: int, index: int, bins: int,
                  contexts: int, window: int) -> dict[str, Any]:
    """``negdb neuron``'s report of one neuron, after checking that the store has it (404 otherwise)."""
    with state.snapshot() as snap:
        state.check_model(snap, model)
        state.check_checkpoint(snap, model, checkpoint)
        layers = snap.remember(f"layers {model!r} {checkpoint!r}", lambda: {
            r["layer"]: r["n"] for r in state.records(
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


REPORT_DOC = ("Statistics, histogram (with the fitted Gaussian's expected counts) and token contexts of one "
              "neuron (`negdb neuron`).")


@router.get("/neuron", summary="One neuron's report (model etc. as query parameters)", description=REPORT_DOC)
def neuron_by_query(state: State, model: str = Query(..., description="model_id (may contain '/')"),
                    checkpoint: str = Query(..., description="revision"),
                    layer: int = Query(..., ge=0), index: int = Query(..., ge=0),
                    bins: int = Query(40, ge=1, le=1000), contexts: int = Query(5, ge=0, le=100),
                    window: int = Query(8, ge=0, le=256)) -> dict[str, Any]:
    return neuron_report(state, model, checkpoint, layer, index, bins, contexts, window)


@router.get("/neuron/{model_path:path}", summary="One neuron's report: /neuron/{model}/{checkpoint}/{layer}/{index}",
            description=REPORT_DOC + " The model id may contain '/' (hub ids, local paths: "
            "/neuron/EleutherAI/pythia-70m/step1000/3/17, /neuron//abs/path/run/final/0/5) or be percent-encoded; "
            "the last three path segments are always checkpoint, layer and neuron index.")
def neuron_by_path(state: State, model_path: str, bins: int = Query(40, ge=1, le=1000),
                   contexts: int = Query(5, ge=0, le=100), window: int = Query(8, ge=0, le=256)) -> dict[str, Any]:
    parts = model_path.rsplit("/", 3)
    if len(parts) != 4 or not parts[0] or not parts[1]:
        raise BadArgument("use /neuron/{model}/{checkpoint}/{layer}/{index}, e.g. /neuron/pythia-70m/step1000/3/17")
    model, checkpoint, layer_s, index_s = parts
    try:
        layer, index = int(layer_s), int(index_s)
    except ValueError:
        raise BadArgument(f"layer and index must be whole numbers (got '{layer_s}' and '{index_s}')") from None
    if layer < 0 or index < 0:
        raise BadArgument("layer and index must be at least 0")
    return neuron_report(state, model, checkpoint, layer, index, bins, contexts, window)


@router.get("/sets", summary="Saved neuron sets (without members)")
def sets_list(state: State) -> dict[str, Any]:
    from negdb.query import sets

    with state.snapshot() as snap, snap.lock:
        rows = sets.list_sets(snap.catalog).to_dicts()
    for r in rows:
        for key, parsed in (("counts_json", "counts"), ("expression", "expression")):
            if isinstance(r.get(key), str):
                with contextlib.suppress(ValueError):
                    r[parsed] = json.loads(r.pop(key))
    return {"sets": rows}


@router.get("/sets/{name}", summary="One saved neuron set with its members [[layer, neuron], ...]")
def sets_get(state: State, name: str) -> dict[str, Any]:
    from negdb.query import sets

    with state.snapshot() as snap, snap.lock:
        names = set(sets.list_sets(snap.catalog)["name"].to_list())
        if name not in names:
            raise NotFound(f"no neuron set named '{name}' (GET /sets lists them)")
        found = sets.get(snap.catalog, name)
    return found.to_dict()
