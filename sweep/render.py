"""A sweep as text: compact tables (fractions as columns), JSON (everything) or CSV (the summary rows)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from negdb.errors import BadArgument
from negdb.evals import registry
from negdb.store.tables import SWEEP_SUMMARY

if TYPE_CHECKING:
    from negdb.sweep.runner import Sweep


def render(sw: Sweep, fmt: str = "table") -> str:
    if fmt == "json":
        return json.dumps({"analysis_id": sw.analysis_id, "model_id": sw.model_id, "revision": sw.revision,
                           "config": sw.config, "summary": sw.summary,
                           "estimate": None if sw.estimate is None else sw.estimate.to_dict(),
                           "points": sw.points, "rows": sw.rows}, indent=2, default=str)
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=[c for c, _, _ in SWEEP_SUMMARY.columns], extrasaction="ignore")
        w.writeheader()
        w.writerows(sw.rows)
        return buf.getvalue()
    if fmt != "table":
        raise BadArgument(f"unknown format {fmt!r}: use table, json or csv")
    return tables(sw)


def headline(benchmark: str, metric: str) -> bool:
    """Shown in the tables: summary means and each benchmark's primary (first) metric."""
    if benchmark not in registry.benchmarks():
        return True
    return metric == registry.get(benchmark).metrics[0]


def _cell(r: dict[str, Any]) -> str:
    digits = 3 if r["metric"] == "ppl" else 4
    return f"{r['value']:+.{digits}f} [{r['ci_lo']:+.{digits}f}, {r['ci_hi']:+.{digits}f}]"


def _grid(rows: list[dict[str, Any]], head: list[str], label: Callable[[dict[str, Any]], tuple[str, ...]],
          fractions: list[float], cell: Callable[[dict[str, Any]], str] = _cell) -> list[str]:
    cells: dict[tuple[str, ...], dict[float, str]] = {}
    for r in rows:
        cells.setdefault(label(r), {})[r["fraction"]] = cell(r)
    cols = [f"{100 * f:g}%" for f in fractions]
    lines = [[*head, *cols]] + [[*k, *(v.get(f, "") for f in fractions)] for k, v in cells.items()]
    widths = [max(len(x[i]) for x in lines) for i in range(len(lines[0]))]
    out = ["  ".join(c.ljust(w) for c, w in zip(x, widths)).rstrip() for x in lines]
    out.insert(1, "  ".join("-" * w for w in widths))
    return out


def _per_seed(sw: Sweep, fractions: list[float]) -> list[str]:
    """The grammar and suite deltas of every condition seed by seed (``s0 / s1 / ...``): how stable they are.

    Without those means (fewer than two of their benchmarks evaluated), each accuracy benchmark's primary metric.
    """
    present = list(dict.fromkeys((p["benchmark"], p["metric"]) for p in sw.points))
    keys = [k for k in present if k[0] in ("grammar", "suite")] or [
        k for k in present if k[1] != "ppl" and headline(*k)]
    out: list[str] = []
    for bench, metric in keys:
        rows = sorted((p for p in sw.points if (p["benchmark"], p["metric"]) == (bench, metric)),
                      key=lambda p: p["seed"])
        cells: dict[tuple[str, ...], dict[float, list[str]]] = {}
        for p in rows:
            key = (p["selector"], p["mode"], p["condition"])
            cells.setdefault(key, {}).setdefault(p["fraction"], []).append(f"{p['delta']:+.4f}")
        if not cells:
            continue
        grid = [{"selector": k[0], "mode": k[1], "condition": k[2], "fraction": f, "text": " / ".join(v)}
                for k, by_f in cells.items() for f, v in by_f.items()]
        out += ["", f"per seed: {bench} {metric} (condition minus baseline), seeds "
                    f"{', '.join(map(str, sw.config.get('seeds', [])))} in order"]
        out += _grid(grid, ["selector", "mode", "condition"], lambda r: (r["selector"], r["mode"], r["condition"]),
                     fractions, cell=lambda r: r["text"])
    return out


def tables(sw: Sweep) -> str:
    fractions = sorted({r["fraction"] for r in sw.rows} | {p["fraction"] for p in sw.points})
    seeds = len(sw.config.get("seeds", []))
    out = [f"sweep {sw.analysis_id}: {sw.model_id}@{sw.revision}, {sw.config.get('direction', 'top')} fraction per "
           f"layer by {', '.join(sw.config.get('by', []))}; {seeds} seed(s); value = mean over seeds "
           f"[95% CI, paired bootstrap over items, {sw.config.get('n_boot')} draws]"]
    dose = [r for r in sw.rows if r["kind"] == "dose" and headline(r["benchmark"], r["metric"])]
    for key in dict.fromkeys((r["benchmark"], r["metric"]) for r in dose):
        sub = [r for r in dose if (r["benchmark"], r["metric"]) == key]
        out += ["", f"dose-response: {key[0]} {key[1]} (condition minus baseline)"]
        out += _grid(sub, ["selector", "mode", "condition"], lambda r: (r["selector"], r["mode"], r["condition"]),
                     fractions)
    sel = [r for r in sw.rows if r["kind"] == "selectivity"]
    if sel:
        out += ["", "selectivity index SI = (L_grammar(W) - L_grammar(PM)) - (L_suite(W) - L_suite(PM)), "
                    "L = accuracy loss; > 0: W is more grammar-selective than its ppl-matched control"]
        out += _grid(sel, ["selector", "mode", "part"], lambda r: (r["selector"], r["mode"], r["benchmark"]), fractions)
    for kind, title, head in (("sign", "sign contrast: ablation under mode A minus mode B, same set and items",
                               ["selector", "modes", "benchmark", "metric"]),
                              ("selector", "selector contrast: ablation of selector A's set minus selector B's",
                               ["selector", "mode", "benchmark", "metric"])):
        sub = [r for r in sw.rows if r["kind"] == kind and headline(r["benchmark"], r["metric"])]
        if sub:
            out += ["", title]
            out += _grid(sub, head, lambda r: (r["selector"], r["mode"], r["benchmark"], r["metric"]), fractions)
    if seeds > 1:
        out += _per_seed(sw, fractions)
    notes = []
    if sw.summary.get("ppl_matched_skipped"):
        notes.append("no ppl-matched control (the ablation does not raise perplexity): "
                     + "; ".join(sw.summary["ppl_matched_skipped"]))
    if sw.summary.get("ppl_matched_not_matched"):
        notes.append("ppl-matched NOT matched (the largest fraction falls short): "
                     + "; ".join(sw.summary["ppl_matched_not_matched"]))
    if notes:
        out += ["", *notes]
    return "\n".join(out)
