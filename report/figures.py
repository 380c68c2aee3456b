"""One matplotlib (Agg) function per report figure; each draws frames from :mod:`negdb.report.data` into a PNG.

Figures are built with the object API (``matplotlib.figure.Figure``), so no pyplot state or GUI backend is
touched; ``savefig`` writes through the Agg canvas.
"""

from __future__ import annotations

from typing import Any

import math
from pathlib import Path

import numpy as np
import polars as pl
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from negdb.query.neuron import Histogram

DPI = 110
COLORS = {"ablation": "#c0392b", "random": "#2e6fb7", "ppl-matched": "#e08a1e", "alone": "#2e6fb7",
          "cumulative": "#c0392b", "top1": "#c0392b", "rest": "#2e6fb7", "all": "#555555"}
_CYCLE = ["#6a3d9a", "#33a02c", "#b15928", "#1f78b4", "#e31a1c", "#ff7f00"]
FUNCTION_SHADE = "#fdf1d6"


def color(name: str, i: int = 0) -> str:
    """The colour of a condition, variant or selection (``neg-ablation`` and ``random s1`` by their kind)."""
    base = name.split(" ")[0]
    return COLORS.get("ablation" if base.endswith("-ablation") else base, _CYCLE[i % len(_CYCLE)])


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=DPI, format="png", metadata={"Software": None})
    return path


