"""The report's blocks for one model: each reads its stored results, draws its figure and writes its caption,
or gives a note with the command that produces what is missing."""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from negdb.report import captions as cap
from negdb.report import data, figures
from negdb.report.page import Block
from negdb.store.catalog import Catalog

ANALYZE_ARGS = {"pos": ("--top", "1%"), "layers": ("--top", "1%")}
"""Arguments the note's ``negdb analyze KIND`` command needs besides --model (the paper's main set)."""
NEURON_STATS_SHOWN = ("w_dist", "w_dist_neg", "w_dist_pos", "w_pct", "mean", "std", "skew", "kurtosis", "frac_neg",
                      "mean_neg", "mean_pos", "min", "max", "md", "n")


@dataclass
class Context:
    """What every block of one model's section needs."""

    cat: Catalog
    store: Path | str
    facts: data.ModelFacts
    prefix: str
    folder: Path
    figures: list[Path] = field(default_factory=list)

    @property
    def model(self) -> str:
        return self.facts.model_id

    def command(self, *args: str, extra: tuple[str, ...] = ()) -> str:
        """A negdb command line for this store and model: ``negdb --store S ARGS --model M EXTRA``."""
        return " ".join(["negdb", "--store", shlex.quote(str(self.store)), *args, "--model",
                         shlex.quote(self.model), *extra])

    def draw(self, key: str, fn: Callable[..., Path], *args: Any) -> str:
        """Draw one figure into the report folder; its file name."""
        name = f"{self.prefix}-{key}.png"
        fn(*args, path=self.folder / name)
        self.figures.append(self.folder / name)
        return name

    def key(self, name: str) -> str:
        return f"{self.prefix}-{name}"


# ------------------------------------------------------------------------------------------------- statistics


def statistics(ctx: Context, revision: str | None, neuron: tuple[int, int] | None, bins: int) -> list[Block]:
    """The w_dist distribution per layer and the example neuron's histogram against its Gaussian."""
    wd_block = Block(ctx.key("wdist"), "w_dist distribution per layer")
    nb = Block(ctx.key("neuron"), "An example Wasserstein neuron")
    if revision is None:
        for b in (wd_block, nb):
            b.note = f"No neuron statistics of {ctx.model} are stored."
            b.command = ctx.command("ingest")
        return [wd_block, nb]
    from negdb.query.sets import resolve_keys

    keys = resolve_keys(ctx.cat, ctx.model, revision)
    wd = data.wdist(ctx.cat, keys)
    layer, index = neuron if neuron is not None else data.top_neuron(wd.values)
    rep = data.neuron(ctx.cat, keys, layer, index, bins)  # first: a bad --neuron fails before any drawing
    head = [cap.model_text(ctx.facts, [keys.revision]), cap.slice_text(wd.slice, wd.spec)]
    wd_block.image = ctx.draw("wdist", figures.wdist, wd.values, wd.per_layer,
                              f"{short_name(ctx.model)}@{keys.revision}: w_dist per layer")
    wd_block.alt = f"Box plot of w_dist per layer of {ctx.model} at {keys.revision}, top-1% thresholds marked"
    wd_block.caption = [*head, "Boxes: quartiles of w_dist over the layer's neurons; whiskers: 1st and 99th "
                        "percentiles; points beyond them: single neurons. Red bars: the top-1% threshold, the k-th "
                        "largest w_dist of the layer with k = max(1, round(0.01 x neurons)): the paper's "
                        "Wasserstein neurons lie at or above it."]
    wd_block.tables = [("w_dist per layer", wd.per_layer)]

    how = "chosen with --neuron" if neuron is not None else "the highest w_dist of the checkpoint"
    stats = pl.DataFrame({"statistic": [c for c in NEURON_STATS_SHOWN if c in rep.stats],
                          "value": [_float(rep.stats[c]) for c in NEURON_STATS_SHOWN if c in rep.stats]})
    nb.title = f"Example neuron: layer {layer}, neuron {index} ({how})"
    nb.tables = [("statistics of the neuron", stats)]
    if rep.histogram is None:
        nb.note = " ".join(rep.notes) or "Its activations are not stored."
        nb.command = ctx.command("ingest", extra=("--checkpoints", keys.revision, "--activations", "all"))
        return [wd_block, nb]
    h = rep.histogram
    nb.image = ctx.draw("neuron", figures.neuron, h, f"{short_name(ctx.model)}@{keys.revision} layer {layer} "
                                                    f"neuron {index}: w_dist {cap.num(_float(rep.stats['w_dist']))}")
    nb.alt = f"Histogram of the pre-activations of layer {layer} neuron {index} against its fitted Gaussian"
    nb.caption = [*head, f"Histogram of the neuron's {h.n:,} stored pre-activations in {len(h.counts)} bins "
                  "(left: counts, right: log counts). Black line: expected counts of the Gaussian with the stored "
                  f"mean {cap.num(h.mean)} and standard deviation {cap.num(h.std)} (ddof 0). Shaded: x < 0, the "
                  "region the neg intervention sets to zero."]
    return [wd_block, nb]


