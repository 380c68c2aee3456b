"""Stored results read into frames for the report (no model is loaded, nothing is computed into the store).

Every catalog column the report reads is named in this module only (the ``*_COLUMNS`` maps below rename
them to the names the figures use), so a renamed column is a one-line change here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from negdb.ablate.compare import Comparison
from negdb.errors import BadArgument, NegdbError, NotFound
from negdb.query.neuron import NeuronReport
from negdb.query.sets import Keys
from negdb.store.catalog import Catalog

# catalog column -> the name the report uses, per table (the one place that knows the catalog's column names)
POS_COLUMNS = {"condition": "condition", "seed": "seed", "tag": "tag", "function_word": "function_word",
               "n_tokens": "n_tokens", "baseline_nll": "baseline_nll", "ablated_nll": "ablated_nll",
               "excess": "excess", "share": "share", "token_share": "token_share", "ci_lo": "lo", "ci_hi": "hi",
               "result_id": "result_id", "baseline_id": "baseline_id"}
LAYER_COLUMNS = {"variant": "variant", "group_index": "group", "layers": "layers", "n_neurons": "n_neurons",
                 "benchmark": "benchmark", "metric": "metric", "level": "level", "grp": "grp",
                 "baseline": "baseline", "value": "value", "delta": "delta", "ci_lo": "lo", "ci_hi": "hi",
                 "result_id": "result_id"}
TRAINING_COLUMNS = {"revision": "revision", "step": "step", "tokens_seen": "tokens_seen", "layer": "layer",
                    "quantity": "quantity", "benchmark": "benchmark", "metric": "metric", "value": "value",
                    "ci_lo": "lo", "ci_hi": "hi", "n": "n"}
NEG_SHARE_COLUMNS = {"revision": "revision", "layer": "layer", "selection": "selection", "n_neurons": "n_neurons",
                     "share_mean": "share_mean", "share_pooled": "share_pooled", "neg_mass_mean": "neg_mass",
                     "ci_lo": "lo", "ci_hi": "hi"}
PAIR_COLUMNS = {"revision": "revision", "layer": "layer", "neuron": "neuron", "rank": "rank", "x_a": "x_a",
                "x_b": "x_b", "d_in": "d_in", "d_out": "d_out", "ratio": "ratio", "signs": "signs",
                "text_a": "text_a", "text_b": "text_b", "context_a": "context_a", "context_b": "context_b"}
EVAL_COLUMNS = {"result_id": "result_id", "benchmark": "benchmark", "n_items": "n_items",
                "item_limit": "item_limit", "sample_seed": "sample_seed", "scoring_json": "scoring_json",
                "revision": "revision", "mode": "mode"}

ANALYSIS_TABLES: dict[str, dict[str, dict[str, str]]] = {
    "pos": {"pos_surprisal": POS_COLUMNS},
    "layers": {"layer_effects": LAYER_COLUMNS},
    "training": {"training_dynamics": TRAINING_COLUMNS},
    "pairs": {"neg_share": NEG_SHARE_COLUMNS, "diff_pairs": PAIR_COLUMNS},
}
"""Analysis kind -> its detail tables and their columns."""
SWEEP_KIND = "sweep"
"""``negdb sweep``'s analyses: drawn by :mod:`negdb.report.sweep_figures` from ``sweep_summary``."""
REPORTED_KINDS = (*ANALYSIS_TABLES, SWEEP_KIND)
"""Every analysis kind the report shows, in page order."""

TOP_FRACTION = 0.01
"""The paper's Wasserstein neurons: the top 1% of each layer by w_dist."""


def _select(table: str, columns: dict[str, str]) -> str:
    """The select list renaming ``columns`` of ``table``; a column the table does not declare reads as NULL (so
    a report still renders when an analysis table drops or renames a column)."""
    from negdb.store.tables import all_tables

    have = {c for t in all_tables() if t.name == table for c, _, _ in t.columns}
    return ", ".join(f'"{src}" AS "{dst}"' if src in have else f'NULL AS "{dst}"' for src, dst in columns.items())


@dataclass(frozen=True)
class ModelFacts:
    """A model's ``models`` row (None where unknown) and its stored checkpoints."""

    model_id: str
    family: str | None
    n_layers: int | None
    d_mlp: int | None
    activation: str | None
    checkpoints: pl.DataFrame
    """revision, step, tokens_seen, commit; ordered by step."""


