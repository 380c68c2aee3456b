"""``negdb sweep`` as a function: run every grid point and seed, store the points and their summaries.

Per (point, seed) this does what ``negdb ablate --top F% --by B --mode M --seed s --sample-seed s --seeds 1``
does — the main set, the baseline, the ablation, a random control (seed ``s``) and the perplexity-matched
control, each evaluation a stored result (:mod:`negdb.ablate.evaluate`) found again by its key — and compares
them with :func:`negdb.ablate.compare.compare` (bootstrap seed ``s``): one ``sweep_points`` row per condition and
benchmark metric. The model is loaded once, the first time something is missing. A point whose ablation does not
raise perplexity has no matched control (noted in the summary). An interrupted sweep resumes from the stored
evaluations; the finished one is stored under its analysis key (kind ``sweep``) with its ``sweep_summary`` rows
(:mod:`negdb.sweep.contrasts`), and a repeated command reads it back without loading anything.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from tqdm.auto import tqdm

from negdb.ablate.compare import Condition, compare
from negdb.ablate.controls import MatchResult, ppl_matched, random_controls, save_auto
from negdb.ablate.experiment import PPL_BENCHMARK, Evaluator, Loader
from negdb.analyze.record import Timer, analysis_id, lookup, publish
from negdb.errors import NegdbError
from negdb.evals import registry
from negdb.query.setstore import NeuronSet
from negdb.store.catalog import Catalog
from negdb.store.layout import StoreLayout
from negdb.store.tables import SWEEP_POINTS, SWEEP_SUMMARY
from negdb.sweep import contrasts
from negdb.sweep.estimate import Estimate, estimate
from negdb.sweep.grid import GridPoint, Setup, SweepOptions, selection, setup

KIND = "sweep"


@dataclass
class Sweep:
    """What :func:`run` did or read back: the ``sweep_points`` and ``sweep_summary`` rows and the record."""

    analysis_id: str
    model_id: str
    revision: str
    config: dict[str, Any]
    summary: dict[str, Any]
    points: list[dict[str, Any]] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    estimate: Estimate | None = None
    computed: int = 0
    reused: int = 0
    from_store: bool = False

    def render(self, fmt: str = "table") -> str:
        from negdb.sweep.render import render

        return render(self, fmt)


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def config(opts: SweepOptions, st: Setup) -> dict[str, Any]:
    """Every argument that changes the sweep's numbers (its analysis key)."""
    return {"model_id": st.keys.model_id, "revision": st.keys.revision, "commit": st.ckpt["commit"],
            "slice_id": st.keys.slice_id, "spec_id": st.keys.spec_id, "by": opts.by_list(),
            "direction": opts.direction, "fractions": opts.fraction_list(), "modes": opts.mode_list(),
            "layers": opts.layers, "controls": st.controls, "seeds": opts.seed_list(),
            "benchmarks": {b: registry.spec_hash(b) for b in st.benches}, "limits": st.limits,
            "ppl_tokens": opts.ppl_tokens, "probe_tokens": opts.probe_tokens, "tolerance": opts.tolerance,
            "resolution": opts.resolution, "max_fraction": opts.max_fraction, "bos": opts.bos,
            "window": opts.window, "n_boot": opts.n_boot}


def _read_rows(layout: StoreLayout, table: Any, aid: str) -> list[dict[str, Any]]:
    path = layout.table_dir(table.name) / f"{aid}.parquet"
    return pq.read_table(path).to_pylist() if path.exists() else []


def plan(opts: SweepOptions, store: str | Path) -> Estimate:
    """The work estimate only (``--dry-run``)."""
    layout = _layout(store, opts)
    with Catalog(layout.root) as cat:
        st = setup(cat, opts)
        aid = analysis_id(KIND, config(opts, st))
        if lookup(layout, aid) is not None:
            return Estimate(complete=aid)
        return estimate(cat, opts, st)


def _layout(store: str | Path, opts: SweepOptions) -> StoreLayout:
    layout = StoreLayout(Path(store))
    if not layout.marker.exists():
        raise NegdbError(f"{store} is not a negdb store: run `negdb ingest --model {opts.model}` first")
    return layout