def _float(v: Any) -> float | None:
    return None if v is None else float(v)


def short_name(model: str) -> str:
    """A model key for titles: the folder name of a local model's absolute path, else the key itself."""
    return Path(model).name if "/" in model and Path(model).is_absolute() else model


# ------------------------------------------------------------------------------------------------- ablation


def ablation(ctx: Context, ablation_id: str | None) -> list[Block]:
    """Ablation against controls (delta with CI per benchmark) and the grammar-vs-suite double dissociation."""
    ab_block = Block(ctx.key("ablation"), "Ablation against controls")
    dd = Block(ctx.key("dissociation"), "Double dissociation: grammar against the suite")
    if ablation_id is None:
        for b in (ab_block, dd):
            b.note = f"No stored ablation of {ctx.model}."
            b.command = ctx.command("ablate", extra=("--top", "1%", "--mode", "neg", "--evals",
                                                     "ppl,blimp,tse,suite", "--controls", "random,ppl-matched"))
        return [ab_block, dd]
    ab = data.ablation(ctx.cat, ablation_id)
    labels = {c["name"]: c["label"] for c in ab.conditions}
    conds = [(c["name"], c["label"]) for c in ab.conditions[1:]]
    main = next((c for c in ab.conditions if c["name"] == "ablation"), None)
    what = [f"Ablation {ablation_id} (`negdb results --show {ablation_id}`): mode {ab.config.get('mode')} on "
            f"{main['n_neurons'] if main else '?'} neurons selected by "
            + ", ".join(f"{k}={ab.config[k]}" for k in ("top", "where", "set_name", "layers") if ab.config.get(k))
            + ". Conditions: " + "; ".join(
                f"{c['label']} ({c['n_neurons']} neurons{', ' + c['note'] if c['note'] else ''})"
                for c in ab.conditions[1:]) + "."]
    boot = cap.bootstrap_text(ab.comparison.n_boot, ab.comparison.seed,
                              "items resampled within BLiMP paradigms and TSE phenomena, windows for perplexity, "
                              "the same draw for both conditions")
    head = [cap.model_text(ctx.facts, [ab.revision]), *what, cap.evals_text(ab.evals), boot]
    ab_block.image = ctx.draw("ablation", figures.ablation, ab.rows, conds,
                              f"{short_name(ctx.model)}@{ab.revision}: {ab.config.get('mode')}-ablation vs controls")
    ab_block.alt = "Delta against the baseline with 95% confidence intervals per benchmark and metric, per condition"
    ab_block.caption = [*head, "Markers: delta of each condition against the unablated baseline; bars: 95% CI. "
                        "Summary rows: grammar = mean of BLiMP acc_sum and TSE acc_mean; suite = mean of the suite "
                        "benchmarks' primary accuracies (each benchmark weighs the same)."]
    ab_block.tables = [("comparison: value (delta [95% CI])", _wide(ab.rows, conds))]

    points = data.dissociation(ab.rows)
    if points.height == 0:
        dd.note = (f"Ablation {ablation_id} has no grammar (BLiMP/TSE) and suite rows to set against each other.")
        dd.command = ctx.command("ablate", extra=("--top", "1%", "--mode", "neg", "--evals", "ppl,blimp,tse,suite"))
        return [ab_block, dd]
    dd.image = ctx.draw("dissociation", figures.dissociation, points, labels,
                        f"{short_name(ctx.model)}@{ab.revision}: grammar vs suite")
    dd.alt = "Grammar delta against suite delta per condition with 95% confidence intervals"
    dd.caption = [*head, f"x: delta of {points['x_row'][0]} against the baseline; y: delta of "
                  f"{points['y_row'][0]} (the summary rows when both grammar benchmarks / several suite benchmarks "
                  "were run, else the one benchmark's primary metric). A grammar-specific effect lies left of 0 "
                  "near y = 0."]
    dd.tables = [("points", points.with_columns(pl.col("condition").replace(labels)))]
    return [ab_block, dd]


