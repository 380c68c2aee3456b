"""``negdb analyze training``: ``w_dist``, the top-1% sets and the ablation effect across training checkpoints.

For the selected checkpoints ``c_1 .. c_m`` of one model (training order; ``F = c_m`` is the *final* one), each
checkpoint is ingested unless stored (:func:`negdb.ingest.pipeline.ingest`, a no-op for stored statistics), its
top set ``T_c`` is picked (``--top`` per layer by ``--by``, as ``negdb select --top``) and saved, and (unless
``--evals none``) ``T_c`` is ablated against random controls at that checkpoint (:func:`negdb.ablate.experiment.run`,
whose evaluations are stored and re-used). The rows (table ``training_dynamics``, long format; ``layer`` NULL =
all layers pooled) are, with ``W_c`` the finite ``w_dist`` values of checkpoint ``c``:

- ``w_dist_mean``, ``w_dist_p50``, ``w_dist_p90``, ``w_dist_p99``, ``w_dist_max``: mean, percentiles (numpy
  ``linear``) and maximum of ``W_c`` per layer and pooled; ``n`` = neurons;
- ``top_w_dist_mean``: mean ``w_dist`` at ``c`` over ``T_c``; ``cohort_w_dist_mean``: mean ``w_dist`` at ``c``
  over the final checkpoint's set ``T_F`` (the cohort), per layer and pooled over the members; ``n`` = members;
- ``overlap_final`` = ``|T_c ∩ T_F| / |T_c ∪ T_F|`` and ``overlap_prev`` (with the previous selected checkpoint;
  none for the first): Jaccard of the (layer, neuron) sets per layer and pooled; ``n`` = size of the union;
- per benchmark and metric of the ablation's comparison (``benchmark``, ``metric`` set): ``baseline`` (the
  unablated value), ``delta_<condition>`` (condition ``ablation`` = ``T_c``, ``random``, ``ppl-matched``: value
  minus baseline, with the comparison's 95% paired-bootstrap CI) and ``w_minus_<control>`` (the ``T_c``
  ablation's value minus the control's, CI from the same paired bootstrap with the control as reference);
  ``n`` = items (windows for perplexity).

The analysis is keyed by its arguments (:func:`negdb.analyze.record.analysis_id`); a stored one is read back
without ingesting, loading or evaluating anything.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from negdb.errors import BadArgument
from negdb.store.layout import StoreLayout
from negdb.store.tables import TRAINING_DYNAMICS

KIND = "training"
PERCENTILES = (("p50", 50.0), ("p90", 90.0), ("p99", 99.0))
STAT_QUANTITIES = ("w_dist_mean", "w_dist_p50", "w_dist_p90", "w_dist_p99", "w_dist_max", "top_w_dist_mean",
                   "cohort_w_dist_mean", "overlap_final", "overlap_prev")
Log = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _ablate_groups() -> tuple[type, type, type, type]:
    from negdb.ablate.options import Controls
    from negdb.evals.options import Bootstrap, Sampling, Scoring

    return Controls, Sampling, Scoring, Bootstrap


def _default_controls() -> Any:
    from negdb.ablate.options import Controls

    return Controls(kinds=("random",), seeds=1)


def _default(kind: str) -> Any:
    from negdb.evals import options

    return getattr(options, kind)()


@dataclass(frozen=True)
class TrainingSpec:
    """``negdb analyze training`` as one value: which checkpoints and how to ingest them (``ingest``, whose
    ``checkpoints`` must select at least two), which set to pick at each (``top``, ``by``) and how to ablate it
    (``mode``, ``evals``; ``evals=()`` skips the ablations), with the controls, sampling, scoring and bootstrap of
    ``negdb ablate``.

    Its random streams have separate seeds, each recorded in the analysis: ``ingest.seed`` (md pairs, W1 sample),
    ``controls.seed`` (random control sets), ``sampling.seed`` (the ``limit`` subsample) and ``bootstrap.seed``.
    """

    ingest: Any
    top: float | int = 0.01
    by: str = "w_dist"
    mode: str = "neg"
    evals: tuple[str, ...] = ("ppl", "blimp", "tse")
    controls: Any = field(default_factory=_default_controls)
    sampling: Any = field(default_factory=lambda: _default("Sampling"))
    scoring: Any = field(default_factory=lambda: _default("Scoring"))
    bootstrap: Any = field(default_factory=lambda: _default("Bootstrap"))

    def __post_init__(self) -> None:
        from negdb.ablate.options import mode_name
        from negdb.evals.options import benchmarks
        from negdb.values import as_names
        from negdb.ingest.plan import IngestSpec
        from negdb.query.sets import stat_columns
        from negdb.values import top_k

        if not isinstance(self.ingest, IngestSpec):
            raise BadArgument(f"ingest must be an IngestSpec, got {type(self.ingest).__name__}")
        object.__setattr__(self, "top", top_k(self.top))
        numeric = stat_columns()
        if self.by not in numeric:
            raise BadArgument(f"--by {self.by}: not a statistic column; use one of {', '.join(numeric)}")
        object.__setattr__(self, "mode", mode_name(self.mode))
        evals = as_names(self.evals, "evals") if self.evals else ()
        if evals:
            benchmarks(evals)
        object.__setattr__(self, "evals", evals)
        for name, kind in zip(("controls", "sampling", "scoring", "bootstrap"), _ablate_groups()):
            if not isinstance(getattr(self, name), kind):
                raise BadArgument(f"{name} must be a {kind.__name__}, got {type(getattr(self, name)).__name__}")

    @property
    def model(self) -> str:
        return str(self.ingest.model)

    @property
    def ablates(self) -> bool:
        return bool(self.evals)

    def ablate_spec(self, model_id: str, revision: str, set_name: str) -> Any:
        """The ``negdb ablate`` run of one checkpoint's set."""
        from negdb.ablate.options import AblateSpec
        from negdb.query.setspec import SetSpec

        return AblateSpec(SetSpec(model_id, checkpoint=revision, set_name=set_name), mode=self.mode,
                          evals=self.evals, controls=self.controls, sampling=self.sampling, scoring=self.scoring,
                          bootstrap=self.bootstrap)

    def config(self, model_id: str, revisions: Sequence[str]) -> dict[str, Any]:
        """Every argument that changes a stored number (the analysis key), with the resolved checkpoints.

        The keys are those of analyses stored before issue 12, when one ``seed`` seeded the ingest, the random
        controls and the bootstrap: while the three seeds agree the key holds ``seed`` alone, so such analyses
        are found again; seeds that differ are keyed as ``seed`` (the ingest's), ``control_seed`` and
        ``bootstrap_seed``.
        """
        from negdb.values import k_text, layers_text

        ing = self.ingest
        cfg: dict[str, Any] = {"dataset": ing.dataset, "text_field": ing.text_field, "tokens": ing.tokens,
                               "seq_len": ing.seq_len, "bos": ing.prepend_bos,
                               "layers": layers_text(ing.layers) or "all", "w_reference": ing.w_reference,
                               "seed": ing.seed, "md_pairs": ing.md_pairs, "dtype": ing.dtype,
                               "store_dtype": ing.store_dtype, "top": k_text(self.top), "by": self.by}
        if not self.ablates:
            return {"model_id": model_id, "revisions": list(revisions), **cfg, "evals": "none"}
        if not ing.seed == self.controls.seed == self.bootstrap.seed:
            cfg.update(control_seed=self.controls.seed, bootstrap_seed=self.bootstrap.seed)
        cfg.update(mode=self.mode, evals=",".join(self.evals), controls=self.controls.describe(),
                   seeds=self.controls.seeds, limit=self.sampling.limit.describe(),
                   sample_seed=self.sampling.seed, ppl_tokens=self.sampling.ppl_tokens,
                   probe_tokens=self.controls.probe_tokens, eval_bos=self.scoring.bos_policy.value,
                   window=self.scoring.window, n_boot=self.bootstrap.n_boot)
        return {"model_id": model_id, "revisions": list(revisions), **cfg}