class _Runner:
    """The state of one sweep: shared model loader, one evaluator per (mode, seed), the scores gathered so far."""

    def __init__(self, layout: StoreLayout, cat: Catalog, opts: SweepOptions, st: Setup, *, progress: bool,
                 log: Callable[[str], None]) -> None:
        self.layout, self.cat, self.opts, self.st, self.progress, self.log = layout, cat, opts, st, progress, log
        self.loader = Loader(st.keys.model_id, st.keys.revision, opts.device, log)
        self.evaluators: dict[tuple[str, int], Evaluator] = {}
        self.base: dict[int, contrasts.Scores] = {}
        self.data: dict[contrasts.PointKey, contrasts.Scores] = {}
        self.points: list[dict[str, Any]] = []
        self.skipped: list[str] = []
        self.not_matched: list[str] = []

    def evaluator(self, mode: str, seed: int) -> Evaluator:
        if (mode, seed) not in self.evaluators:
            self.evaluators[(mode, seed)] = Evaluator(
                self.layout, self.cat, self.st.ckpt, mode, self.st.rule, limits=self.st.limits,
                ppl_tokens=self.opts.ppl_tokens, sample_seed=seed, batch_tokens=self.opts.batch_tokens,
                progress=self.progress, get_lm=self.loader)
        return self.evaluators[(mode, seed)]

    @property
    def computed(self) -> int:
        return sum(e.computed for e in self.evaluators.values())

    @property
    def reused(self) -> int:
        return sum(e.reused for e in self.evaluators.values())

    def condition(self, ev: Evaluator, name: str, label: str, ns: NeuronSet | None, **kw: Any) -> Condition:
        t = ev.target(ns)
        results = {b: [ev(t, b, label)] for b in self.st.benches}
        return Condition(name, label, results, n_neurons=0 if ns is None else ns.n_members, sets=[ns], **kw)

    def match(self, ev: Evaluator, main: NeuronSet, point: GridPoint) -> MatchResult | None:
        """The perplexity-matched control of ``main`` (``None`` when the ablation does not raise perplexity)."""
        probe = self.opts.probe_tokens
        p0 = float(ev(ev.target(None), PPL_BENCHMARK, "baseline", probe).row["primary_value"])
        pw = float(ev(ev.target(main), PPL_BENCHMARK, "ablation", probe).row["primary_value"])
        if not pw > p0:
            if point.label() not in self.skipped:
                self.skipped.append(point.label())
            return None

        def run_probe(ns: NeuronSet) -> float:
            return float(ev(ev.target(ns), PPL_BENCHMARK, "ppl probe", probe).row["primary_value"])

        found = ppl_matched(self.cat, main, d_mlp=self.st.d_mlp, target=pw, baseline=p0,
                            probe=run_probe, tolerance=self.opts.tolerance, resolution=self.opts.resolution,
                            max_fraction=self.opts.max_fraction)
        if not found.matched and point.label() not in self.not_matched:
            self.not_matched.append(point.label())
        return found

    def run_point(self, point: GridPoint, main: NeuronSet, seed: int) -> None:
        """Evaluate every condition of ``point`` on seed ``seed``; keep its rows and per-item scores."""
        ev = self.evaluator(point.mode, seed)
        base = self.condition(ev, "baseline", "baseline", None)
        conds = [self.condition(ev, "ablation", f"{point.mode}-ablation", main)]
        if "random" in self.st.controls:
            (rnd,) = random_controls(self.cat, main, [seed])
            conds.append(self.condition(ev, "random", "random", rnd))
        found = self.match(ev, main, point) if "ppl-matched" in self.st.controls else None
        if found is not None:
            conds.append(self.condition(ev, "ppl-matched", "ppl-matched", found.neuron_set, fraction=found.fraction))
        cmp = compare(base, conds, n_boot=self.opts.n_boot, seed=seed)
        self.points.extend(point_rows(point, self.opts.direction, seed, base, conds, cmp.rows, found))
        if seed not in self.base:
            self.base[seed] = contrasts.scores(base.results)
        for c in conds:
            self.data[(point.by, point.fraction, point.mode, c.name, seed)] = contrasts.scores(c.results,
                                                                                              self.base[seed])


