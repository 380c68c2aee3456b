"""The comparison table of an ablation: each condition against the baseline, with paired-bootstrap 95% CIs.

Rows are (benchmark, metric): every metric of every benchmark, at its headline level (macro over groups for
BLiMP and TSE, overall otherwise), plus summary rows: ``grammar`` (mean of BLiMP acc_sum and TSE acc_mean) and
``suite`` (mean of the suite's primary accuracies). Accuracy CIs resample items within each group (and each
benchmark for summaries), the same draw for both conditions; perplexity CIs resample windows (items for
LAMBADA). A condition run with several seeds (random) averages its per-item decisions over the seeds first.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import polars as pl

from negdb.errors import BadArgument
from negdb.evals import registry
from negdb.evals.metrics import (DECISION_COLUMN, SUMMARIES, bootstrap_samples, macro_delta, ppl_bootstrap,
                                 stratified_bootstrap)
from negdb.store.results import StoredResult



@dataclass
class Condition:
    """One condition of an ablation: its name, a label, and per benchmark its results (one per seed)."""

    name: str
    label: str
    results: dict[str, list[StoredResult]]
    n_neurons: int = 0
    fraction: float | None = None
    note: str = ""
    sets: list[Any] = field(default_factory=list)
    """The condition's neuron sets, one per seed (``None`` for the baseline)."""


@dataclass(frozen=True)
class Row:
    benchmark: str
    metric: str
    condition: str
    value: float
    baseline: float
    delta: float
    lo: float
    hi: float
    n: int
    seeds: int


@dataclass
class Comparison:
    """All rows, plus the conditions in column order."""

    conditions: list[Condition]
    rows: list[Row] = field(default_factory=list)
    n_boot: int = 1000
    seed: int = 0
    notes: list[str] = field(default_factory=list)
    """Conditions left out and why (a ppl-matched control with nothing to match)."""

    def to_records(self) -> list[dict[str, Any]]:
        return [asdict(r) for r in self.rows]

    def frame(self) -> pl.DataFrame:
        """One row per condition, benchmark and metric: value, baseline, delta and its 95% CI (``ci_lo``,
        ``ci_hi``), items ``n`` and ``seeds``."""
        schema = {"condition": pl.Utf8, "benchmark": pl.Utf8, "metric": pl.Utf8, "value": pl.Float64,
                  "baseline": pl.Float64, "delta": pl.Float64, "ci_lo": pl.Float64, "ci_hi": pl.Float64,
                  "n": pl.Int64, "seeds": pl.Int64}
        rows = [{"condition": r.condition, "benchmark": r.benchmark, "metric": r.metric, "value": r.value,
                 "baseline": r.baseline, "delta": r.delta, "ci_lo": r.lo, "ci_hi": r.hi, "n": r.n, "seeds": r.seeds}
                for r in self.rows]
        return pl.DataFrame(rows, schema=schema)

    def render(self, fmt: str = "table") -> str:
        if fmt == "json":
            return json.dumps({"conditions": [{"name": c.name, "label": c.label, "n_neurons": c.n_neurons,
                                               "fraction": c.fraction, "note": c.note} for c in self.conditions],
                               "bootstrap": {"n_boot": self.n_boot, "seed": self.seed, "interval": "95% percentile"},
                               "rows": self.to_records(), **({"notes": self.notes} if self.notes else {})},
                              indent=2)
        if fmt == "csv":
            buf = io.StringIO()
            w = csv.DictWriter(buf, fieldnames=list(Row.__dataclass_fields__))
            w.writeheader()
            w.writerows(self.to_records())
            return buf.getvalue()
        if fmt != "table":
            raise BadArgument(f"unknown format {fmt!r}: use table, json or csv")
        return _table(self)


def _same_items(a: list[StoredResult], b: list[StoredResult]) -> None:
    ids = a[0].items()["item"].to_list()
    for r in [*a[1:], *b]:
        if r.items()["item"].to_list() != ids:
            raise BadArgument(f"results of {r.benchmark} hold different items (other --limit or --sample-seed?): "
                             "compare results of the same items only")


def decisions(results: list[StoredResult], column: str) -> tuple[np.ndarray, list[str]]:
    """Per item the decision ``column`` averaged over ``results`` (seeds), and the items' groups as text."""
    frames = [r.items() for r in results]
    vals = np.mean([f[column].cast(pl.Float64).to_numpy() for f in frames], axis=0)
    groups = [str(g) for g in frames[0]["grp"].to_list()]
    return vals, groups


def _strata(a: np.ndarray, b: np.ndarray, groups: list[str] | None) -> list[tuple[np.ndarray, np.ndarray]]:
    if groups is None or all(g == "None" for g in groups):
        return [(a, b)]
    keys = np.array(groups)
    return [(a[keys == g], b[keys == g]) for g in dict.fromkeys(groups)]