@dataclass
class CheckpointInfo:
    """One analysed checkpoint: its statistics keys, its top set, its ablation."""

    revision: str
    step: int | None
    tokens_seen: int | None
    slice_id: str
    spec_id: str
    ingest: str  # ingested | resumed | already
    set_name: str
    set_id: str
    n_members: int
    ablation_id: str | None = None


@dataclass
class TrainingResult:
    """What :func:`run` did or read back."""

    analysis_id: str
    model_id: str
    rows: pl.DataFrame
    summary: dict[str, Any]
    reused: bool
    evaluations_computed: int = 0
    evaluations_reused: int = 0
    ingested: list[str] = field(default_factory=list)

    def frame(self) -> pl.DataFrame:
        """The ``training_dynamics`` rows (long format: checkpoint, quantity, layer, benchmark, value, CI)."""
        return self.rows.drop("analysis_id")

    def render(self, fmt: str = "table") -> str:
        return render(self, fmt)


# ------------------------------------------------------------------------------------------ quantities


def _finite(w: pl.DataFrame) -> pl.DataFrame:
    return w.filter(pl.col("w_dist").is_not_null() & pl.col("w_dist").is_not_nan())


def _row(quantity: str, layer: int | None, value: float, n: int, **kw: Any) -> dict[str, Any]:
    return {"quantity": quantity, "layer": layer, "value": float(value), "n": int(n), **kw}