@dataclass(frozen=True)
class WdistData:
    """The w_dist of every neuron of one checkpoint, with per-layer quantiles and the top-1% threshold."""

    keys: Keys
    values: pl.DataFrame
    """layer, neuron, w_dist."""
    per_layer: pl.DataFrame
    """layer, n, k_top, mean, p50, p90, p99, max, threshold (the k_top-th largest w_dist)."""
    slice: dict[str, Any]
    spec: dict[str, Any]


@dataclass(frozen=True)
class AblationData:
    """A stored ablation experiment and its comparison rebuilt from the stored items."""

    ablation_id: str
    model_id: str
    revision: str
    config: dict[str, Any]
    comparison: Comparison
    rows: pl.DataFrame
    """benchmark, metric, condition, value, baseline, delta, lo, hi, n, seeds (one row per comparison row)."""
    conditions: list[dict[str, Any]]
    """name, label, n_neurons, fraction, note per condition (baseline first)."""
    evals: pl.DataFrame
    """The baseline's evaluations (EVAL_COLUMNS): what was scored and how."""


@dataclass(frozen=True)
class AnalysisData:
    """A stored analysis: its ``analyses`` row and its detail tables (renamed by ``ANALYSIS_TABLES``)."""

    analysis_id: str
    kind: str
    model_id: str
    revision: str | None
    config: dict[str, Any]
    summary: dict[str, Any]
    created_at: Any
    tables: dict[str, pl.DataFrame] = field(default_factory=dict)
    evals: pl.DataFrame = field(default_factory=pl.DataFrame)
    """The stored evaluations it read (EVAL_COLUMNS), where its rows or summary name them."""


# ------------------------------------------------------------------------------------------------- models


def known_models(cat: Catalog) -> list[str]:
    """Every model with something stored: statistics (models), ablations or analyses; sorted."""
    df = cat.sql("SELECT model_id FROM models UNION SELECT model_id FROM ablations "
                 "UNION SELECT model_id FROM analyses")
    return sorted(m for m in df["model_id"].to_list() if m is not None)


def resolve_model(cat: Catalog, name: str, known: list[str]) -> str:
    """The stored key of ``name`` (a stored key, or anything ``--model`` accepts that resolves to one)."""
    if name in known:
        return name
    from negdb.models.registry import resolve

    try:
        model_id: str | None = resolve(name).model_id
    except (NegdbError, OSError):
        model_id = None
    if model_id in known:
        return str(model_id)
    shown = ", ".join(known[:8]) + (f", ... ({len(known)} in all)" if len(known) > 8 else "")
    raise NotFound(f"nothing stored for model '{name}' in {cat.layout.location}: stored models are {shown}")


def model_facts(cat: Catalog, model_id: str) -> ModelFacts:
    rows = cat.sql("SELECT family, n_layers, d_mlp, activation FROM models WHERE model_id = ? LIMIT 1",
                   [model_id]).to_dicts()
    row = rows[0] if rows else {}
    ck = cat.sql("SELECT DISTINCT revision, step, tokens_seen, commit FROM checkpoints WHERE model_id = ? "
                 "ORDER BY step NULLS LAST, revision", [model_id])
    return ModelFacts(model_id, row.get("family"), row.get("n_layers"), row.get("d_mlp"), row.get("activation"), ck)


# ------------------------------------------------------------------------------------------------- statistics


def stats_revision(cat: Catalog, model_id: str, preferred: str | None = None) -> str | None:
    """The checkpoint whose statistics the report shows: ``preferred`` when it has statistics, else the one with
    the largest training step (the latest ingested when no step is known); None when the model has none."""
    df = cat.sql("SELECT s.revision, any_value(c.step) AS step FROM (SELECT DISTINCT revision FROM neuron_stats "
                 "WHERE model_id = ?) s LEFT JOIN checkpoints c ON c.model_id = ? AND c.revision = s.revision "
                 "GROUP BY s.revision ORDER BY step DESC NULLS LAST, s.revision", [model_id, model_id])
    revisions = df["revision"].to_list()
    if not revisions:
        return None
    if preferred is not None and preferred in revisions:
        return preferred
    if df["step"].null_count() == df.height and len(revisions) > 1:
        from negdb.query.sets import resolve_keys

        return resolve_keys(cat, model_id).revision
    return str(revisions[0])


def wdist(cat: Catalog, keys: Keys) -> WdistData:
    """w_dist of every neuron under ``keys``, per-layer quantiles and the top-1% threshold per layer."""
    values = cat.sql("SELECT layer, neuron, w_dist FROM neuron_stats WHERE model_id = ? AND revision = ? AND "
                     "slice_id = ? AND spec_id = ? ORDER BY layer, neuron", list(keys))
    return WdistData(keys, values, layer_summary(values), *slice_info(cat, keys))


