"""``negdb analyze layers``: a neuron set ablated one layer group at a time, and cumulatively from the first.

The model's layers are split into ``groups`` contiguous groups (:func:`negdb.ablate.interventions.layer_groups`).
For each group, variant ``alone`` ablates the set's members in that group's layers only, and ``cumulative`` its
members in groups ``0..g`` (:func:`~negdb.ablate.interventions.cumulative`). Each restricted set is an ordinary
saved neuron set (content-hashed, so equal member lists are one set: alone 0 is cumulative 0, the last cumulative
group is the whole set) and each of its evaluations is a stored result (:mod:`negdb.ablate.evaluate`), computed once.
Deltas against the baseline and their 95% paired-bootstrap CIs come from :func:`negdb.ablate.compare.compare`
(headline rows: macro accuracy over groups, perplexity, the grammar mean); per-phenomenon rows (every grouping
level of ``eval_metrics``) are value, baseline and delta, with a paired-bootstrap CI over the group's items
(:func:`group_cis`). The rows are stored in ``layer_effects`` under an
analysis key (:mod:`negdb.analyze.record`), so a repeated call only reads them back.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from negdb.ablate.compare import Comparison, Condition, compare
from negdb.ablate.conditions import Engine, Loader, check_store, checkpoint_row, main_set, resolve_revision, stderr
from negdb.ablate.controls import restrict_set
from negdb.ablate.interventions import cumulative, layer_groups
from negdb.ablate.options import mode_name
from negdb.analyze.record import Timer, analysis_id, lookup, publish
from negdb.errors import BadArgument, NotFound
from negdb.evals import registry
from negdb.evals.metrics import DECISION_COLUMN, paired_bootstrap
from negdb.evals.options import Bootstrap, Sampling, Scoring, benchmarks
from negdb.evals.run import dtype_key
from negdb.query import sets as setlib
from negdb.query.setspec import SetSpec
from negdb.query.setstore import NeuronSet
from negdb.store.catalog import Catalog
from negdb.store.layout import StoreLayout
from negdb.store.results import StoredResult
from negdb.store.tables import LAYER_EFFECTS
from negdb.values import as_int, as_names

VARIANTS = ("alone", "cumulative")
HEADLINE_LEVELS = ("macro", "overall", "summary")


@dataclass(frozen=True)
class LayersSpec:
    """``negdb analyze layers`` as one value.

    Attributes:
        neurons: the set (``SetSpec``; its ``layers`` must be unset: the groups choose the layers), or a picked
            ``Selection`` / saved ``NeuronSet``.
        mode: the intervention.
        groups: contiguous layer groups (1..n_layers).
        variants: ``alone`` (a group's layers only) and/or ``cumulative`` (groups 0..g).
        evals, sampling, scoring, bootstrap: as ``negdb ablate``.
    """

    neurons: Any
    mode: str = "neg"
    groups: int = 8
    variants: tuple[str, ...] = VARIANTS
    evals: tuple[str, ...] = ("ppl", "blimp", "tse")
    sampling: Sampling = field(default_factory=Sampling)
    scoring: Scoring = field(default_factory=Scoring)
    bootstrap: Bootstrap = field(default_factory=Bootstrap)

    def __post_init__(self) -> None:
        if isinstance(self.neurons, SetSpec) and self.neurons.layers is not None:
            raise BadArgument("analyze layers chooses the layers itself: drop --layers")
        object.__setattr__(self, "mode", mode_name(self.mode))
        object.__setattr__(self, "groups", as_int(self.groups, "groups", minimum=1))
        variants = as_names(self.variants, "variants")
        bad = [v for v in variants if v not in VARIANTS]
        if bad or not variants:
            raise BadArgument(f"unknown --variants {','.join(bad) or '(empty)'}: use {', '.join(VARIANTS)} "
                              "(comma-separated)")
        object.__setattr__(self, "variants", variants)
        benchmarks(self.evals)
        object.__setattr__(self, "evals", as_names(self.evals, "evals"))

    @property
    def benchmarks(self) -> tuple[str, ...]:
        return benchmarks(self.evals)


@dataclass(frozen=True)
class GroupSet:
    """One (variant, group): its layers and the main set restricted to them (``None``: no members there)."""

    variant: str
    index: int
    layers: list[int]
    neuron_set: NeuronSet | None

    @property
    def key(self) -> str:
        """The condition evaluated for it: the set's id, or ``none`` (nothing to ablate)."""
        return "none" if self.neuron_set is None else self.neuron_set.set_id


@dataclass
class LayerAnalysis:
    """What :func:`run` did (or read back): the ``layer_effects`` rows and the analysis record."""

    analysis_id: str
    model_id: str
    revision: str
    groups: list[list[int]]
    rows: list[dict[str, Any]]
    config: dict[str, Any]
    summary: dict[str, Any]
    computed: int = 0
    reused: int = 0
    from_store: bool = False
    plan: list[GroupSet] = field(default_factory=list)

    def frame(self) -> pl.DataFrame:
        """The ``layer_effects`` rows (every variant, group, benchmark, metric and grouping level)."""
        return pl.DataFrame(self.rows, infer_schema_length=None)

    def headline(self) -> list[dict[str, Any]]:
        """The rows with a CI: per (variant, group) and benchmark metric at its headline level."""
        return [r for r in self.rows if r["level"] in HEADLINE_LEVELS and r["ci_lo"] is not None]

    def render(self, fmt: str = "table") -> str:
        if fmt == "json":
            return json.dumps({"analysis_id": self.analysis_id, "model_id": self.model_id, "revision": self.revision,
                               "groups": self.groups, "config": self.config, "summary": self.summary,
                               "rows": self.rows}, indent=2, default=str)
        if fmt == "csv":
            buf = io.StringIO()
            w = csv.DictWriter(buf, fieldnames=[c for c, _, _ in LAYER_EFFECTS.columns])
            w.writeheader()
            w.writerows([{**r, "layers": " ".join(map(str, r["layers"]))} for r in self.rows])
            return buf.getvalue()
        if fmt != "table":
            raise BadArgument(f"unknown format {fmt!r}: use table, json or csv")
        return _table(self)


# ------------------------------------------------------------------------------------------ groups and sets


def plan_groups(cat: Catalog, main: NeuronSet, groups: list[list[int]], variants: list[str]) -> list[GroupSet]:
    """Every (variant, group) with its layers and restricted set, variants in the order given."""
    layer_sets = {"alone": groups, "cumulative": cumulative(groups)}
    cache: dict[tuple[int, ...], NeuronSet | None] = {}
    out = []
    for variant in variants:
        for g, layers in enumerate(layer_sets[variant]):
            key = tuple(layers)
            if key not in cache:
                cache[key] = restrict_set(cat, main, list(layers))
            out.append(GroupSet(variant, g, list(layers), cache[key]))
    return out


def _n_layers(cat: Catalog, model_id: str) -> int:
    rows = cat.arrow("SELECT max(n_layers) AS n FROM models WHERE model_id = ?", [model_id]).to_pylist()
    if not rows or rows[0]["n"] is None:
        raise NotFound(f"{model_id} has no models row: run `negdb ingest --model {model_id}` first")
    return int(rows[0]["n"])


# ------------------------------------------------------------------------------------------ rows


def _headline_level(bench: str, metric: str) -> str:
    if bench not in registry.benchmarks():
        return "summary"
    return "macro" if registry.get(bench).group is not None and metric != "ppl" else "overall"


def _metric_rows(res: StoredResult) -> dict[tuple[str, str, str | None], tuple[float, int]]:
    return {(r["metric"], r["level"], r["grp"]): (r["value"], r["n"]) for r in res.metrics().iter_rows(named=True)}


def _group_labels(frame: pl.DataFrame, level: str, group_field: str | None) -> list[str | None]:
    """Each item's group at ``level``: the item's ``grp`` for the benchmark's own grouping, else its meta field."""
    if level == group_field:
        return [None if g is None else str(g) for g in frame["grp"].to_list()]
    metas = [json.loads(m) if m else {} for m in frame["meta_json"].to_list()]
    return [None if level not in m else str(m[level]) for m in metas]


def group_cis(res: StoredResult, base: StoredResult, bench: str, metric: str, *, n_boot: int, seed: int
              ) -> dict[tuple[str, str], tuple[float, float]]:
    """95% paired-bootstrap CI of the accuracy delta of every (grouping level, group): its items resampled."""
    column = DECISION_COLUMN.get(metric)
    spec = registry.get(bench)
    if column is None or spec.group is None:
        return {}
    a, b = res.items(), base.items()
    if a["item"].to_list() != b["item"].to_list():
        return {}
    da, db = a[column].cast(pl.Float64).to_numpy(), b[column].cast(pl.Float64).to_numpy()
    out: dict[tuple[str, str], tuple[float, float]] = {}
    for level in dict.fromkeys([spec.group, *spec.meta]):
        labels = np.array(_group_labels(a, level, spec.group), dtype=object)
        for grp in dict.fromkeys(g for g in labels.tolist() if g is not None):
            mask = labels == grp
            _, lo, hi = paired_bootstrap(da[mask], db[mask], n_boot=n_boot, seed=seed)
            out[(level, grp)] = (lo, hi)
    return out


def effect_rows(plan: list[GroupSet], base: Condition, conds: dict[str, Condition], cmp: Comparison, *,
                n_boot: int = 1000, seed: int = 0) -> list[dict[str, Any]]:
    """``layer_effects`` rows (without ``analysis_id``): headline rows from ``cmp``, the rest from eval_metrics
    (per-group rows with :func:`group_cis`)."""
    by_cond: dict[str, list[Any]] = {}
    for r in cmp.rows:
        by_cond.setdefault(r.condition, []).append(r)
    out: list[dict[str, Any]] = []
    for gs in plan:
        cond = conds[gs.key]
        head = {"variant": gs.variant, "group_index": gs.index, "layers": gs.layers,
                "set_id": None if gs.neuron_set is None else gs.neuron_set.set_id, "n_neurons": cond.n_neurons}
        done = set()
        for r in by_cond.get(gs.key, []):
            level = _headline_level(r.benchmark, r.metric)
            ids = ({"result_id": cond.results[r.benchmark][0].result_id,
                    "baseline_id": base.results[r.benchmark][0].result_id} if level != "summary" else {})
            out.append({**head, "benchmark": r.benchmark, "metric": r.metric, "level": level, "grp": None,
                        "n": r.n, "baseline": r.baseline, "value": r.value, "delta": r.delta, "ci_lo": r.lo,
                        "ci_hi": r.hi, **ids})
            done.add((r.benchmark, r.metric, level))
        for bench, results in cond.results.items():
            res, res0 = results[0], base.results[bench][0]
            values, baseline = _metric_rows(res), _metric_rows(res0)
            cis: dict[str, dict[tuple[str, str], tuple[float, float]]] = {}
            for (metric, level, grp), (value, n) in values.items():
                if (bench, metric, level) in done or (metric, level, grp) not in baseline:
                    continue
                if grp is not None and metric not in cis:
                    cis[metric] = group_cis(res, res0, bench, metric, n_boot=n_boot, seed=seed)
                lo, hi = (None, None) if grp is None else cis[metric].get((level, grp), (None, None))
                b = baseline[(metric, level, grp)][0]
                out.append({**head, "benchmark": bench, "metric": metric, "level": level, "grp": grp, "n": n,
                            "baseline": b, "value": value, "delta": value - b, "ci_lo": lo, "ci_hi": hi,
                            "result_id": res.result_id, "baseline_id": res0.result_id})
    return out


# ------------------------------------------------------------------------------------------ run


def _config(spec: LayersSpec, main: NeuronSet, ck: dict[str, Any], benches: list[str],
            groups: list[list[int]]) -> dict[str, Any]:
    """Every argument that changes the numbers (the analysis key; the same keys as before issue 12)."""
    return {"model_id": ck["model_id"], "revision": ck["revision"], "commit": ck["commit"], "set_id": main.set_id,
            "mode": spec.mode, "groups": groups, "variants": list(spec.variants),
            "benchmarks": {b: registry.spec_hash(b) for b in benches}, "limits": spec.sampling.limits(benches),
            "ppl_tokens": spec.sampling.ppl_tokens, "sample_seed": spec.sampling.seed,
            "bos": spec.scoring.bos_policy.value, "window": spec.scoring.window, "n_boot": spec.bootstrap.n_boot,
            "seed": spec.bootstrap.seed, "group_cis": True, **dtype_key(spec.scoring.dtype)}


def _stored_rows(layout: StoreLayout, aid: str) -> list[dict[str, Any]]:
    found = layout.read_segment(LAYER_EFFECTS.name, aid)
    return [] if found is None else found.to_pylist()


def run(spec: LayersSpec, store: str | Path, *, device: str = "auto", progress: bool = True,
        log: Callable[[str], None] = stderr) -> LayerAnalysis:
    """Run (or read back) the layer-group analysis ``spec`` in ``store``; see the module docstring."""
    timer = Timer()
    layout = StoreLayout.at(store)
    check_store(layout, getattr(spec.neurons, "model", "MODEL"))
    benches = list(spec.benchmarks)
    boot = spec.bootstrap
    with Catalog(layout.location) as cat:
        n = spec.neurons
        n_layers = _n_layers(cat, setlib.resolve_model(cat, n.model) if isinstance(n, SetSpec) else n.keys.model_id)
        if spec.groups > n_layers:
            raise BadArgument(f"--groups {spec.groups} is more than the model's {n_layers} layers: use 1..{n_layers}")
        groups = layer_groups(n_layers, spec.groups)
        main = main_set(cat, n)
        model_id = main.keys.model_id
        revision = resolve_revision(cat, main, getattr(spec.neurons, "checkpoint", None))
        ck = checkpoint_row(cat, model_id, revision)
        config = _config(spec, main, ck, benches, groups)
        aid = analysis_id("layers", config)
        stored = lookup(layout, aid)
        if stored is not None:
            return LayerAnalysis(aid, model_id, revision, groups, _stored_rows(layout, aid), config,
                                 json.loads(stored["summary_json"]), from_store=True)
        engine = Engine(layout, cat, ck, spec.scoring,
                        get_lm=Loader(model_id, revision, device, log, spec.scoring.dtype),
                        progress=progress, log=log)
        plan = plan_groups(cat, main, groups, list(spec.variants))
        log(f"{model_id}@{revision}: {spec.mode} ablation of {main.n_members} neurons (set {main.name}) in "
            f"{len(groups)} layer groups ({', '.join(spec.variants)}), evals {', '.join(benches)}")
        base = engine.baseline(benches, spec.sampling)
        conds: dict[str, Condition] = {}
        for gs in plan:
            if gs.key in conds:
                continue  # an equal set was evaluated already
            if gs.neuron_set is None:
                conds[gs.key] = Condition(gs.key, "no neurons", base.results, n_neurons=0)
                continue
            conds[gs.key] = engine.condition(gs.key, f"{gs.variant} {gs.index}", [gs.neuron_set], spec.mode, benches,
                                             spec.sampling)
        cmp = compare(base, list(conds.values()), n_boot=boot.n_boot, seed=boot.seed)
        rows = effect_rows(plan, base, conds, cmp, n_boot=boot.n_boot, seed=boot.seed)
        summary = {"set_id": main.set_id, "set_name": main.name, "n_neurons": main.n_members,
                   "baseline": {b: r[0].result_id for b, r in base.results.items()},
                   "results": {k: {b: r[0].result_id for b, r in c.results.items()} for k, c in conds.items()
                               if k != "none"},
                   "computed": engine.computed, "reused": engine.reused}
        row = publish(layout, aid, kind="layers", model_id=model_id, revision=revision, config=config,
                      summary=summary, seconds=timer.seconds, tables={LAYER_EFFECTS: rows})
        cat.refresh()
        return LayerAnalysis(aid, model_id, revision, groups, _stored_rows(layout, aid), config,
                             json.loads(row["summary_json"]), engine.computed, engine.reused, plan=plan)


# ------------------------------------------------------------------------------------------ table


def _span(layers: list[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``0-2,5``."""
    runs: list[list[int]] = []
    for i in layers:
        if runs and runs[-1][-1] == i - 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    return ",".join(str(r[0]) if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs)


def _fmt(value: float, metric: str) -> str:
    return f"{value:.3f}" if metric == "ppl" else f"{value:.4f}"


def _table(an: LayerAnalysis) -> str:
    head_rows = an.headline()
    cols = list(dict.fromkeys((r["benchmark"], r["metric"]) for r in head_rows
                              if r["level"] == "summary" or r["metric"] == registry.get(r["benchmark"]).metrics[0]))
    cols.sort(key=lambda c: c[0] in ("grammar", "suite"))
    by = {(r["variant"], r["group_index"], r["benchmark"], r["metric"]): r for r in head_rows}
    keys = list(dict.fromkeys((r["variant"], r["group_index"]) for r in an.rows))
    lines = [["variant", "group", "layers", "neurons", *[f"{b} {m}" for b, m in cols]]]
    base = []
    for b, m in cols:
        r = next(r for r in head_rows if (r["benchmark"], r["metric"]) == (b, m))
        base.append(_fmt(r["baseline"], m))
    lines.append(["baseline", "", "", "0", *base])
    for variant, g in keys:
        first = next(r for r in an.rows if (r["variant"], r["group_index"]) == (variant, g))
        cells = []
        for b, m in cols:
            r = by.get((variant, g, b, m))
            cells.append("" if r is None else f"{r['delta']:+.4f} [{r['ci_lo']:+.4f}, {r['ci_hi']:+.4f}]")
        lines.append([variant, str(g), _span(first["layers"]), str(first["n_neurons"]), *cells])
    widths = [max(len(row[i]) for row in lines) for i in range(len(lines[0]))]
    out = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in lines]
    out.insert(1, "  ".join("-" * w for w in widths))
    boot = f"{an.config['n_boot']} draws, seed {an.config['seed']}"
    out += ["", f"baseline value, then delta vs baseline [95% CI, paired bootstrap over items ({boot}); windows for "
            "ppl]; accuracy macro over groups (BLiMP paradigms, TSE phenomena); grammar = mean of BLiMP acc_sum "
            "and TSE acc_mean.",
            f"per phenomenon: negdb sql \"SELECT * FROM layer_effects WHERE analysis_id = '{an.analysis_id}'\""]
    return "\n".join(out)


__all__ = ["GroupSet", "LayerAnalysis", "LayersSpec", "VARIANTS", "effect_rows", "plan_groups", "run"]