def _wide(rows: pl.DataFrame, conds: list[tuple[str, str]]) -> pl.DataFrame:
    keys = list(dict.fromkeys(zip(rows["benchmark"].to_list(), rows["metric"].to_list())))
    by = {(r["benchmark"], r["metric"], r["condition"]): r for r in rows.iter_rows(named=True)}
    out = []
    for b, m in keys:
        first = next(by[(b, m, c)] for c, _ in conds if (b, m, c) in by)
        line: dict[str, Any] = {"benchmark": b, "metric": m, "n": first["n"], "baseline": first["baseline"]}
        for c, label in conds:
            r = by.get((b, m, c))
            line[label] = ("" if r is None else f"{cap.num(r['value'])} ({r['delta']:+.4g} "
                                                f"[{r['lo']:+.4g}, {r['hi']:+.4g}])")
        out.append(line)
    return pl.DataFrame(out)


# ------------------------------------------------------------------------------------------------- analyses


def _analysis_head(ctx: Context, an: data.AnalysisData, revisions: list[str]) -> list[str]:
    """Model and checkpoints, the analysis and its arguments, the statistics slice of its checkpoint (where
    stored) and the evaluations it read."""
    abl = an.summary.get("ablation_id") if isinstance(an.summary, dict) else None
    lines = [cap.model_text(ctx.facts, revisions),
             f"Analysis {an.analysis_id} (negdb analyze {an.kind}, stored {cap.when(an.created_at)})"
             + (f", reading ablation {abl}" if abl else "") + ". " + cap.config_text(an.config)]
    revision = data.stats_revision(ctx.cat, ctx.model, an.revision)
    if revision is not None and (an.revision is None or revision == an.revision):
        from negdb.query.sets import resolve_keys

        keys = resolve_keys(ctx.cat, ctx.model, revision)
        lines.append(cap.slice_text(*data.slice_info(ctx.cat, keys), lead=f"Neuron statistics of {revision}"))
    if an.evals.height:
        lines.append(cap.evals_text(an.evals))
    return lines


def _ci_line(an: data.AnalysisData, over: str, paired: bool = True) -> str:
    n_boot = an.config.get("n_boot")
    seed = an.config.get("seed")
    if n_boot is None:
        return f"CIs: 95% bootstrap intervals as stored ({over})."
    return cap.bootstrap_text(n_boot, seed, over, paired)


def missing(ctx: Context, kind: str, title: str, extra: str = "") -> Block:
    b = Block(ctx.key(kind), title)
    b.note = f"No stored {kind} analysis of {ctx.model}.{extra}"
    b.command = ctx.command("analyze", kind, extra=ANALYZE_ARGS.get(kind, ()))
    return b


