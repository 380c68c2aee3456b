"""The browser's reads: one :class:`Panel` per page panel, each with the SQL that reproduces it.

Every query runs through :meth:`negdb.store.catalog.Catalog.query` (the user-SQL path with its statement check,
hardened connection, row and time limits), so a page can never do what ``POST /sql`` could not, and each panel
can link to its own SQL (parameters written in) on the SQL page. Statements are small and keyed by model,
checkpoint and layer so DuckDB prunes ``neuron_stats`` to the files and row groups a page needs.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from negdb.errors import BadArgument, NegdbError

STAT_COLUMNS = ("w_dist", "w_dist_neg", "w_dist_pos", "w_pct", "mean", "std", "skew", "kurtosis", "frac_neg",
                "md")
"""Columns the search page shows next to the keys (those the view has) when it searches one checkpoint."""
SEARCH_KEYS = ("model_id", "revision", "layer", "neuron")
WIDE_STAT_COLUMNS = ("w_dist",)
"""Columns shown next to the keys, the sort column and the filter's columns when the search spans every checkpoint:
there each shown column is one more column decoded from every checkpoint's segment, which is what the page costs
(on the 20-million-row synthetic catalog, `frac_neg > 0.9` sorted by md: 294 ms with w_pct shown too, 234 ms
without it, in process); a neuron's page shows every statistic."""


def referenced_columns(expr: str, columns: Sequence[str]) -> list[str]:
    """The columns of ``columns`` that ``expr`` names, in the order of ``columns`` (DuckDB's tokenizer)."""
    import duckdb

    tokens = duckdb.tokenize(expr)
    ends = [start for start, _ in tokens[1:]] + [len(expr)]
    named = {expr[start:end].strip().strip('"').lower()
             for (start, kind), end in zip(tokens, ends) if kind == duckdb.token_type.identifier}
    return [c for c in columns if c.lower() in named]


@dataclass
class SearchPlan:
    """The statements of one search page: its rows (a top-N) and, separately, the count of all matches.

    ``view`` is ``neuron_stats`` when the filter and the sort use only its columns (the ``neurons`` view adds a
    checkpoint's step, a slice's dataset and the spec's reference by joins that DuckDB runs on every row before the
    top-N, and that keep it from pruning row groups by the sort column), else ``neurons``; either gives the same
    rows. ``shown``: the columns read, so the keys and the sort's top-N decide which column chunks are decoded.
    """

    view: str
    shown: list[str]
    conditions: str
    params: list[Any]
    order: str
    desc: bool

    def rows_sql(self, per: int, offset: int) -> str:
        cols = ", ".join('"' + c + '"' for c in self.shown)
        return (f"SELECT {cols} FROM {self.view} WHERE {self.conditions} ORDER BY \"{self.order}\" "
                f"{'DESC' if self.desc else 'ASC'} NULLS LAST, revision, layer, neuron LIMIT {per + 1} OFFSET {offset}")

    def count_sql(self) -> str:
        return f"SELECT count(*) AS n FROM {self.view} WHERE {self.conditions}"


def literal(v: Any) -> str:
    """``v`` as a SQL literal (for showing a statement with its parameters written in)."""
    if v is None:
        return "NULL"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    return "'" + str(v).replace("'", "''") + "'"


def inline(sql: str, params: list[Any] | None) -> str:
    """``sql`` with each ``?`` replaced by the next parameter as a literal (the statements here quote no ``?``)."""
    if not params:
        return sql
    parts = sql.split("?")
    if len(parts) != len(params) + 1:  # pragma: no cover - a statement of this module with a wrong count
        raise NegdbError("internal: parameter count does not match the statement")
    out = [parts[0]]
    for p, rest in zip(params, parts[1:]):
        out += [literal(p), rest]
    return "".join(out)


