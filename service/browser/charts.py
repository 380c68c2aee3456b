"""Chart specifications for the browser's pages: plain dicts, drawn by ``static/negdb.js`` with uPlot.

A spec names its ``kind`` (``lines``: numeric x, one line per series with an optional CI band; ``ci``: categorical
x, points with CI whiskers; ``bars``: categorical counts; ``hist``: a histogram against the fitted Gaussian's
expected counts with the negative region shaded and a linear/log switch), its x values (``xlabels`` for
categorical x) and its series (``y`` and, where there is one, the 95% interval ``lo``/``hi``). Every panel also
renders its rows as a plain table, which is what a browser without JavaScript shows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from negdb.service.browser.queries import clean


def series(label: str, y: Sequence[Any], lo: Sequence[Any] | None = None, hi: Sequence[Any] | None = None
           ) -> dict[str, Any]:
    out: dict[str, Any] = {"label": label, "y": clean(list(y))}
    if lo is not None and hi is not None:
        out["lo"], out["hi"] = clean(list(lo)), clean(list(hi))
    return out


def spec(kind: str, x: Sequence[Any], series_: list[dict[str, Any]], *, xlabel: str = "", ylabel: str = "",
         xlabels: Sequence[str] | None = None, **extra: Any) -> dict[str, Any]:
    return {"kind": kind, "x": clean(list(x)), "xlabels": list(xlabels) if xlabels is not None else None,
            "xlabel": xlabel, "ylabel": ylabel, "series": series_, **clean(extra)}


def grouped(rows: Iterable[dict[str, Any]], x: str, y: str, by: Callable[[dict[str, Any]], str], *,
            lo: str | None = None, hi: str | None = None, categorical: bool = False, kind: str | None = None,
            xlabel: str = "", ylabel: str = "", sort_x: bool = True) -> dict[str, Any] | None:
    """One series per ``by(row)`` of ``y`` over ``x`` (with ``lo``/``hi`` when given); None without rows."""
    rows = [r for r in rows if r.get(y) is not None]
    if not rows:
        return None
    xs = list(dict.fromkeys(r[x] for r in rows))
    if sort_x and not categorical:
        xs = sorted(xs, key=lambda v: (v is None, v))
    index = {v: i for i, v in enumerate(xs)}
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(by(r), []).append(r)
    out = []
    for label, rs in groups.items():
        ys: list[Any] = [None] * len(xs)
        los: list[Any] = [None] * len(xs)
        his: list[Any] = [None] * len(xs)
        for r in rs:
            i = index[r[x]]
            ys[i] = r[y]
            if lo and hi:
                los[i], his[i] = r.get(lo), r.get(hi)
        out.append(series(label, ys, los if lo else None, his if hi else None))
    if categorical:
        return spec(kind or "ci", list(range(len(xs))), out, xlabels=[str(v) for v in xs], xlabel=xlabel,
                    ylabel=ylabel)
    return spec(kind or "lines", xs, out, xlabel=xlabel, ylabel=ylabel)


def histogram(hist: dict[str, Any]) -> dict[str, Any]:
    """A neuron's histogram (``NeuronReport.histogram.to_dict()``) with its fitted Gaussian."""
    edges = hist["edges"]
    mids = [(a + b) / 2 for a, b in zip(edges[:-1], edges[1:])]
    return spec("hist", mids, [series("count", hist["counts"]), series("fitted Gaussian", hist["expected"])],
                xlabel="pre-activation", ylabel="tokens", edges=edges, neg=True)


# ------------------------------------------------------------------------------------------ ablations

PERPLEXITY_METRICS = frozenset({"ppl"})
"""Metrics in perplexity units: their deltas (often several points) get their own chart, since on one axis with
accuracy deltas (hundredths) the accuracy whiskers would be flat lines."""


def ablation(rows: Sequence[dict[str, Any]]) -> list[tuple[str, str, dict[str, Any]]]:
    """The ablation page's charts, ``(element id, title, spec)``: the deltas of accuracy-like metrics on one axis
    (``ablation-chart``) and those of perplexity on another (``ablation-ppl-chart``), each with its CIs."""
    out = []
    for cid, title, unit, keep in (
            ("ablation-chart", "accuracy and other metrics", "score", lambda m: m not in PERPLEXITY_METRICS),
            ("ablation-ppl-chart", "perplexity", "perplexity", lambda m: m in PERPLEXITY_METRICS)):
        chart = grouped([r for r in rows if keep(r["metric"])], "key", "delta", lambda x: x["condition"], lo="lo",
                        hi="hi", categorical=True, xlabel="benchmark and metric",
                        ylabel=f"Δ {unit} vs baseline")  # short: the axis label must fit the chart's height
        if chart is not None:
            out.append((cid, title, chart))
    return out


# ------------------------------------------------------------------------------------------ analyses

def _label(*keys: str) -> Callable[[dict[str, Any]], str]:
    return lambda r: " ".join(str(r[k]) for k in keys if r.get(k) is not None) or "value"


ANALYSIS_CHARTS: dict[str, Callable[[list[dict[str, Any]]], dict[str, Any] | None]] = {
    "pos_surprisal": lambda rows: grouped([r for r in rows if r["tag"] != "ALL"], "tag", "excess",
                                          _label("condition", "seed"), lo="ci_lo", hi="ci_hi", categorical=True,
                                          xlabel="part of speech", ylabel="excess surprisal (nats/token)"),
    "layer_effects": lambda rows: grouped([r for r in rows if r["level"] in ("summary", "macro") or
                                           r["metric"] == "ppl"], "group_index", "delta",
                                          _label("variant", "benchmark", "metric"), lo="ci_lo", hi="ci_hi",
                                          categorical=True, xlabel="layer group", ylabel="delta vs baseline"),
    "training_dynamics": lambda rows: grouped([r for r in rows if r["layer"] is None and r["benchmark"] is None],
                                              "step", "value", _label("quantity"), xlabel="training step",
                                              ylabel="value"),
    "neg_share": lambda rows: grouped([r for r in rows if r["layer"] is not None], "layer", "share_mean",
                                      _label("selection"), lo="ci_lo", hi="ci_hi", xlabel="layer",
                                      ylabel="share of w_dist in the negative region"),
    "sweep_summary": lambda rows: grouped([r for r in rows if r["kind"] == "dose"], "fraction", "value",
                                          _label("selector", "mode", "condition", "benchmark", "metric"),
                                          lo="ci_lo", hi="ci_hi", xlabel="fraction of each layer",
                                          ylabel="delta vs baseline"),
}
"""Analysis table -> its chart (tables without an entry are shown as tables only)."""