def _per_layer(frame: pl.DataFrame) -> list[tuple[int | None, pl.DataFrame]]:
    """(layer, its rows) for each layer in order, then (None, every row)."""
    layers = sorted(set(frame["layer"].to_list()))
    return [(int(layer), frame.filter(pl.col("layer") == layer)) for layer in layers] + [(None, frame)]


def distribution_rows(w: pl.DataFrame) -> list[dict[str, Any]]:
    """``w_dist_mean/p50/p90/p99/max`` per layer and pooled over the finite ``w_dist`` of ``w`` (layer, neuron,
    w_dist)."""
    rows = []
    for layer, part in _per_layer(_finite(w)):
        x = part["w_dist"].to_numpy().astype(np.float64)
        if len(x) == 0:
            continue
        rows.append(_row("w_dist_mean", layer, x.mean(), len(x)))
        for name, q in PERCENTILES:
            rows.append(_row(f"w_dist_{name}", layer, np.percentile(x, q), len(x)))
        rows.append(_row("w_dist_max", layer, x.max(), len(x)))
    return rows


def set_mean_rows(w: pl.DataFrame, members: pl.DataFrame, quantity: str) -> list[dict[str, Any]]:
    """Mean finite ``w_dist`` of ``w`` over the (layer, neuron) ``members``, per layer and pooled."""
    joined = _finite(members.select("layer", "neuron").join(w, on=["layer", "neuron"], how="inner"))
    return [_row(quantity, layer, part["w_dist"].mean(), part.height)  # type: ignore[arg-type]
            for layer, part in _per_layer(joined) if part.height]


def jaccard_rows(a: pl.DataFrame, b: pl.DataFrame, quantity: str) -> list[dict[str, Any]]:
    """Jaccard index of two (layer, neuron) sets, per layer (of either set) and pooled over the pairs."""
    sa = {(int(x), int(y)) for x, y in a.select("layer", "neuron").iter_rows()}
    sb = {(int(x), int(y)) for x, y in b.select("layer", "neuron").iter_rows()}
    rows = []
    for layer in [*sorted({p[0] for p in sa | sb}), None]:
        pa_ = {p for p in sa if layer is None or p[0] == layer}
        pb_ = {p for p in sb if layer is None or p[0] == layer}
        union = pa_ | pb_
        if union:
            rows.append(_row(quantity, layer, len(pa_ & pb_) / len(union), len(union)))
    return rows


def effect_rows(experiment: Any, n_boot: int, seed: int) -> list[dict[str, Any]]:
    """The ablation's comparison as rows: ``baseline``, ``delta_<condition>``, ``w_minus_<control>``."""
    from negdb.ablate.compare import compare

    rows = []
    seen = set()
    for r in experiment.comparison.rows:
        kw = {"benchmark": r.benchmark, "metric": r.metric}
        if (r.benchmark, r.metric) not in seen:
            seen.add((r.benchmark, r.metric))
            rows.append(_row("baseline", None, r.baseline, r.n, **kw))
        rows.append(_row(f"delta_{r.condition}", None, r.delta, r.n, ci_lo=r.lo, ci_hi=r.hi, **kw))
    conds = {c.name: c for c in experiment.conditions}
    controls = [c for name, c in conds.items() if name not in ("baseline", "ablation")]
    if controls and "ablation" in conds:
        # control minus ablation, paired, with the ablation as the reference; negated: ablation minus control
        for r in compare(conds["ablation"], controls, n_boot=n_boot, seed=seed).rows:
            rows.append(_row(f"w_minus_{r.condition}", None, 0.0 - r.delta, r.n, ci_lo=0.0 - r.hi, ci_hi=0.0 - r.lo,
                             benchmark=r.benchmark, metric=r.metric))
    return rows


# ------------------------------------------------------------------------------------------ the run