def clean(v: Any) -> Any:
    """A JSON-safe value: NaN/inf -> None, times ISO strings, containers cleaned."""
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, (dt.datetime, dt.date)):
        return v.isoformat(timespec="seconds") if isinstance(v, dt.datetime) else v.isoformat()
    if isinstance(v, dict):
        return {k: clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [clean(x) for x in v]
    return v


def _binds(where: str, view: str) -> bool:
    """Whether the (checked) filter ``where`` binds over ``view``'s columns alone."""
    from negdb.store.safety import check_where

    try:
        check_where(where, view=view)
    except NegdbError:
        return False
    return True


@dataclass
class Panel:
    """Rows of one panel and the statement (with its parameters written in) that reads them."""

    rows: list[dict[str, Any]]
    sql: str
    columns: list[str]
    truncated: bool = False
    ms: float = 0.0


class Reader:
    """Runs the browser's statements on one snapshot with the service's limits."""

    def __init__(self, snap: Any, *, timeout_s: float, max_rows: int, slots: Any = None) -> None:
        self.snap, self.timeout_s, self.max_rows, self.slots = snap, timeout_s, max_rows, slots
        self.db_ms = 0.0
        """Milliseconds spent in queries (the page's ``Server-Timing: db``)."""

    @property
    def catalog(self) -> Any:
        return self.snap.catalog

    def panel(self, sql: str, params: list[Any] | None = None, *, limit: int | None = None) -> Panel:
        import time

        start = time.perf_counter()
        if self.slots is not None:
            with self.slots:
                res = self.catalog.query(sql, params, max_rows=limit or self.max_rows, timeout_s=self.timeout_s)
        else:
            res = self.catalog.query(sql, params, max_rows=limit or self.max_rows, timeout_s=self.timeout_s)
        table: pa.Table = res.table
        rows = [clean(r) for r in table.to_pylist()]
        ms = (time.perf_counter() - start) * 1000
        self.db_ms += ms
        return Panel(rows, inline(sql, params), table.column_names, bool(res.truncated), ms)

    def memo(self, key: str, compute):  # type: ignore[no-untyped-def]
        return self.snap.remember("browser " + key, compute)

    # -------------------------------------------------------------------------------------- store-wide

    def models(self) -> Panel:
        return self.memo("models", lambda: self.panel(
            "SELECT m.model_id, m.family, m.n_layers, m.d_mlp, m.activation, count(c.revision) AS checkpoints, "
            "max(c.step) AS last_step FROM models m LEFT JOIN checkpoints c USING (model_id) GROUP BY ALL "
            "ORDER BY m.model_id"))

    def checkpoints(self, model: str) -> Panel:
        return self.memo(f"checkpoints {model!r}", lambda: self.panel(
            "SELECT revision, step, tokens_seen FROM checkpoints WHERE model_id = ? "
            "ORDER BY step NULLS LAST, revision", [model]))

    def stat_checkpoints(self, model: str) -> list[str]:
        """Revisions of ``model`` that have statistics (from the runs that stored them), in training order."""
        def compute() -> list[str]:
            p = self.panel("SELECT DISTINCT r.revision, c.step FROM runs r LEFT JOIN checkpoints c "
                           "USING (model_id, revision) WHERE r.model_id = ? AND r.status = 'done' "
                           "ORDER BY c.step NULLS LAST, r.revision", [model])
            return [r["revision"] for r in p.rows]
        return self.memo(f"stat revisions {model!r}", compute)

    def columns(self, view: str = "neurons") -> list[tuple[str, str]]:
        """(column, type) of a view (``neurons`` or a table's)."""
        def compute() -> list[tuple[str, str]]:
            p = self.panel(f"DESCRIBE SELECT * FROM {view}")
            return [(r["column_name"], r["column_type"]) for r in p.rows]
        return self.memo("columns" if view == "neurons" else f"columns {view}", compute)

    def plan_search(self, model: str, checkpoint: str | None, where: str | None, order: str,
                    desc: bool) -> SearchPlan:
        """The search page's statements for ``where`` (checked: :func:`negdb.store.safety.check_where`) over
        ``model``'s neurons at ``checkpoint`` (None: every checkpoint), sorted by ``order``."""
        from negdb.store.safety import check_where

        names = [c for c, _ in self.columns()]
        if order not in names:
            raise BadArgument(f"cannot sort by {order!r}: choose a column of neurons ({', '.join(names)})")
        conds, params = ["model_id = ?"], [model]
        if checkpoint:
            conds.append("revision = ?")
            params.append(checkpoint)
        used = [order]
        if where:
            try:
                where = check_where(where)
            except NegdbError as err:
                raise type(err)(str(err).replace("the --where expression", "the filter")) from None
            conds.append(f"({where})")
            used += referenced_columns(where, names)
        own = {c for c, _ in self.columns("neuron_stats")}
        view = "neurons"
        if order in own and (not where or _binds(where, "neuron_stats")):
            view = "neuron_stats"
        wanted = STAT_COLUMNS if checkpoint else WIDE_STAT_COLUMNS
        shown = list(SEARCH_KEYS) + [c for c in wanted if c in names]
        shown += [c for c in dict.fromkeys(used) if c not in shown]
        return SearchPlan(view, shown, " AND ".join(conds), params, order, desc)

    def counts(self) -> dict[str, int]:
        def compute() -> dict[str, int]:
            p = self.panel("SELECT (SELECT count(*) FROM neuron_sets) AS sets, (SELECT count(*) FROM eval_results) "
                           "AS results, (SELECT count(DISTINCT ablation_id) FROM ablations) AS ablations, "
                           "(SELECT count(*) FROM analyses) AS analyses")
            return p.rows[0]
        return self.memo("counts", compute)

    def layer_w_dist(self, model: str, revision: str) -> Panel:
        """Per layer: neurons and the w_dist distribution (quantiles, mean, max) of one checkpoint."""
        return self.memo(f"layers {model!r} {revision!r}", lambda: self.panel(
            "SELECT layer, count(*) AS neurons, quantile_cont(w_dist, 0.5) AS p50, quantile_cont(w_dist, 0.9) AS p90, "
            "quantile_cont(w_dist, 0.99) AS p99, max(w_dist) AS max, avg(w_dist) AS mean "
            "FROM neuron_stats WHERE model_id = ? AND revision = ? GROUP BY layer ORDER BY layer", [model, revision]))

    # -------------------------------------------------------------------------------------- one neuron

    def neuron_row(self, model: str, revision: str, layer: int, neuron: int, slice_id: str, spec_id: str) -> Panel:
        return self.panel("SELECT * FROM neurons WHERE model_id = ? AND revision = ? AND slice_id = ? AND "
                          "spec_id = ? AND layer = ? AND neuron = ?",
                          [model, revision, slice_id, spec_id, layer, neuron], limit=1)

    def trajectory(self, model: str, layer: int, neuron: int, slice_id: str, spec_id: str) -> Panel:
        """One neuron's w_dist at every stored checkpoint (one row group per checkpoint file is read)."""
        return self.panel("SELECT s.revision, c.step, s.w_dist, s.w_dist_neg, s.w_dist_pos, s.w_pct FROM "
                          "neuron_stats s LEFT JOIN checkpoints c USING (model_id, revision) WHERE s.model_id = ? "
                          "AND s.layer = ? AND s.neuron = ? AND s.slice_id = ? AND s.spec_id = ? "
                          "ORDER BY c.step NULLS LAST, s.revision", [model, layer, neuron, slice_id, spec_id])

    def array_row(self, model: str, revision: str, slice_id: str, layer: int) -> Panel:
        """The catalog row of a layer's stored pre-activations (the histogram and contexts read its array)."""
        return self.panel("SELECT model_id, revision, slice_id, layer, array_path, dtype, n_tokens, d_mlp FROM "
                          "activations WHERE model_id = ? AND revision = ? AND slice_id = ? AND layer = ? LIMIT 1",
                          [model, revision, slice_id, layer])

    def layer_top(self, model: str, revision: str, layer: int, k: int = 8) -> Panel:
        return self.panel("SELECT neuron, w_dist FROM neuron_stats WHERE model_id = ? AND revision = ? AND "
                          "layer = ? ORDER BY w_dist DESC, neuron LIMIT ?", [model, revision, layer, k])

    def diff_pairs(self, model: str, revision: str, layer: int, neuron: int) -> Panel:
        return self.panel("SELECT rank, text_a, text_b, x_a, x_b, d_in, d_out, ratio, signs, context_a, context_b "
                          "FROM diff_pairs WHERE model_id = ? AND revision = ? AND layer = ? AND neuron = ? "
                          "ORDER BY analysis_id, rank LIMIT 50", [model, revision, layer, neuron])

    def neuron_sets_of(self, model: str, revision: str, layer: int, neuron: int) -> Panel:
        return self.panel("SELECT s.name, s.n_members, s.created_at FROM neuron_sets s JOIN neuron_set_members m "
                          "USING (set_id) WHERE s.model_id = ? AND s.revision = ? AND m.layer = ? AND m.neuron = ? "
                          "ORDER BY s.created_at", [model, revision, layer, neuron])

    # -------------------------------------------------------------------------------------- sets and results

    def sets(self) -> Panel:
        return self.panel("SELECT name, model_id, revision, n_members, expression, counts_json, created_at "
                          "FROM neuron_sets ORDER BY created_at DESC, name")

    def set_row(self, name: str) -> Panel:
        return self.panel("SELECT * FROM neuron_sets WHERE name = ?", [name], limit=1)

    def set_members(self, set_id: str, limit: int = 500) -> Panel:
        return self.panel("SELECT m.layer, m.neuron, n.w_dist, n.w_pct, n.frac_neg FROM neuron_set_members m "
                          "JOIN neuron_sets s USING (set_id) LEFT JOIN neuron_stats n ON n.model_id = s.model_id "
                          "AND n.revision = s.revision AND n.slice_id = s.slice_id AND n.spec_id = s.spec_id "
                          "AND n.layer = m.layer AND n.neuron = m.neuron WHERE m.set_id = ? "
                          "ORDER BY n.w_dist DESC NULLS LAST, m.layer, m.neuron", [set_id], limit=limit)

    def results(self, set_id: str | None = None, limit: int = 500) -> Panel:
        cond, params = ("WHERE r.set_id = ?", [set_id]) if set_id else ("", [])
        return self.panel("SELECT r.result_id, r.model_id, r.revision, r.mode, s.name AS set_name, r.benchmark, "
                          "r.primary_metric, r.primary_value, r.n_items, r.item_limit, r.created_at FROM "
                          "eval_results r LEFT JOIN (SELECT set_id, min(name) AS name FROM neuron_sets GROUP BY 1) "
                          f"s USING (set_id) {cond} ORDER BY r.created_at DESC, r.benchmark", params, limit=limit)

    def ablations(self) -> Panel:
        return self.panel("SELECT ablation_id, any_value(model_id) AS model_id, any_value(revision) AS revision, "
                          "max(mode) AS mode, max(set_name) FILTER (WHERE condition = 'ablation') AS set_name, "
                          "max(n_neurons) FILTER (WHERE condition = 'ablation') AS n_neurons, "
                          "string_agg(DISTINCT condition, ', ' ORDER BY condition) AS conditions, "
                          "min(created_at) AS created_at FROM ablations GROUP BY ablation_id "
                          "ORDER BY created_at DESC")

    def analyses(self) -> Panel:
        return self.panel("SELECT analysis_id, kind, model_id, revision, seconds, created_at FROM analyses "
                          "ORDER BY created_at DESC")

    def result_row(self, result_id: str) -> Panel:
        return self.panel("SELECT * FROM eval_results WHERE result_id = ?", [result_id], limit=1)

    def result_metrics(self, result_id: str) -> Panel:
        return self.panel("SELECT metric, level, grp, value, n FROM eval_metrics WHERE result_id = ? "
                          "ORDER BY metric, level, grp NULLS FIRST", [result_id])

    def baseline_of(self, row: dict[str, Any]) -> Panel:
        """The unablated evaluation with the same model, checkpoint, benchmark, scoring and items."""
        return self.panel("SELECT result_id FROM eval_results WHERE model_id = ? AND revision = ? AND mode = 'none' "
                          "AND benchmark = ? AND bench_hash = ? AND item_limit IS NOT DISTINCT FROM ? AND "
                          "sample_seed = ? ORDER BY created_at LIMIT 1",
                          [row["model_id"], row["revision"], row["benchmark"], row["bench_hash"], row["item_limit"],
                           row["sample_seed"]])

    def items(self, result_id: str) -> Panel:
        return self.panel("SELECT item, item_id, grp, correct, correct_alt FROM eval_items WHERE result_id = ? "
                          "ORDER BY item", [result_id], limit=100_000)

    def lm_eval_pairs(self) -> Panel:
        """lm-eval tasks evaluated both unablated and under an intervention (same checkpoint and settings)."""
        return self.panel("SELECT a.benchmark, a.model_id, a.revision, a.mode, s.name AS set_name, a.set_id, "
                          "b.primary_value AS baseline, a.primary_value AS ablated, a.primary_metric, "
                          "a.result_id, b.result_id AS baseline_id FROM eval_results a JOIN eval_results b ON "
                          "b.model_id = a.model_id AND b.revision = a.revision AND b.benchmark = a.benchmark AND "
                          "b.bench_hash = a.bench_hash AND b.scoring_json = a.scoring_json AND b.mode = 'none' "
                          "LEFT JOIN (SELECT set_id, min(name) AS name FROM neuron_sets GROUP BY 1) s "
                          "ON s.set_id = a.set_id WHERE a.benchmark LIKE 'lm-eval:%' AND a.mode <> 'none' "
                          "ORDER BY a.benchmark, a.created_at")

    def analysis_row(self, analysis_id: str) -> Panel:
        return self.panel("SELECT * FROM analyses WHERE analysis_id = ?", [analysis_id], limit=1)

    def analysis_table(self, table: str, analysis_id: str, limit: int = 5000) -> Panel:
        return self.panel(f"SELECT * EXCLUDE (analysis_id) FROM {table} WHERE analysis_id = ?", [analysis_id],
                          limit=limit)