def item_nll(results: list[StoredResult]) -> tuple[np.ndarray, np.ndarray]:
    """Per window (LAMBADA: item) the NLL averaged over ``results`` (seeds), and its token count (1 per item for
    LAMBADA, whose perplexity is per word)."""
    frames = [r.items() for r in results]
    nll = np.mean([-np.array([lp[0] for lp in f["logprobs"].to_list()]) for f in frames], axis=0)
    n = np.array([c[0] for c in frames[0]["n_tokens"].to_list()], dtype=np.float64)
    if frames[0]["benchmark"][0] != "wikitext2":
        n = np.ones_like(n)  # LAMBADA ppl is per item (word), not per token
    return nll, n


def compare(baseline: Condition, others: Sequence[Condition], *, n_boot: int = 1000, seed: int = 0) -> Comparison:
    """Rows for every benchmark/metric both the baseline and a condition have."""
    cmp = Comparison([baseline, *others], n_boot=n_boot, seed=seed)
    suite = [b for b in registry.aliases().get("suite", []) if b in baseline.results]
    summaries = dict(SUMMARIES)
    if suite:
        summaries["suite"] = tuple((b, registry.get(b).metrics[0]) for b in suite)
    for cond in others:
        parts: dict[tuple[str, str], list[tuple[np.ndarray, np.ndarray]]] = {}
        for bench, base_res in baseline.results.items():
            if bench not in cond.results:
                continue
            spec = registry.get(bench)
            _same_items(base_res, cond.results[bench])
            for metric in spec.metrics:
                if metric == "ppl":
                    na, ca = item_nll(cond.results[bench])
                    nb, cb = item_nll(base_res)
                    d, lo, hi = ppl_bootstrap(na, ca, nb, cb, n_boot, seed)
                    value0 = float(np.exp(nb.sum() / cb.sum()))
                    cmp.rows.append(Row(bench, "ppl", cond.name, value0 + d, value0, d, lo, hi, len(na),
                                        len(cond.results[bench])))
                    continue
                col = DECISION_COLUMN[metric]
                a, groups = decisions(cond.results[bench], col)
                b, _ = decisions(base_res, col)
                strata = _strata(a, b, groups if spec.group else None)
                d, lo, hi = stratified_bootstrap(strata, n_boot, seed)
                value0 = float(np.mean([s[1].mean() for s in strata]))
                cmp.rows.append(Row(bench, metric, cond.name, value0 + d, value0, d, lo, hi, len(a),
                                    len(cond.results[bench])))
                parts[(bench, metric)] = strata
        for name, members in summaries.items():
            have = [parts[m] for m in members if m in parts]
            if len(have) < 2:
                continue
            # every benchmark weighs the same: average the benchmarks' macro differences, draw by draw
            boots = np.mean([bootstrap_samples(st, n_boot, seed + i) for i, st in enumerate(have)], axis=0)
            lo, hi = np.percentile(boots, [2.5, 97.5])
            d = float(np.mean([macro_delta(st) for st in have]))
            base = float(np.mean([np.mean([s[1].mean() for s in st]) for st in have]))
            cmp.rows.append(Row(name, "mean", cond.name, base + d, base, d, float(lo), float(hi),
                                sum(len(s[0]) for st in have for s in st), len(cond.results[next(iter(cond.results))])))
    return cmp


def _fmt(value: float, metric: str) -> str:
    return f"{value:.3f}" if metric in ("ppl",) else f"{value:.4f}"


def _table(cmp: Comparison) -> str:
    base, others = cmp.conditions[0], cmp.conditions[1:]
    keys = list(dict.fromkeys((r.benchmark, r.metric) for r in cmp.rows))
    by = {(r.benchmark, r.metric, r.condition): r for r in cmp.rows}
    head = ["benchmark", "metric", "n", base.label] + [c.label for c in others]
    lines = [head]
    for bench, metric in keys:
        first = next(by[(bench, metric, c.name)] for c in others if (bench, metric, c.name) in by)
        line = [bench, metric, str(first.n), _fmt(first.baseline, metric)]
        for c in others:
            r = by.get((bench, metric, c.name))
            line.append("" if r is None else f"{_fmt(r.value, metric)} ({r.delta:+.4f} [{r.lo:+.4f}, {r.hi:+.4f}])")
        lines.append(line)
    widths = [max(len(row[i]) for row in lines) for i in range(len(head))]
    out = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in lines]
    out.insert(1, "  ".join("-" * w for w in widths))
    notes = [f"{c.label}: {c.note}" for c in cmp.conditions if c.note]
    out.append("")
    out.append(f"value (delta vs {base.label} [95% CI, paired bootstrap over items, {cmp.n_boot} draws, "
               f"seed {cmp.seed}]); accuracy macro over groups for BLiMP/TSE; ppl = perplexity (lower is better).")
    out.extend(notes)
    out.extend(cmp.notes)
    return "\n".join(out)