def _opened(ctx: Context, analysis_id: str, key: str, table: str, title: str) -> tuple[Any, pl.DataFrame, Block]:
    """A stored analysis, its ``table`` and the section's block (noting when the table has no rows)."""
    an = data.analysis(ctx.cat, analysis_id)
    df = an.tables[table]
    b = Block(ctx.key(key), title)
    if df.height == 0:
        b.note = f"Analysis {analysis_id} stored no rows."
    return an, df, b


def pos(ctx: Context, analysis_id: str | None) -> list[Block]:
    title = "Excess surprisal per part of speech"
    if analysis_id is None:
        return [missing(ctx, "pos", title)]
    an, df, b = _opened(ctx, analysis_id, "pos", "pos_surprisal", title)
    if df.height == 0:
        return [b]
    df = _series(df, f"{an.config.get('mode', 'neg')}-ablation")
    series = list(dict.fromkeys(df["series"].to_list()))
    function_tags = set(df.filter(pl.col("function_word").fill_null(False))["tag"].to_list())
    ranked = (df.filter((pl.col("series") == series[0]) & (pl.col("tag") != "ALL"))
              .sort(["function_word", "excess"], descending=[True, True], nulls_last=True)["tag"].to_list())
    tags = [*ranked, *sorted(set(df.filter(pl.col("tag") != "ALL")["tag"].to_list()) - set(ranked))]
    b.image = ctx.draw("pos", figures.pos, df, series, tags, function_tags,
                       f"{short_name(ctx.model)}: excess surprisal per POS tag")
    b.alt = "Bar chart of the mean excess surprisal per part-of-speech tag per condition with 95% CIs"
    every = df.filter(pl.col("tag") == "ALL")
    overall = "; ".join(f"{r['series']}: {cap.num(r['excess'])} nats/token" for r in every.iter_rows(named=True))
    b.caption = [*_analysis_head(ctx, an, [an.revision] if an.revision else []),
                 "Excess surprisal of a token: its NLL under the condition minus under the baseline (nats); bars: "
                 "the mean over the tokens of each spaCy universal POS tag (by largest character overlap). "
                 "Shaded, bold: function-word tags." + (f" Over all tokens: {overall}." if overall else ""),
                 _ci_line(an, "windows resampled, the same draw for both conditions")]
    b.tables = [("per tag", df.select("series", "tag", "function_word", "n_tokens", "baseline_nll", "ablated_nll",
                                      "excess", "lo", "hi", "share", "token_share")
                 .sort(["series", "function_word", "excess"], descending=[False, True, True], nulls_last=True))]
    return [b]


def _series(df: pl.DataFrame, ablation_label: str) -> pl.DataFrame:
    """A ``series`` column: the condition (``ablation`` as ``ablation_label``), with its seed when a condition
    was stored for several seeds."""
    seeds = df.group_by("condition").agg(pl.col("seed").n_unique().alias("k"))
    multi = set(seeds.filter(pl.col("k") > 1)["condition"].to_list())
    name = pl.col("condition").replace({"ablation": ablation_label})
    return df.with_columns(pl.when(pl.col("condition").is_in(list(multi)))
                           .then(pl.format("{} s{}", name, pl.col("seed")))
                           .otherwise(name).alias("series"))


def _span(layers: list[int] | None) -> str:
    if not layers:
        return "–"
    ls = sorted(layers)
    return f"{ls[0]}-{ls[-1]}" if ls == list(range(ls[0], ls[-1] + 1)) and len(ls) > 1 else ",".join(map(str, ls))


