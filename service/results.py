"""Stored results: evaluations (``/results``), ablation experiments (``/ablations``), analyses and sweeps
(``/analyses``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query

from negdb.errors import NotFound
from negdb.query.encode import table_records
from negdb.service.state import State

router = APIRouter(tags=["results"])


@router.get("/results", summary="Stored evaluations (eval_results), newest last")
def results(state: State, model: str | None = Query(None, description="only this model_id"),
            benchmark: str | None = Query(None, description="only this benchmark (blimp, tse, wikitext2, ...)"),
            limit: int | None = Query(None, description="at most this many rows")) -> dict[str, Any]:
    n = state.row_limit(limit, "limit")
    with state.snapshot() as snap:
        table, truncated, _ = state.run(snap, "SELECT * EXCLUDE (versions_json) FROM eval_results WHERE (? IS NULL "
                                              "OR model_id = ?) AND (? IS NULL OR benchmark = ?) ORDER BY created_at",
                                        [model, model, benchmark, benchmark], limit=n)
    return {"results": table_records(table), "truncated": truncated}


@router.get("/results/{result_id}/metrics", summary="Every metric of one stored evaluation, overall and per group")
def result_metrics(state: State, result_id: str) -> dict[str, Any]:
    with state.snapshot() as snap:
        rows = state.records(snap, "SELECT * FROM eval_metrics WHERE result_id = ? OR result_id LIKE ? || '%' "
                                   "ORDER BY metric, level, grp NULLS FIRST", [result_id, result_id])
    if not rows:
        raise NotFound(f"no stored evaluation {result_id!r}: GET /results lists them")
    return {"metrics": rows}


@router.get("/ablations", summary="Stored ablation experiments, one row per condition and seed")
def ablations(state: State, model: str | None = Query(None, description="only this model_id")) -> dict[str, Any]:
    with state.snapshot() as snap:
        rows = state.records(snap, "SELECT * EXCLUDE (config_json) FROM ablations WHERE (? IS NULL OR model_id = ?) "
                                   "ORDER BY created_at, ablation_id, condition, seed", [model, model])
    return {"ablations": rows}


@router.get("/analyses", summary="Stored analyses (negdb analyze pos | layers | training | pairs; negdb sweep), "
                                 "newest last")
def analyses(state: State, model: str | None = Query(None, description="only this model_id"),
             kind: str | None = Query(None, description="only this kind: pos, layers, training, pairs or sweep")
             ) -> dict[str, Any]:
    with state.snapshot() as snap:
        rows = state.records(snap, "SELECT * FROM analyses WHERE (? IS NULL OR model_id = ?) AND (? IS NULL OR "
                                   "kind = ?) ORDER BY created_at, analysis_id", [model, model, kind, kind])
    return {"analyses": rows}


@router.get("/analyses/{analysis_id}", summary="One stored analysis with the rows of its result tables")
def analysis(state: State, analysis_id: str) -> dict[str, Any]:
    from negdb.store.tables import ANALYSIS_TABLES

    with state.snapshot() as snap:
        head = state.records(snap, "SELECT * FROM analyses WHERE analysis_id = ?", [analysis_id])
        if not head:
            raise NotFound(f"no stored analysis {analysis_id!r}: GET /analyses lists them")
        tables = {t.name: state.records(snap, f"SELECT * EXCLUDE (analysis_id) FROM {t.name} WHERE analysis_id = ?",
                                        [analysis_id]) for t in ANALYSIS_TABLES}
    return {"analysis": head[0], "tables": {k: v for k, v in tables.items() if v}}
