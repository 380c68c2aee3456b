"""The figures of a stored sweep (``negdb sweep``): dose-response curves, selectivity, sign and selector contrasts.

:func:`sweep_figures` draws one sweep of a model (the latest unless named) from ``sweep_summary`` (matplotlib Agg,
object API): lines over the fraction ablated with 95% CI bands. Each figure comes with a caption and an HTML table
of its numbers.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from matplotlib.figure import Figure

from negdb.report.data import latest_analysis
from negdb.report.figures import COLORS, DPI
from negdb.report.page import table
from negdb.store.catalog import Catalog
from negdb.sweep.render import headline

_SELECTOR_COLORS = ["#c0392b", "#2e6fb7", "#33a02c", "#6a3d9a", "#b15928", "#e08a1e", "#1f78b4", "#555555"]
_STYLES = {"ablation": "-", "random": "--", "ppl-matched": ":"}
_EXTRA_STYLES = ["-", "--", ":", "-."]
_PANEL_ORDER = {"wikitext2": 0, "grammar": 1, "suite": 2, "blimp": 3, "tse": 4}
"""Panels: perplexity and the grammar and suite means first, then BLiMP, TSE and each suite benchmark."""


def _stored(cat: Catalog, model_id: str, analysis_id: str | None) -> dict[str, Any] | None:
    aid = analysis_id or latest_analysis(cat, model_id, "sweep")
    heads = [] if aid is None else cat.sql("SELECT * FROM analyses WHERE analysis_id = ? AND kind = 'sweep' "
                                           "AND model_id = ?", [aid, model_id]).to_dicts()
    if not heads:
        return None
    head = heads[0]
    rows = cat.sql("SELECT * FROM sweep_summary WHERE analysis_id = ? ORDER BY kind, selector, mode, condition, "
                   "benchmark, metric, fraction", [aid])
    return {**head, "config": json.loads(head["config_json"]), "rows": rows}


def _caption(sw: dict[str, Any], what: str) -> str:
    c = sw["config"]
    limits = ", ".join(f"{b}={v}" for b, v in (c.get("limits") or {}).items() if v is not None) or "all items"
    seeds = c.get("seeds") or []
    return (f"{what} {sw['model_id']}@{sw['revision']} (sweep {sw['analysis_id']}): {c.get('direction')} "
            f"fraction of each layer's neurons by {', '.join(c.get('by', []))}; modes {', '.join(c.get('modes', []))};"
            f" benchmarks {', '.join(c.get('benchmarks', {}))} (items per group: {limits}; WikiText-2 tokens: "
            f"{c.get('ppl_tokens') or 'all'}; ppl-matched probes on {c.get('probe_tokens')} tokens); "
            f"{len(seeds)} seed(s) {', '.join(map(str, seeds))}. Value: mean over seeds; band: 95% percentile "
            f"interval of a paired bootstrap over items within seeds ({c.get('n_boot')} draws).")


def _x_scale(ax: Any, fractions: list[float]) -> None:
    xs = [100 * f for f in fractions]
    if xs and max(xs) / min(xs) >= 8:
        ax.set_xscale("log")
    ax.set_xticks(xs, [f"{x:g}%" for x in xs], fontsize=8)
    ax.minorticks_off()


def _panels(df: pl.DataFrame, keys: list[tuple[str, str]], series: Callable[[dict[str, Any]], tuple[str, ...]],
            style: Callable[[tuple[str, ...], int], dict[str, Any]], title: str, path: Path,
            zero: bool = True) -> None:
    """One panel per (benchmark, metric), one line with a CI band per series."""
    fractions = sorted(set(df["fraction"].to_list()))
    cols = min(3, len(keys))
    nrows = (len(keys) + cols - 1) // cols
    fig = Figure(figsize=(4.4 * cols + 0.5, 3.3 * nrows + 0.8))
    axes = np.atleast_1d(fig.subplots(nrows, cols, squeeze=False)).ravel()
    labels: dict[str, Any] = {}
    for ax, key in zip(axes, keys):
        sub = df.filter((pl.col("benchmark") == key[0]) & (pl.col("metric") == key[1]))
        groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for r in sub.iter_rows(named=True):
            groups.setdefault(series(r), []).append(r)
        for i, (name, rs) in enumerate(groups.items()):
            rs = sorted(rs, key=lambda r: r["fraction"])
            x = np.array([100 * r["fraction"] for r in rs])
            v, lo, hi = (np.array([r[c] for r in rs], dtype=float) for c in ("value", "ci_lo", "ci_hi"))
            kw = style(name, i)
            (line,) = ax.plot(x, v, marker="o", markersize=3, label=" ".join(name), **kw)
            ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.12, linewidth=0)
            labels.setdefault(" ".join(name), line)
        if zero:
            ax.axhline(0, color="#888888", linewidth=0.8)
        _x_scale(ax, fractions)
        ax.set_title(f"{key[0]} {key[1]}", fontsize=9)
        ax.set_xlabel("fraction of each layer ablated", fontsize=8)
        ax.tick_params(labelsize=8)
    for ax in axes[len(keys):]:
        ax.set_visible(False)
    fig.suptitle(textwrap.fill(title, width=int(18 * cols + 40)), fontsize=10)
    fig.legend(list(labels.values()), list(labels), loc="lower center", ncol=min(4, max(1, len(labels))),
               fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.04 + 0.025 * ((len(labels) + 3) // 4), 1, 0.95))
    fig.savefig(path, dpi=DPI, format="png", metadata={"Software": None})


def _headline_rows(df: pl.DataFrame) -> pl.DataFrame:
    keep = [headline(b, m) for b, m in zip(df["benchmark"].to_list(), df["metric"].to_list())]
    return df.filter(pl.Series(keep, dtype=pl.Boolean))


def _table(df: pl.DataFrame, label_cols: list[str]) -> str:
    """``value [lo, hi]`` per series (rows) and fraction (columns)."""
    cells = [f"{v:+.4g} [{lo:+.4g}, {hi:+.4g}]" for v, lo, hi in df.select("value", "ci_lo", "ci_hi").iter_rows()]
    pct = [f"{100 * f:g}%" for f in df["fraction"].to_list()]
    wide = (df.select(label_cols).with_columns(pl.Series("cell", cells), pl.Series("pct", pct))
            .pivot(on="pct", index=label_cols, values="cell", aggregate_function="first"))
    return table(wide, max_rows=80)


def sweep_figures(cat: Catalog, model_id: str, outdir: Path, analysis_id: str | None = None) -> list[dict[str, Any]]:
    """Figures of the latest stored sweep of ``model_id`` (or of ``analysis_id``) written into ``outdir``;
    ``[]`` when none is stored.

    Each item: ``title``, ``png`` (file name in ``outdir``), ``caption``, ``table_html``.
    """
    sw = _stored(cat, model_id, analysis_id)
    if sw is None or sw["rows"].height == 0:
        return []
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    rows: pl.DataFrame = sw["rows"]
    bys = list(sw["config"].get("by", []))
    color_of = {b: _SELECTOR_COLORS[i % len(_SELECTOR_COLORS)] for i, b in enumerate(bys)}
    tag = sw["analysis_id"][:8]
    out: list[dict[str, Any]] = []

    def keys_of(df: pl.DataFrame) -> list[tuple[str, str]]:
        ks = list(dict.fromkeys(zip(df["benchmark"].to_list(), df["metric"].to_list())))
        return sorted((k for k in ks if headline(*k)), key=lambda k: (_PANEL_ORDER.get(k[0], len(_PANEL_ORDER)), k))

    def dose_color(name: tuple[str, ...]) -> str:  # one selector: a colour per condition, else per selector
        if len(bys) == 1:
            return COLORS.get(name[1], "#555555")
        return color_of.get(name[0], COLORS.get(name[1], "#555555"))

    dose = rows.filter(pl.col("kind") == "dose")
    for mode in dict.fromkeys(dose["mode"].to_list()):
        sub = dose.filter(pl.col("mode") == mode)
        png = f"sweep-{tag}-dose-{mode}.png"
        _panels(sub, keys_of(sub), lambda r: (r["selector"], r["condition"]),
                lambda name, i: {"color": dose_color(name), "linestyle": _STYLES.get(name[1], "-")},
                f"dose-response under {mode} ablation: condition minus baseline", outdir / png)
        out.append({"title": f"Sweep: dose-response ({mode})", "png": png,
                    "caption": _caption(sw, f"Dose-response of the {mode} ablation (solid), its random control "
                                            "(dashed) and its perplexity-matched control (dotted), as the change "
                                            "from the unablated model, for"),
                    "table_html": _table(_headline_rows(sub), ["selector", "condition", "benchmark", "metric"])})
    sel = rows.filter(pl.col("kind") == "selectivity")
    if sel.height:
        modes = list(dict.fromkeys(sel["mode"].to_list()))
        png = f"sweep-{tag}-selectivity.png"
        parts = [k for k in (("selectivity", "si"), ("grammar", "loss_w_minus_pm"), ("suite", "loss_w_minus_pm"))
                 if sel.filter((pl.col("benchmark") == k[0]) & (pl.col("metric") == k[1])).height]
        _panels(sel, parts, lambda r: (r["selector"], r["mode"]),
                lambda name, i: {"color": color_of.get(name[0], "#555555"),
                                 "linestyle": _EXTRA_STYLES[modes.index(name[1]) % len(_EXTRA_STYLES)]},
                "selectivity index SI (> 0: more grammar-selective than the ppl-matched control) and its parts: "
                "SI = grammar part - suite part", outdir / png)
        out.append({"title": "Sweep: selectivity index at matched perplexity", "png": png,
                    "caption": _caption(sw, "Selectivity index SI = (L_grammar(W) - L_grammar(PM)) - (L_suite(W) - "
                                            "L_suite(PM)), L = accuracy loss, of each ablation W against its "
                                            "perplexity-matched control PM, for"),
                    "table_html": _table(sel, ["selector", "mode", "benchmark", "metric"])})
    for kind, title, what in (
            ("sign", "Sweep: sign contrast (same set, same items)",
             "Ablation under mode A minus mode B on the same set and items, for"),
            ("selector", "Sweep: selector contrast (equal fraction and mode)",
             "Ablation of the reference selector's set minus another selector's, for")):
        sub = rows.filter(pl.col("kind") == kind)
        if sub.height == 0:
            continue
        modes = list(dict.fromkeys(sub["mode"].to_list()))
        png = f"sweep-{tag}-{kind}.png"
        # colour: the selector (sign) or the selector compared with the reference (selector); line: the mode (pair)
        _panels(sub, keys_of(sub), lambda r: (r["selector"], r["mode"]),
                lambda name, i, kind=kind, modes=modes: {
                    "color": color_of.get(name[0] if kind == "sign" else name[0].split("-", 1)[-1],
                                          _SELECTOR_COLORS[i % len(_SELECTOR_COLORS)]),
                    "linestyle": _EXTRA_STYLES[modes.index(name[1]) % len(_EXTRA_STYLES)]},
                title, outdir / png)
        out.append({"title": title, "png": png, "caption": _caption(sw, what),
                    "table_html": _table(_headline_rows(sub), ["selector", "mode", "benchmark", "metric"])})
    return out