def layers(ctx: Context, analysis_id: str | None) -> list[Block]:
    title = "Layer groups: ablated alone and cumulatively"
    if analysis_id is None:
        return [missing(ctx, "layers", title)]
    an = data.analysis(ctx.cat, analysis_id)
    df = an.tables["layer_effects"].filter(pl.col("grp").is_null())
    b = Block(ctx.key("layers"), title)
    with_ci = df.filter(pl.col("lo").is_not_null())
    df = with_ci if with_ci.height else df  # the compared rows (with CIs), not every stored metric
    # the headline level of each benchmark/metric: macro over groups where stored, else overall
    levels = df.group_by("benchmark", "metric").agg(
        pl.when(pl.col("level").eq("macro").any()).then(pl.lit("macro")).otherwise(pl.lit("overall")).alias("pick"))
    df = df.join(levels, on=["benchmark", "metric"]).filter(pl.col("level") == pl.col("pick")).drop("pick")
    if df.height == 0:
        b.note = f"Analysis {analysis_id} stored no overall or macro rows."
        return [b]
    panels = list(dict.fromkeys(zip(df["benchmark"].to_list(), df["metric"].to_list())))
    group_labels: dict[int, str] = {}
    for r in df.filter(pl.col("variant") == "alone").iter_rows(named=True):  # a group's own layers
        group_labels.setdefault(int(r["group"]), _span(r["layers"]))
    for g in df["group"].unique().to_list():
        group_labels.setdefault(int(g), str(g))
    b.image = ctx.draw("layers", figures.layers, df, panels, group_labels,
                       f"{short_name(ctx.model)}: ablation by layer group")
    b.alt = "Delta against the baseline per layer group, alone and cumulative, per benchmark, with 95% CI bands"
    b.caption = [*_analysis_head(ctx, an, [an.revision] if an.revision else []),
                 "alone: only the set members in the group's layers are ablated; cumulative: the members in groups "
                 "0 up to this one. Lines: delta against the unablated baseline at the benchmark's headline level "
                 "(macro over groups for BLiMP/TSE, else overall); bands: 95% CI.",
                 _ci_line(an, "items resampled within groups, windows for perplexity")]
    spans = pl.Series("layers", [_span(x) for x in df["layers"].to_list()], dtype=pl.String)
    b.tables = [("per group", df.with_columns(spans).select(
        "variant", "group", "layers", "n_neurons", "benchmark", "metric", "level", "baseline", "value", "delta",
        "lo", "hi").sort("benchmark", "metric", "variant", "group"))]
    return [b]


def training(ctx: Context, analysis_id: str | None) -> list[Block]:
    title = "Training dynamics"
    if analysis_id is None:
        return [missing(ctx, "training", title, " It needs several ingested checkpoints "
                        "(`negdb ingest --checkpoints every:K`).")]
    an, df, b = _opened(ctx, analysis_id, "training", "training_dynamics", title)
    if df.height == 0:
        return [b]
    series = data.training_series(df)
    _, x_label = data.training_x(df)
    effects = data.training_effects(series)
    revisions = list(dict.fromkeys(series.sort("x")["revision"].to_list()))
    b.image = ctx.draw("training", figures.training, series, x_label, effects,
                       f"{short_name(ctx.model)}: across training")
    b.alt = "Training curves: w_dist quantiles, top-1% cohort, overlaps and the ablation delta against the step"
    b.caption = [*_analysis_head(ctx, an, revisions),
                 f"x: {x_label}. Curves: the all-layer value of each stored quantity per checkpoint (the mean over "
                 "layers where only per-layer values are stored): w_dist_* = mean, percentiles and maximum over all "
                 "neurons; top_w_dist_mean = mean w_dist of the checkpoint's own top-1% set; cohort_w_dist_mean = "
                 "of the final checkpoint's top-1% set (the cohort) followed back; overlap_final / overlap_prev = "
                 "Jaccard overlap of the checkpoint's top-1% set with the final / previous checkpoint's; "
                 + ("delta_<condition> = the ablation effect on "
                    + ", ".join(f"{b} {m}" for b, m in effects) + " at that checkpoint (value minus baseline), "
                    "band = 95% CI; the table holds every benchmark." if effects else "no ablation effect is stored."),
                 _ci_line(an, "items resampled within groups, windows for perplexity")]
    wide = series.select("x", "revision", "series", "value").pivot("series", index=["x", "revision"],
                                                                     values="value").sort("x")
    b.tables = [("per checkpoint (all layers)", wide.rename({"x": x_label}))]
    return [b]


