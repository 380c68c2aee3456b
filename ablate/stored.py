"""Read stored evaluations and ablation experiments back: listings and a comparison rebuilt from the store."""

from __future__ import annotations

import json

import polars as pl

from negdb.ablate.compare import Comparison, Condition, compare
from negdb.errors import NotFound, StoreDamaged
from negdb.store.catalog import Catalog
from negdb.store.results import lookup


def results_frame(cat: Catalog, *, model: str | None = None, benchmark: str | None = None) -> pl.DataFrame:
    """One row per stored evaluation, newest last."""
    where, params = [], []
    if model is not None:
        where.append("r.model_id = ?")
        params.append(model)
    if benchmark is not None:
        where.append("r.benchmark = ?")
        params.append(benchmark)
    sql = ("SELECT substr(r.result_id, 1, 12) AS result, r.model_id, r.revision, r.mode, s.name AS set_name, "
           "r.n_neurons, r.benchmark, r.item_limit AS \"limit\", r.n_items, r.primary_metric AS metric, "
           "r.primary_value AS value, r.seconds, r.created_at "
           "FROM eval_results r LEFT JOIN (SELECT set_id, min(name) AS name FROM neuron_sets GROUP BY 1) s "
           "USING (set_id)" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY r.created_at")
    return cat.sql(sql, params)


def ablation_frame(cat: Catalog) -> pl.DataFrame:
    """One row per stored ablation experiment with its conditions."""
    return cat.sql("SELECT ablation_id, any_value(model_id) AS model_id, any_value(revision) AS revision, "
                   "string_agg(DISTINCT condition, ', ' ORDER BY condition) AS conditions, "
                   "max(n_neurons) FILTER (WHERE condition = 'ablation') AS n_neurons, "
                   "max(fraction) AS matched_fraction, min(created_at) AS created_at "
                   "FROM ablations GROUP BY ablation_id ORDER BY created_at")


def stored_comparison(cat: Catalog, ablation_id: str) -> Comparison:
    """The comparison of a stored ablation, rebuilt from its stored results (no model needed)."""
    rows = cat.sql("SELECT * FROM ablations WHERE ablation_id = ? ORDER BY condition, seed", [ablation_id])
    if rows.height == 0:
        raise NotFound(f"no stored ablation {ablation_id!r}: `negdb results --ablations` lists them")
    config = json.loads(rows["config_json"][0])
    order = {"baseline": 0, "ablation": 1, "random": 2, "ppl-matched": 3}
    conds: dict[str, Condition] = {}
    for row in rows.iter_rows(named=True):
        c = conds.get(row["condition"])
        if c is None:
            label = f"{config['mode']}-ablation" if row["condition"] == "ablation" else row["condition"]
            c = conds[row["condition"]] = Condition(row["condition"], label, {}, n_neurons=row["n_neurons"],
                                                    fraction=row["fraction"])
        for rid in row["result_ids"]:
            res = lookup(cat.layout, rid)
            if res is None:
                raise StoreDamaged(f"stored ablation {ablation_id} refers to a missing result {rid[:12]}")
            c.results.setdefault(res.benchmark, []).append(res)
    ordered = sorted(conds.values(), key=lambda c: order.get(c.name, 9))
    if ordered[0].name != "baseline":
        raise StoreDamaged(f"stored ablation {ablation_id} has no baseline")
    return compare(ordered[0], ordered[1:], n_boot=config.get("n_boot", 1000), seed=config.get("seed", 0))