def layer_summary(values: pl.DataFrame, fraction: float = TOP_FRACTION) -> pl.DataFrame:
    """Per layer of (layer, neuron, w_dist) rows: neurons n, k_top = max(1, round(fraction * n)), the mean and
    the 50/90/99th percentiles (linear interpolation) and max of the finite w_dist, and the threshold: the
    k_top-th largest finite w_dist."""
    from negdb.query.sets import k_for

    rows = []
    for (layer,), group in values.group_by("layer", maintain_order=True):
        w = group["w_dist"].drop_nulls().drop_nans().to_numpy().astype(np.float64)
        n = int(group.height)
        k = k_for("fraction", fraction, n)
        top = np.sort(w)[::-1]
        rows.append({"layer": int(layer), "n": n, "k_top": k,
                     "mean": float(w.mean()) if w.size else None,
                     "p50": float(np.quantile(w, 0.5)) if w.size else None,
                     "p90": float(np.quantile(w, 0.9)) if w.size else None,
                     "p99": float(np.quantile(w, 0.99)) if w.size else None,
                     "max": float(w.max()) if w.size else None,
                     "threshold": float(top[min(k, top.size) - 1]) if top.size else None})
    return pl.DataFrame(rows, schema={"layer": pl.Int64, "n": pl.Int64, "k_top": pl.Int64, "mean": pl.Float64,
                                      "p50": pl.Float64, "p90": pl.Float64, "p99": pl.Float64, "max": pl.Float64,
                                      "threshold": pl.Float64}).sort("layer")