def point_rows(point: GridPoint, direction: str, seed: int, base: Condition, conds: list[Condition],
               rows: list[Any], found: MatchResult | None) -> list[dict[str, Any]]:
    """The ``sweep_points`` rows of one (point, seed) from ``compare``'s rows."""
    by_name = {c.name: c for c in conds}
    out = []
    for r in rows:
        c = by_name[r.condition]
        ns = c.sets[0]
        single = r.benchmark in c.results
        pm = r.condition == "ppl-matched" and found is not None
        out.append({"selector": point.by, "direction": direction, "fraction": point.fraction, "mode": point.mode,
                    "condition": r.condition, "seed": seed, "set_id": ns.set_id, "n_neurons": ns.n_members,
                    "control_fraction": found.fraction if pm else None,
                    "matched": found.matched if pm else None, "benchmark": r.benchmark, "metric": r.metric,
                    "n": r.n, "baseline": r.baseline, "value": r.value, "delta": r.delta, "ci_lo": r.lo,
                    "ci_hi": r.hi, "result_id": c.results[r.benchmark][0].result_id if single else None,
                    "baseline_id": base.results[r.benchmark][0].result_id if single else None})
    return out


def run(opts: SweepOptions, store: str | Path, *, progress: bool = True,
        log: Callable[[str], None] = _stderr) -> Sweep:
    """Run (or read back) the sweep ``opts`` in ``store``; logs the work estimate first."""
    layout = _layout(store, opts)
    timer = Timer()
    with Catalog(layout.root) as cat:
        st = setup(cat, opts)
        cfg = config(opts, st)
        aid = analysis_id(KIND, cfg)
        model_id, revision = st.keys.model_id, st.keys.revision
        stored = lookup(layout, aid)
        if stored is not None:
            est = Estimate(complete=aid)
            log(est.text())
            return Sweep(aid, model_id, revision, cfg, json.loads(stored["summary_json"]),
                         _read_rows(layout, SWEEP_POINTS, aid), _read_rows(layout, SWEEP_SUMMARY, aid), est,
                         from_store=True)
        est = estimate(cat, opts, st)
        log(est.text())
        runner = _Runner(layout, cat, opts, st, progress=progress, log=log)
        points, seeds = opts.points(), opts.seed_list()
        mains: dict[tuple[str, float], NeuronSet] = {}
        bar = tqdm(total=len(points) * len(seeds), desc="sweep", unit="point", disable=not progress,
                   dynamic_ncols=True)
        try:
            for p in points:
                if (p.by, p.fraction) not in mains:
                    mains[(p.by, p.fraction)] = save_auto(cat, selection(cat, opts, st.keys, p.by, p.fraction))
                for s in seeds:
                    bar.set_postfix_str(f"{p.label()} seed {s}")
                    runner.run_point(p, mains[(p.by, p.fraction)], s)
                    bar.update(1)
        finally:
            bar.close()
        rows = contrasts.summarize(runner.base, runner.data, bys=opts.by_list(), fractions=opts.fraction_list(),
                                   modes=opts.mode_list(), seeds=seeds, n_boot=opts.n_boot, seed=opts.seed)
        for r in rows:
            r["direction"] = opts.direction
        summary = {"points": len(points), "seeds": seeds, "evaluations_computed": runner.computed,
                   "evaluations_reused": runner.reused,
                   "sets": [{"selector": b, "fraction": f, "set_id": ns.set_id, "name": ns.name}
                            for (b, f), ns in mains.items()],
                   "ppl_matched_skipped": runner.skipped, "ppl_matched_not_matched": runner.not_matched,
                   "selectivity": [{k: r[k] for k in ("selector", "fraction", "mode", "value", "ci_lo", "ci_hi")}
                                   for r in rows if r["kind"] == "selectivity" and r["benchmark"] == "selectivity"]}
        record = publish(layout, aid, kind=KIND, model_id=model_id, revision=revision, config=cfg, summary=summary,
                         seconds=timer.seconds, tables={SWEEP_POINTS: runner.points, SWEEP_SUMMARY: rows})
        return Sweep(aid, model_id, revision, cfg, json.loads(record["summary_json"]),
                     _read_rows(layout, SWEEP_POINTS, aid), _read_rows(layout, SWEEP_SUMMARY, aid), est,
                     runner.computed, runner.reused)