def _stored(layout: StoreLayout, aid: str, row: dict[str, Any]) -> TrainingResult:
    found = layout.read_segment(TRAINING_DYNAMICS.name, aid)
    frame = pl.from_arrow(found if found is not None else TRAINING_DYNAMICS.from_rows([]))
    assert isinstance(frame, pl.DataFrame)
    return TrainingResult(aid, row["model_id"], frame, json.loads(row["summary_json"]), reused=True)


def _w_dist(cat: Any, model_id: str, info: CheckpointInfo) -> pl.DataFrame:
    return cat.sql("SELECT layer, neuron, w_dist FROM neuron_stats WHERE model_id = ? AND revision = ? AND "
                   "slice_id = ? AND spec_id = ? ORDER BY layer, neuron",
                   [model_id, info.revision, info.slice_id, info.spec_id]).with_columns(
        pl.col("layer").cast(pl.Int32), pl.col("neuron").cast(pl.Int32), pl.col("w_dist").cast(pl.Float64))


def _ingest(spec: TrainingSpec, layout: StoreLayout, ckpts: list[Any], resources: Any, progress: bool,
            log: Log) -> dict[str, Any]:
    from negdb.ingest.pipeline import ingest

    ing = replace(spec.ingest, checkpoints=tuple(c.revision for c in ckpts))
    results = ingest(ing, store=layout.location, resources=resources, progress=progress, log=log)
    return {r.revision: r for r in results}


def run(spec: TrainingSpec, store: str | Path | None = None, *, device: str = "auto", resources: Any = None,
        progress: bool = True, log: Log = _stderr) -> TrainingResult:
    """Run (or read back) the training-dynamics analysis ``spec`` in ``store``; see the module docstring.

    ``resources`` (:class:`negdb.ingest.plan.Resources`) of the ingests; ``device`` also that of the evaluations.
    """
    from negdb.ablate.controls import save_auto
    from negdb.ablate.experiment import run as ablate
    from negdb.analyze.record import Timer, analysis_id, lookup, publish
    from negdb.ingest.plan import Resources
    from negdb.models.checkpoints import select
    from negdb.models.registry import resolve
    from negdb.query import sets as setlib
    from negdb.store.catalog import Catalog
    from negdb.values import k_text

    resources = resources or Resources(device=device)
    layout = StoreLayout.at(store)
    source = resolve(spec.model)
    ckpts = select(source, spec.ingest.checkpoint_spec)
    if len(ckpts) < 2:
        raise BadArgument(f"--checkpoints {spec.ingest.checkpoint_spec} selects {len(ckpts)} checkpoint of "
                          f"{source.model_id}: training dynamics need at least two (e.g. all, every:K or "
                          "step0,step1000)")
    config = spec.config(source.model_id, [c.revision for c in ckpts])
    aid = analysis_id(KIND, config)
    row = lookup(layout, aid) if layout.is_store() else None
    if row is not None:
        log(f"training analysis {aid}: stored; nothing to compute")
        return _stored(layout, aid, row)

    with Timer() as timer:
        ingested = _ingest(spec, layout, ckpts, resources, progress, log)
        infos: list[CheckpointInfo] = []
        frames: dict[str, pl.DataFrame] = {}
        sets: dict[str, pl.DataFrame] = {}
        with Catalog(layout.location) as cat:
            for c in ckpts:
                r = ingested[c.revision]
                sel = setlib.select(cat, source.model_id, c.revision, top=k_text(spec.top), by=spec.by,
                                    slice_id=r.slice_id, spec_id=r.spec_id)
                ns = save_auto(cat, sel)
                info = CheckpointInfo(c.revision, c.step, c.tokens_seen, r.slice_id, r.spec_id, r.status, ns.name,
                                      ns.set_id, ns.n_members)
                infos.append(info)
                frames[c.revision] = _w_dist(cat, source.model_id, info)
                sets[c.revision] = ns.members
        final = ckpts[-1].revision
        rows: list[dict[str, Any]] = []
        computed = reused = 0
        for i, info in enumerate(infos):
            w = frames[info.revision]
            part = distribution_rows(w)
            part += set_mean_rows(w, sets[info.revision], "top_w_dist_mean")
            part += set_mean_rows(w, sets[final], "cohort_w_dist_mean")
            part += jaccard_rows(sets[info.revision], sets[final], "overlap_final")
            if i > 0:
                part += jaccard_rows(sets[info.revision], sets[infos[i - 1].revision], "overlap_prev")
            if spec.ablates:
                exp = ablate(spec.ablate_spec(source.model_id, info.revision, info.set_name), layout.location,
                             device=resources.device, progress=progress, log=log)
                info.ablation_id = exp.ablation_id
                computed, reused = computed + exp.computed, reused + exp.reused
                part += effect_rows(exp, spec.bootstrap.n_boot, spec.bootstrap.seed)
            rows += [{"model_id": source.model_id, "revision": info.revision, "step": info.step,
                      "tokens_seen": info.tokens_seen, **r} for r in part]
    summary = {"final": final, "checkpoints": [asdict(i) for i in infos], "headline": _headline(rows, infos)}
    stored = publish(layout, aid, kind=KIND, model_id=source.model_id, revision=final, config=config,
                     summary=summary, seconds=timer.seconds, tables={TRAINING_DYNAMICS: rows})
    result = _stored(layout, aid, stored)
    return replace(result, reused=False, evaluations_computed=computed, evaluations_reused=reused,
                   ingested=[i.revision for i in infos if i.ingest != "already"])