def slice_info(cat: Catalog, keys: Keys) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``slices`` and ``stat_specs`` rows of ``keys`` (empty dicts where missing)."""
    sl = cat.sql("SELECT dataset, tokenizer, seq_len, n_windows, n_tokens, token_sha256 FROM slices "
                 "WHERE slice_id = ? LIMIT 1", [keys.slice_id]).to_dicts()
    sp = cat.sql("SELECT w_reference, w_seed, md_pairs, md_seed, value_dtype FROM stat_specs WHERE spec_id = ? "
                 "LIMIT 1", [keys.spec_id]).to_dicts()
    return (sl[0] if sl else {}), (sp[0] if sp else {})


def top_neuron(values: pl.DataFrame) -> tuple[int, int]:
    """(layer, neuron) of the largest w_dist (ties: lowest layer, then lowest neuron)."""
    valid = values.filter(pl.col("w_dist").is_not_null() & pl.col("w_dist").is_not_nan())
    if valid.height == 0:
        raise NotFound("no neuron has a finite w_dist")
    row = valid.sort(["w_dist", "layer", "neuron"], descending=[True, False, False]).row(0, named=True)
    return int(row["layer"]), int(row["neuron"])


def neuron(cat: Catalog, keys: Keys, layer: int, index: int, bins: int) -> NeuronReport:
    """The stored histogram of one neuron against its fitted Gaussian (no token contexts: no tokenizer)."""
    from negdb.query.neuron import report

    return report(cat, keys.model_id, keys.revision, layer, index, bins=bins, contexts=0,
                  slice_id=keys.slice_id, spec_id=keys.spec_id)


# ------------------------------------------------------------------------------------------------- ablations


def latest_ablation(cat: Catalog, model_id: str) -> str | None:
    """The newest of the model's ablations that evaluated the most benchmarks (an `analyze pos` run records a
    perplexity-only ablation, which must not hide the full comparison)."""
    rows = cat.sql("SELECT ablation_id FROM ablations WHERE model_id = ? GROUP BY ablation_id "
                   "ORDER BY max(len(result_ids)) DESC, max(created_at) DESC, ablation_id LIMIT 1",
                   [model_id])["ablation_id"].to_list()
    return rows[0] if rows else None


def ablation_model(cat: Catalog, ablation_id: str) -> str:
    rows = cat.sql("SELECT any_value(model_id) AS m FROM ablations WHERE ablation_id = ?", [ablation_id])
    if rows.height == 0 or rows["m"][0] is None:
        raise NotFound(f"no stored ablation {ablation_id!r}: `negdb results --ablations` lists them")
    return str(rows["m"][0])


def ablation(cat: Catalog, ablation_id: str) -> AblationData:
    """The stored ablation, its comparison rebuilt from the store (paired bootstrap of the stored items)."""
    from negdb.ablate.stored import stored_comparison

    cmp = stored_comparison(cat, ablation_id)
    head = cat.sql("SELECT any_value(model_id) AS model_id, any_value(revision) AS revision, "
                   "any_value(config_json) AS config_json FROM ablations WHERE ablation_id = ?",
                   [ablation_id]).row(0, named=True)
    rows = pl.DataFrame(cmp.to_records(), schema={"benchmark": pl.String, "metric": pl.String,
                                                  "condition": pl.String, "value": pl.Float64,
                                                  "baseline": pl.Float64, "delta": pl.Float64, "lo": pl.Float64,
                                                  "hi": pl.Float64, "n": pl.Int64, "seeds": pl.Int64})
    conds = [{"name": c.name, "label": c.label, "n_neurons": c.n_neurons, "fraction": c.fraction, "note": c.note}
             for c in cmp.conditions]
    base_ids = [r.result_id for res in cmp.conditions[0].results.values() for r in res]
    return AblationData(ablation_id, head["model_id"], head["revision"], json.loads(head["config_json"] or "{}"),
                        cmp, rows, conds, evals(cat, base_ids))


def evals(cat: Catalog, result_ids: list[str]) -> pl.DataFrame:
    """The ``eval_results`` rows of ``result_ids`` (EVAL_COLUMNS), in benchmark order."""
    ids = sorted({r for r in result_ids if r})
    return cat.sql(f"SELECT {_select('eval_results', EVAL_COLUMNS)} FROM eval_results "
                   "WHERE list_contains(?, result_id) ORDER BY benchmark, mode, result_id", [ids])


GRAMMAR_AXIS = (("grammar", "mean"), ("blimp", "acc_sum"), ("tse", "acc_mean"))
"""The grammar axis of the double dissociation: the first of these comparison rows that exists."""


def suite_axis(rows: pl.DataFrame) -> list[tuple[str, str]]:
    """The suite axis: the ``suite`` summary row, else the primary metric of the one suite benchmark compared."""
    from negdb.evals import registry

    suite = registry.aliases().get("suite", [])
    have = set(zip(rows["benchmark"].to_list(), rows["metric"].to_list()))
    single = [(b, registry.get(b).metrics[0]) for b in suite if (b, registry.get(b).metrics[0]) in have]
    return [("suite", "mean"), *single[:1]]


def dissociation(rows: pl.DataFrame) -> pl.DataFrame:
    """Per condition: grammar delta (x) and suite delta (y) with their CIs, from the comparison rows.

    The axes are the summary rows ``grammar`` and ``suite`` when the comparison has them; with one grammar
    benchmark (or one suite benchmark) its primary metric stands in; the picked rows are named in x_row/y_row.
    """
    out = []
    for cond in dict.fromkeys(rows["condition"].to_list()):
        sub = rows.filter(pl.col("condition") == cond)
        have = {(r["benchmark"], r["metric"]): r for r in sub.iter_rows(named=True)}
        x = next((have[k] for k in GRAMMAR_AXIS if k in have), None)
        y = next((have[k] for k in suite_axis(rows) if k in have), None)
        if x is None or y is None:
            continue
        out.append({"condition": cond, "x_row": f"{x['benchmark']} {x['metric']}", "x": x["delta"],
                    "x_lo": x["lo"], "x_hi": x["hi"], "y_row": f"{y['benchmark']} {y['metric']}", "y": y["delta"],
                    "y_lo": y["lo"], "y_hi": y["hi"]})
    return pl.DataFrame(out, schema={"condition": pl.String, "x_row": pl.String, "x": pl.Float64,
                                     "x_lo": pl.Float64, "x_hi": pl.Float64, "y_row": pl.String, "y": pl.Float64,
                                     "y_lo": pl.Float64, "y_hi": pl.Float64})


# ------------------------------------------------------------------------------------------------- analyses


def analyses_of(cat: Catalog, model_id: str, kind: str) -> list[str]:
    """The stored analyses of ``kind`` of ``model_id``, newest first."""
    return cat.sql("SELECT analysis_id FROM analyses WHERE model_id = ? AND kind = ? "
                   "ORDER BY created_at DESC, analysis_id", [model_id, kind])["analysis_id"].to_list()


def latest_analysis(cat: Catalog, model_id: str, kind: str) -> str | None:
    rows = analyses_of(cat, model_id, kind)
    return rows[0] if rows else None


def analysis_head(cat: Catalog, analysis_id: str) -> dict[str, Any]:
    rows = cat.sql("SELECT * FROM analyses WHERE analysis_id = ? LIMIT 1", [analysis_id]).to_dicts()
    if not rows:
        raise NotFound(f"no stored analysis {analysis_id!r}: "
                         "`negdb sql \"SELECT analysis_id, kind, model_id FROM analyses\"` lists them")
    if rows[0]["kind"] not in REPORTED_KINDS:
        raise BadArgument(f"analysis {analysis_id} is of kind {rows[0]['kind']!r}, which the report does not show "
                         f"(it shows {', '.join(REPORTED_KINDS)})")
    return rows[0]


def _result_ids(obj: Any) -> list[str]:
    """Every string under a key naming result ids (``result_id``, ``result_ids``, ``baseline_id``, ...)."""
    out: list[str] = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if ("result" in k or k == "baseline_id") and isinstance(v, str):
                out.append(v)
            elif ("result" in k) and isinstance(v, list):
                out.extend(x for x in v if isinstance(x, str))
            else:
                out.extend(_result_ids(v))
    elif isinstance(obj, list):
        for v in obj:
            out.extend(_result_ids(v))
    return out


def analysis(cat: Catalog, analysis_id: str) -> AnalysisData:
    """A stored analysis with its detail tables and the evaluations they name."""
    head = analysis_head(cat, analysis_id)
    tables = {}
    ids: list[str] = []
    for table, columns in ANALYSIS_TABLES.get(head["kind"], {}).items():
        df = cat.sql(f"SELECT {_select(table, columns)} FROM {table} WHERE analysis_id = ?", [analysis_id])
        tables[table] = df
        for col in ("result_id", "baseline_id"):
            if col in df.columns:
                ids.extend(x for x in df[col].to_list() if x)
    summary = json.loads(head["summary_json"] or "{}")
    ids.extend(_result_ids(summary))
    return AnalysisData(analysis_id, head["kind"], head["model_id"], head["revision"],
                        json.loads(head["config_json"] or "{}"), summary, head["created_at"], tables,
                        evals(cat, ids))


def training_x(df: pl.DataFrame) -> tuple[pl.DataFrame, str]:
    """``df`` with an ``x`` column for training curves: the step, else tokens seen, else the checkpoint's order."""
    for col, label in (("step", "training step"), ("tokens_seen", "tokens seen")):
        if df.height and df[col].null_count() == 0:
            return df.with_columns(pl.col(col).cast(pl.Float64).alias("x")), label
    order = {r: i for i, r in enumerate(dict.fromkeys(df["revision"].to_list()))}
    return df.with_columns(pl.col("revision").replace_strict(order, return_dtype=pl.Float64).alias("x")), \
        "checkpoint (stored order)"