def pairs(ctx: Context, analysis_id: str | None) -> list[Block]:
    title = "Negative share of non-Gaussianity and differentiated token pairs"
    if analysis_id is None:
        return [missing(ctx, "pairs", title)]
    an = data.analysis(ctx.cat, analysis_id)
    share, pr = an.tables["neg_share"], an.tables["diff_pairs"]
    b = Block(ctx.key("pairs"), title)
    revisions = sorted({*share["revision"].drop_nulls().to_list(), *pr["revision"].drop_nulls().to_list()})
    if share.height:
        b.image = ctx.draw("negshare", figures.neg_share, share, f"{short_name(ctx.model)}: negative share of w_dist")
        b.alt = "Per layer, the mean share of w_dist in the negative region, per neuron selection, with 95% CI bands"
        b.caption = [*_analysis_head(ctx, an, revisions or ([an.revision] if an.revision else [])),
                     "Per layer and neuron selection (top1: the layer's top 1% by w_dist; rest; all): mean over "
                     "neurons of w_dist_neg / w_dist, band = 95% CI; dashed: an even split.",
                     _ci_line(an, "neurons resampled", paired=False)]
        b.tables.append(("per layer (layer – : all layers pooled)", share.sort("layer", "selection",
                                                                                 nulls_last=True)))
    else:
        b.note = f"Analysis {analysis_id} stored no negative-share rows."
    if pr.height:
        top = pr.sort(["rank", "ratio"], descending=[False, True]).select(
            "layer", "neuron", "rank", "context_a", "x_a", "context_b", "x_b", "d_in", "d_out", "ratio", "signs")
        b.tables.append(("most differentiated token pairs (d_out / d_in, as md)", top.head(12)))
    return [b]


def sweep(ctx: Context, analysis_ids: list[str]) -> list[Block]:
    """Each stored sweep's figures (:func:`negdb.report.sweep_figures.sweep_figures`), each with its table."""
    from negdb.report.sweep_figures import sweep_figures

    title = "Sweep: dose-response, selectivity, sign and selector contrasts"
    if not analysis_ids:
        b = Block(ctx.key("sweep"), title)
        b.note = f"No stored sweep of {ctx.model}."
        b.command = ctx.command("sweep")
        return [b]
    blocks = []
    for analysis_id in analysis_ids:
        tag = analysis_id[:8]
        head = data.analysis_head(ctx.cat, analysis_id)
        figs = sweep_figures(ctx.cat, ctx.model, ctx.folder, analysis_id)
        if not figs:
            b = Block(ctx.key(f"sweep-{tag}"), title)
            b.note = f"Sweep {analysis_id} stored no summary rows."
            blocks.append(b)
            continue
        lead = [cap.model_text(ctx.facts, [head["revision"]] if head["revision"] else []),
                f"Sweep {analysis_id} (negdb sweep, stored {cap.when(head['created_at'])})."]
        for i, fig in enumerate(figs):
            ctx.figures.append(ctx.folder / fig["png"])
            blocks.append(Block(ctx.key(f"sweep-{tag}-{i}"), f"{fig['title']} ({tag})", image=fig["png"],
                                alt=f"{fig['title']}: one line per series over the fraction of each layer "
                                    "ablated, with 95% CI bands",
                                caption=[*lead, fig["caption"]],
                                tables=[("value [95% CI] per fraction ablated", fig["table_html"])]))
    return blocks