def _headline(rows: list[dict[str, Any]], infos: list[CheckpointInfo]) -> dict[str, Any]:
    """Pooled w_dist mean and top-set mean, first and final checkpoint."""
    def pick(rev: str, q: str) -> float | None:
        return next((r["value"] for r in rows if r["revision"] == rev and r["quantity"] == q and r["layer"] is None
                     and r.get("benchmark") is None), None)

    return {f"{q}@{i.revision}": pick(i.revision, q) for i in (infos[0], infos[-1])
            for q in ("w_dist_mean", "top_w_dist_mean", "cohort_w_dist_mean")}


# ------------------------------------------------------------------------------------------ rendering


def _fmt_ci(value: float | None, lo: float | None, hi: float | None) -> str:
    if value is None:
        return ""
    return f"{value:+.4f}" + ("" if lo is None or hi is None else f" [{lo:+.4f}, {hi:+.4f}]")


def stats_table(rows: pl.DataFrame) -> pl.DataFrame:
    """One row per checkpoint: the pooled (all-layer) statistic quantities."""
    base = rows.filter(pl.col("layer").is_null() & pl.col("benchmark").is_null())
    wide = base.pivot(on="quantity", index=["revision", "step"], values="value", aggregate_function="first")
    order = ["revision", "step", *[q for q in STAT_QUANTITIES if q in wide.columns]]
    steps = rows.select("revision", "step").unique(maintain_order=True)
    return steps.join(wide, on=["revision", "step"], how="left", nulls_equal=True).select(order)


def effects_table(rows: pl.DataFrame) -> pl.DataFrame:
    """One row per (checkpoint, benchmark, metric): baseline, each condition's delta and W minus each control."""
    eff = rows.filter(pl.col("benchmark").is_not_null())
    if eff.height == 0:
        return pl.DataFrame()
    eff = eff.with_columns(pl.struct("value", "ci_lo", "ci_hi").map_elements(
        lambda s: _fmt_ci(s["value"], s["ci_lo"], s["ci_hi"]), return_dtype=pl.String).alias("cell"))
    base = eff.filter(pl.col("quantity") == "baseline").select(
        "revision", "benchmark", "metric", pl.col("value").alias("baseline"), "n")
    wide = eff.filter(pl.col("quantity") != "baseline").pivot(
        on="quantity", index=["revision", "benchmark", "metric"], values="cell", aggregate_function="first")
    return base.join(wide, on=["revision", "benchmark", "metric"], how="left")


def render(result: TrainingResult, fmt: str = "table") -> str:
    """The analysis as a table (two wide views), JSON (summary and every row) or CSV (every row)."""
    rows = result.rows.drop("analysis_id")
    if fmt == "json":
        return json.dumps({"analysis_id": result.analysis_id, "model_id": result.model_id, **result.summary,
                           "rows": rows.to_dicts()}, indent=2, default=str)
    if fmt == "csv":
        return rows.write_csv()
    if fmt != "table":
        raise BadArgument(f"unknown format {fmt!r}: use table, json or csv")
    with pl.Config(tbl_rows=-1, tbl_cols=-1, tbl_width_chars=220, float_precision=4, fmt_str_lengths=60,
                   tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True):
        parts = [f"{result.model_id}: w_dist and the top sets over {len(result.summary['checkpoints'])} "
                 f"checkpoints (all layers pooled; cohort = the top set of {result.summary['final']})",
                 str(stats_table(rows))]
        eff = effects_table(rows)
        if eff.height:
            parts += ["", "ablation effect per checkpoint: delta vs baseline [95% paired-bootstrap CI]; "
                      "w_minus_<control> = ablation minus control", str(eff)]
    return "\n".join(parts)