def training_series(df: pl.DataFrame) -> pl.DataFrame:
    """One value per (series, checkpoint), series = the quantity, with `` benchmark metric`` for ablation effects:
    the all-layer row (layer NULL) where stored, else the mean over layers (its CI then dropped). Columns x,
    revision, quantity, benchmark, metric, series, value, lo, hi; sorted by series and x."""
    with_x, _ = training_x(df)
    with_x = with_x.with_columns(
        pl.when(pl.col("benchmark").is_null()).then(pl.col("quantity"))
        .otherwise(pl.format("{} {} {}", pl.col("quantity"), pl.col("benchmark"), pl.col("metric").fill_null("")))
        .str.strip_chars().alias("series"))
    cols = ["x", "revision", "quantity", "benchmark", "metric", "series", "value", "lo", "hi"]
    overall = with_x.filter(pl.col("layer").is_null()).select(cols)
    have = set(overall["series"].unique().to_list())
    rest = with_x.filter(pl.col("layer").is_not_null() & ~pl.col("series").is_in(list(have)))
    mean = (rest.group_by("x", "revision", "quantity", "benchmark", "metric", "series")
            .agg(pl.col("value").mean(), pl.lit(None, dtype=pl.Float64).alias("lo"),
                 pl.lit(None, dtype=pl.Float64).alias("hi")))
    both = pl.concat([overall.cast({"lo": pl.Float64, "hi": pl.Float64, "value": pl.Float64}),
                      mean.select(cols).cast({"value": pl.Float64})])
    return both.sort("series", "x")


TRAINING_EFFECTS = (("wikitext2", "ppl"), ("blimp", "acc_sum"), ("tse", "acc_mean"))
"""The ablation effects the training figure follows (the issue's BLiMP, TSE and perplexity), those stored."""


def training_effects(series: pl.DataFrame) -> list[tuple[str, str]]:
    """(benchmark, metric) of each ablation effect shown against the step: those of :data:`TRAINING_EFFECTS` that
    are stored, else the first stored effect; empty when no effect is stored."""
    eff = series.filter(pl.col("quantity").str.starts_with("delta_") & pl.col("benchmark").is_not_null())
    have = list(dict.fromkeys(zip(eff["benchmark"].to_list(), eff["metric"].to_list())))
    return [k for k in TRAINING_EFFECTS if k in have] or have[:1]