def _finish(fig: Figure, axes: Any, used: int, title: str, path: Path) -> Path:
    """Hide the axes after the first ``used``, title the figure, lay it out and save it."""
    for ax in axes[used:]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def _err(v: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Error-bar lengths (2, n) from a value and its CI; a missing CI gives no bar."""
    lo = np.where(np.isnan(lo), v, lo)
    hi = np.where(np.isnan(hi), v, hi)
    return np.vstack([np.clip(v - lo, 0, None), np.clip(hi - v, 0, None)])


def _f(df: pl.DataFrame, col: str) -> np.ndarray:
    return df[col].cast(pl.Float64).fill_null(float("nan")).to_numpy()


def _short_num(v: float) -> str:
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:.3g}{unit}"
    return f"{v:.3g}"


def _steps_scale(ax, x: np.ndarray) -> None:
    """A log-like x axis (symlog, so step 0 stays) when steps span decades; the stored steps as ticks."""
    pos = x[x > 0]
    if pos.size and pos.max() / pos.min() > 100:
        ax.set_xscale("symlog", linthresh=float(pos.min()))
    ticks = np.unique(x[~np.isnan(x)])
    if 0 < ticks.size <= 8:
        ax.set_xticks(ticks, [_short_num(float(t)) for t in ticks], fontsize=8)
        ax.minorticks_off()


def wdist(values: pl.DataFrame, per_layer: pl.DataFrame, title: str, path: Path) -> Path:
    """Box plot of w_dist per layer (whiskers 1st-99th percentile) with each layer's top-1% threshold."""
    layers = per_layer["layer"].to_list()
    data = [values.filter(pl.col("layer") == layer)["w_dist"].drop_nulls().drop_nans().to_numpy() for layer in layers]
    fig = Figure(figsize=(max(6.0, 0.32 * len(layers) + 2), 4.2))
    ax = fig.subplots()
    ax.boxplot(data, positions=layers, widths=0.6, whis=(1, 99), showfliers=True,
               flierprops={"markersize": 2, "alpha": 0.4, "markeredgecolor": "#555555"},
               medianprops={"color": "#2e6fb7"})
    ax.scatter(layers, _f(per_layer, "threshold"), marker="_", s=220, linewidths=2.2, color=COLORS["ablation"],
               zorder=3, label="top-1% threshold (k-th largest w_dist)")
    ax.set_xlabel("layer")
    ax.set_ylabel("w_dist (W1 of z-scored pre-activation to N(0,1))")
    ax.set_title(title, fontsize=10)
    if len(layers) > 16:
        ax.set_xticks(layers[::max(1, len(layers) // 16)])
    ax.legend(fontsize=8, loc="best")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def neuron(hist: Histogram, title: str, path: Path) -> Path:
    """The neuron's stored pre-activations against its fitted Gaussian (linear and log counts), x < 0 shaded."""
    fig = Figure(figsize=(9.5, 3.8))
    axes = fig.subplots(1, 2)
    edges, counts, expected = hist.edges, hist.counts, hist.expected
    for ax, log in zip(axes, (False, True)):
        if edges[0] < 0:
            ax.axvspan(edges[0], min(0.0, float(edges[-1])), color=COLORS["ablation"], alpha=0.12, lw=0,
                       label="negative pre-activations")
        ax.bar(edges[:-1], counts, width=np.diff(edges), align="edge", color="#7f9cc4", edgecolor="#4a6a96",
               lw=0.4, label=f"stored values (n={hist.n:,})")
        ax.stairs(expected, edges, color="black", lw=1.4,
                  label=f"fitted Gaussian N({hist.mean:.3g}, {hist.std:.3g}²)")
        ax.axvline(0, color=COLORS["ablation"], lw=0.8)
        ax.set_xlabel("pre-activation")
        ax.set_ylabel("tokens per bin" + (" (log)" if log else ""))
        if log:
            ax.set_yscale("log")
            ax.set_ylim(bottom=0.5)
    axes[0].legend(fontsize=7, loc="upper right")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def ablation(rows: pl.DataFrame, conditions: list[tuple[str, str]], title: str, path: Path) -> Path:
    """Delta vs baseline with 95% CI per benchmark/metric, one marker per condition; perplexities apart."""
    panels = [(n, rows.filter(f)) for n, f in (("accuracy (delta vs baseline)", pl.col("metric") != "ppl"),
                                                ("perplexity (delta vs baseline)", pl.col("metric") == "ppl"))]
    panels = [(n, df) for n, df in panels if df.height]
    keys = [list(dict.fromkeys(zip(df["benchmark"].to_list(), df["metric"].to_list()))) for _, df in panels]
    heights = [max(1.2, 0.42 * len(k) + 0.8) for k in keys]
    fig = Figure(figsize=(8.0, sum(heights) + 0.8))
    axes = fig.subplots(len(panels), 1, squeeze=False, gridspec_kw={"height_ratios": heights})[:, 0]
    width = 0.7
    for ax, (name, df), k in zip(axes, panels, keys):
        ypos = {key: i for i, key in enumerate(k)}
        for j, (cond, label) in enumerate(conditions):
            sub = df.filter(pl.col("condition") == cond)
            if sub.height == 0:
                continue
            off = (j - (len(conditions) - 1) / 2) * width / max(1, len(conditions))
            y = np.array([ypos[key] for key in zip(sub["benchmark"].to_list(), sub["metric"].to_list())]) + off
            d = _f(sub, "delta")
            ax.errorbar(d, y, xerr=_err(d, _f(sub, "lo"), _f(sub, "hi")), fmt="o", ms=5, capsize=3,
                        color=color(cond, j), label=label)
        ax.axvline(0, color="black", lw=0.8)
        ax.set_yticks(range(len(k)), [f"{b} {m}" for b, m in k], fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel(name)
        ax.grid(axis="x", alpha=0.3)
    axes[0].legend(fontsize=8, loc="best")
    axes[0].set_title(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def dissociation(points: pl.DataFrame, labels: dict[str, str], title: str, path: Path) -> Path:
    """Grammar delta (x) against suite delta (y) per condition, both with 95% CI bars."""
    fig = Figure(figsize=(6.0, 5.0))
    ax = fig.subplots()
    for j, r in enumerate(points.iter_rows(named=True)):
        x, y = float(r["x"]), float(r["y"])
        xe = _err(np.array([x]), np.array([_nan(r["x_lo"])]), np.array([_nan(r["x_hi"])]))
        ye = _err(np.array([y]), np.array([_nan(r["y_lo"])]), np.array([_nan(r["y_hi"])]))
        ax.errorbar([x], [y], xerr=xe, yerr=ye, fmt="o", ms=8, capsize=4, color=color(r["condition"], j),
                    label=labels.get(r["condition"], r["condition"]))
    ax.axhline(0, color="black", lw=0.8)
    ax.axvline(0, color="black", lw=0.8)
    if points.height:
        ax.set_xlabel(f"grammar: delta {points['x_row'][0]} vs baseline")
        ax.set_ylabel(f"suite: delta {points['y_row'][0]} vs baseline")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def _distinct(colours: list[str]) -> list[str]:
    """The colours with repeats (e.g. random seeds) replaced by unused ones of the cycle."""
    out: list[str] = []
    spare = iter(c for c in _CYCLE if c not in colours)
    for c in colours:
        out.append(next(spare, c) if c in out else c)
    return out


def _nan(x: float | None) -> float:
    return float("nan") if x is None else float(x)


def pos(df: pl.DataFrame, series: list[str], tags: list[str], function_tags: set[str], title: str,
        path: Path) -> Path:
    """Mean excess surprisal per POS tag with 95% CIs, one bar per series; function-word tags shaded."""
    fig = Figure(figsize=(max(7.0, 0.55 * len(tags) * max(1, len(series)) ** 0.5 + 2), 4.3))
    ax = fig.subplots()
    xs = np.arange(len(tags))
    for i, tag in enumerate(tags):
        if tag in function_tags:
            ax.axvspan(i - 0.5, i + 0.5, color=FUNCTION_SHADE, lw=0, zorder=0)
    width = 0.8 / max(1, len(series))
    colours = _distinct([color(s, j) for j, s in enumerate(series)])
    for j, s in enumerate(series):
        sub = df.filter(pl.col("series") == s)
        by = {r["tag"]: r for r in sub.iter_rows(named=True)}
        v = np.array([_nan(by[t]["excess"]) if t in by else np.nan for t in tags])
        lo = np.array([_nan(by[t]["lo"]) if t in by else np.nan for t in tags])
        hi = np.array([_nan(by[t]["hi"]) if t in by else np.nan for t in tags])
        x = xs + (j - (len(series) - 1) / 2) * width
        ax.bar(x, np.nan_to_num(v), width=width, color=colours[j], label=s, zorder=2)
        ax.errorbar(x, np.nan_to_num(v), yerr=_err(np.nan_to_num(v), lo, hi), fmt="none", ecolor="black",
                    capsize=2, lw=0.8, zorder=3)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(xs, tags, rotation=45, ha="right", fontsize=8)
    for lab in ax.get_xticklabels():
        if lab.get_text() in function_tags:
            lab.set_fontweight("bold")
    ax.set_ylabel("excess surprisal (nats per token)")
    ax.set_xlim(-0.6, len(tags) - 0.4)
    handles, names = ax.get_legend_handles_labels()
    from matplotlib.patches import Patch

    handles.append(Patch(color=FUNCTION_SHADE, label="function-word tags (bold)"))
    ax.legend(handles=handles, fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def layers(df: pl.DataFrame, panels: list[tuple[str, str]], group_labels: dict[int, str], title: str,
           path: Path) -> Path:
    """Delta vs layer group per benchmark/metric: ablated alone and cumulatively, with 95% CI bands."""
    cols = min(3, len(panels))
    nrows = math.ceil(len(panels) / cols)
    fig = Figure(figsize=(4.2 * cols, 3.3 * nrows + 0.4))
    axes = fig.subplots(nrows, cols, squeeze=False).ravel()
    groups = sorted(group_labels)
    for ax, (bench, metric) in zip(axes, panels):
        sub = df.filter((pl.col("benchmark") == bench) & (pl.col("metric") == metric))
        for j, variant in enumerate(dict.fromkeys(sub["variant"].to_list())):
            v = sub.filter(pl.col("variant") == variant).sort("group")
            x = _f(v, "group")
            d = _f(v, "delta")
            ax.plot(x, d, marker="o", color=color(variant, j), label=variant)
            lo, hi = _f(v, "lo"), _f(v, "hi")
            if not np.all(np.isnan(lo)):
                ax.fill_between(x, lo, hi, color=color(variant, j), alpha=0.18, lw=0)
        ax.axhline(0, color="black", lw=0.8)
        ax.set_xticks(groups, [group_labels[g] for g in groups], fontsize=8)
        ax.set_xlabel("layer group (layers)")
        ax.set_ylabel(f"delta {metric}")
        ax.set_title(bench, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _finish(fig, axes, len(panels), title, path)


TRAINING_PANELS = (
    ("w_dist over all neurons", lambda q: q.startswith("w_dist_")),
    ("w_dist of the top-1% set and of the final cohort", lambda q: q.startswith(("top_", "cohort"))),
    ("top-1% set overlap (Jaccard)", lambda q: q.startswith("overlap")),
)


def _curves(ax: Any, part: pl.DataFrame) -> None:
    """One line per series of ``part`` (x, value) with its CI band where stored."""
    for j, q in enumerate(dict.fromkeys(part["series"].to_list())):
        s = part.filter(pl.col("series") == q).sort("x")
        x, v, lo, hi = _f(s, "x"), _f(s, "value"), _f(s, "lo"), _f(s, "hi")
        c = color(q.removeprefix("delta_").split(" ")[0], j) if q.startswith("delta_") else _CYCLE[j % len(_CYCLE)]
        ax.plot(x, v, marker="o", ms=3, color=c, label=s["quantity"][0] if q.startswith("delta_") else q)
        if not np.all(np.isnan(lo)):
            ax.fill_between(x, lo, hi, color=c, alpha=0.18, lw=0)
    if part.height == 0:
        ax.text(0.5, 0.5, "not stored", ha="center", va="center", transform=ax.transAxes, color="#777777")
    else:
        ax.legend(fontsize=7)


def training(series: pl.DataFrame, x_label: str, effects: list[tuple[str, str]], title: str, path: Path) -> Path:
    """Training curves: w_dist quantiles, top set and cohort, overlaps (first row), and the deltas of each of
    ``effects`` (benchmark, metric) with CI bands (second row), against the step."""
    fig = Figure(figsize=(13.0, 7.0))
    axes = fig.subplots(2, 3).ravel()
    x_all = _f(series, "x")
    quantities = series["quantity"].unique().to_list()
    panels: list[tuple[str, pl.DataFrame]] = [
        (name, series.filter(pl.col("quantity").is_in([q for q in quantities if pick(q)])))
        for name, pick in TRAINING_PANELS]
    deltas = series.filter(pl.col("quantity").str.starts_with("delta_"))
    panels += [(f"ablation effect: {b} {m}", deltas.filter((pl.col("benchmark") == b) & (pl.col("metric") == m)))
               for b, m in effects[:3]]
    if not effects:
        panels.append(("ablation effect (delta vs baseline)", deltas.clear()))
    for ax, (name, part) in zip(axes, panels):
        if name.startswith("ablation"):
            ax.axhline(0, color="black", lw=0.8)
        _curves(ax, part)
        _steps_scale(ax, x_all)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel(x_label)
        ax.grid(alpha=0.3)
    return _finish(fig, axes, len(panels), title, path)


def neg_share(df: pl.DataFrame, title: str, path: Path) -> Path:
    """Per layer: mean share of w_dist in the negative region per neuron selection, with 95% CI bands."""
    fig = Figure(figsize=(7.5, 4.0))
    ax = fig.subplots()
    df = df.filter(pl.col("layer").is_not_null())  # layer NULL: all layers pooled (in the table, not the curve)
    for j, sel in enumerate(dict.fromkeys(df["selection"].to_list())):
        s = df.filter(pl.col("selection") == sel).sort("layer")
        x, v, lo, hi = _f(s, "layer"), _f(s, "share_mean"), _f(s, "lo"), _f(s, "hi")
        ax.plot(x, v, marker="o", ms=4, color=color(sel, j), label=sel)
        if not np.all(np.isnan(lo)):
            ax.fill_between(x, lo, hi, color=color(sel, j), alpha=0.18, lw=0)
    ax.axhline(0.5, color="#777777", lw=0.8, ls="--")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("layer")
    ax.set_ylabel("mean of w_dist_neg / w_dist")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)
