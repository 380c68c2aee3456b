"""``negdb sweep`` as a function: run every grid point and seed, store the points and their summaries.

Per (point, seed ``s``) this assembles, with the conditions engine (:mod:`negdb.ablate.conditions`), what
``negdb ablate --set <the point's set> --mode M --seeds 1 --control-seed s --sample-seed s --bootstrap-seed s``
does (:meth:`Sweep.ablate_command` prints that command) — the baseline, the ablation, a random control (seed
``s``) and the perplexity-matched control, each evaluation a stored result found again by its key — and compares
them with :func:`negdb.ablate.compare.compare` (bootstrap seed ``s``): one ``sweep_points`` row per condition and
benchmark metric. The model is loaded once, the first time something is missing. A point whose ablation does not
raise perplexity has no matched control (as in ``negdb ablate``; noted in the summary). An interrupted sweep
resumes from the stored evaluations; the finished one is stored under its analysis key (kind ``sweep``) with its
``sweep_summary`` rows (:mod:`negdb.sweep.contrasts`), and a repeated command reads it back without loading
anything.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from negdb.ablate.compare import Condition, compare
from negdb.ablate.conditions import Engine, Loader, check_store, stderr
from negdb.ablate.controls import MatchResult, save_auto
from negdb.analyze.record import Timer, analysis_id, lookup, publish
from negdb.evals import registry
from negdb.evals.run import dtype_key
from negdb.query.setstore import NeuronSet
from negdb.store.catalog import Catalog
from negdb.store.layout import StoreLayout
from negdb.store.tables import SWEEP_POINTS, SWEEP_SUMMARY
from negdb.sweep import contrasts
from negdb.sweep.estimate import Estimate, estimate
from negdb.sweep.grid import GridPoint, Setup, SweepSpec, selection, setup
from negdb.values import layers_text

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

    def frame(self, table: str = "points") -> Any:
        """The ``sweep_points`` rows (``table="points"``) or the ``sweep_summary`` rows (``"summary"``), polars."""
        import polars as pl

        if table not in ("points", "summary"):
            from negdb.errors import BadArgument

            raise BadArgument(f"unknown sweep table {table!r}: use points or summary")
        rows = self.points if table == "points" else self.rows
        return pl.DataFrame(rows, infer_schema_length=None)

    def ablate_command(self, point: GridPoint, seed: int) -> list[str]:
        """The ``negdb ablate`` arguments that compute (or read back) exactly the run of ``point`` and ``seed``:
        the same results, the same comparison rows."""
        cfg = self.config
        sets = {(s["selector"], s["fraction"]): s["name"] for s in self.summary.get("sets", [])}
        name = sets.get((point.by, point.fraction))
        if name is None:
            from negdb.errors import NotFound

            raise NotFound(f"the sweep {self.analysis_id} has no point {point.label()}")
        limits = {b: n for b, n in cfg["limits"].items() if n is not None}
        args = ["ablate", "--model", self.model_id, "--checkpoint", self.revision, "--set", name,
                "--mode", point.mode, "--evals", ",".join(cfg["benchmarks"]),
                "--controls", ",".join(cfg["controls"]) or "none", "--seeds", "1", "--control-seed", str(seed),
                "--sample-seed", str(seed), "--bootstrap-seed", str(seed), "--n-boot", str(cfg["n_boot"]),
                "--probe-tokens", str(cfg["probe_tokens"]), "--tolerance", str(cfg["tolerance"]),
                "--resolution", str(cfg["resolution"]), "--max-fraction", str(cfg["max_fraction"]),
                "--bos-policy", cfg["bos"]]
        if limits:
            args += ["--limit", ",".join(f"{b}={n}" for b, n in limits.items())]
        if cfg["ppl_tokens"] is not None:
            args += ["--ppl-tokens", str(cfg["ppl_tokens"])]
        if cfg["window"] is not None:
            args += ["--window", str(cfg["window"])]
        return args


def config(spec: SweepSpec, st: Setup) -> dict[str, Any]:
    """Every argument that changes the sweep's numbers (its analysis key; the same keys as before issue 12)."""
    c = spec.controls
    return {"model_id": st.keys.model_id, "revision": st.keys.revision, "commit": st.ckpt["commit"],
            "slice_id": st.keys.slice_id, "spec_id": st.keys.spec_id, "by": list(spec.by),
            "direction": spec.direction.value, "fractions": list(spec.fractions), "modes": list(spec.modes),
            "layers": layers_text(spec.layers), "controls": st.controls, "seeds": list(spec.seeds),
            "benchmarks": {b: registry.spec_hash(b) for b in st.benches}, "limits": st.limits,
            "ppl_tokens": spec.sampling.ppl_tokens, "probe_tokens": c.probe_tokens, "tolerance": c.tolerance,
            "resolution": c.resolution, "max_fraction": c.max_fraction, "bos": spec.scoring.bos_policy.value,
            "window": spec.scoring.window, "n_boot": spec.n_boot, **dtype_key(spec.scoring.dtype)}


def _read_rows(layout: StoreLayout, table: Any, aid: str) -> list[dict[str, Any]]:
    found = layout.read_segment(table.name, aid)
    return [] if found is None else found.to_pylist()


def plan(spec: SweepSpec, store: str | Path) -> Estimate:
    """The work estimate only (``--dry-run``)."""
    layout = StoreLayout.at(store)
    check_store(layout, spec.model)
    with Catalog(layout.location) as cat:
        st = setup(cat, spec)
        aid = analysis_id(KIND, config(spec, st))
        if lookup(layout, aid) is not None:
            return Estimate(complete=aid)
        return estimate(cat, spec, st)


class _Runner:
    """The state of one sweep: one conditions engine (one model loader), the scores gathered so far."""

    def __init__(self, layout: StoreLayout, cat: Catalog, spec: SweepSpec, st: Setup, *, device: str,
                 progress: bool, log: Callable[[str], None]) -> None:
        self.cat, self.spec, self.st = cat, spec, st
        self.engine = Engine(layout, cat, st.ckpt, spec.scoring,
                             get_lm=Loader(st.keys.model_id, st.keys.revision, device, log, spec.scoring.dtype),
                             progress=progress, log=lambda _msg: None)
        self.base: dict[int, contrasts.Scores] = {}
        self.data: dict[contrasts.PointKey, contrasts.Scores] = {}
        self.points: list[dict[str, Any]] = []
        self.skipped: list[str] = []
        self.not_matched: list[str] = []

    def run_point(self, point: GridPoint, main: NeuronSet, seed: int) -> None:
        """Evaluate every condition of ``point`` on seed ``seed``; keep its rows and per-item scores."""
        got = self.engine.assemble(main, point.mode, self.st.benches, self.spec.run_controls(seed),
                                   self.spec.run_sampling(seed), d_mlp=self.st.d_mlp)
        if got.skipped is not None and point.label() not in self.skipped:
            self.skipped.append(point.label())
        found = got.match
        if found is not None and not found.matched and point.label() not in self.not_matched:
            self.not_matched.append(point.label())
        boot = self.spec.run_bootstrap(seed)
        cmp = compare(got.baseline, got.conditions, n_boot=boot.n_boot, seed=boot.seed)
        self.points.extend(point_rows(point, self.spec.direction.value, seed, got.baseline, got.conditions, cmp.rows,
                                      found))
        if seed not in self.base:
            self.base[seed] = contrasts.scores(got.baseline.results)
        for c in got.conditions:
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


def run_points(spec: SweepSpec, store: str | Path, points: list[GridPoint], *, device: str = "auto",
               progress: bool = False, log: Callable[[str], None] = stderr) -> tuple[int, int]:
    """Evaluate every condition of ``points`` on every seed of ``spec`` into the store without publishing the
    sweep (one chunk of a fanned-out sweep, :mod:`negdb.cluster`; the model is loaded once, only if something is
    missing). Returns (evaluations computed, reused)."""
    layout = StoreLayout.at(store)
    check_store(layout, spec.model)
    with Catalog(layout.location) as cat:
        st = setup(cat, spec)
        runner = _Runner(layout, cat, spec, st, device=device, progress=progress, log=log)
        for p in points:
            main = save_auto(cat, selection(cat, spec, st.keys, p.by, p.fraction))
            for s in spec.seeds:
                runner.run_point(p, main, s)
        return runner.engine.computed, runner.engine.reused


def run(spec: SweepSpec, store: str | Path, *, device: str = "auto", progress: bool = True,
        log: Callable[[str], None] = stderr) -> Sweep:
    """Run (or read back) the sweep ``spec`` in ``store``; logs the work estimate first."""
    layout = StoreLayout.at(store)
    check_store(layout, spec.model)
    timer = Timer()
    with Catalog(layout.location) as cat:
        st = setup(cat, spec)
        cfg = config(spec, st)
        aid = analysis_id(KIND, cfg)
        model_id, revision = st.keys.model_id, st.keys.revision
        stored = lookup(layout, aid)
        if stored is not None:
            est = Estimate(complete=aid)
            log(est.text())
            return Sweep(aid, model_id, revision, cfg, json.loads(stored["summary_json"]),
                         _read_rows(layout, SWEEP_POINTS, aid), _read_rows(layout, SWEEP_SUMMARY, aid), est,
                         from_store=True)
        est = estimate(cat, spec, st)
        log(est.text())
        runner = _Runner(layout, cat, spec, st, device=device, progress=progress, log=log)
        points, seeds = spec.points(), list(spec.seeds)
        mains: dict[tuple[str, float], NeuronSet] = {}
        bar = tqdm(total=len(points) * len(seeds), desc="sweep", unit="point", disable=not progress,
                   dynamic_ncols=True)
        try:
            for p in points:
                if (p.by, p.fraction) not in mains:
                    mains[(p.by, p.fraction)] = save_auto(cat, selection(cat, spec, st.keys, p.by, p.fraction))
                for s in seeds:
                    bar.set_postfix_str(f"{p.label()} seed {s}")
                    runner.run_point(p, mains[(p.by, p.fraction)], s)
                    bar.update(1)
        finally:
            bar.close()
        rows = contrasts.summarize(runner.base, runner.data, bys=list(spec.by), fractions=list(spec.fractions),
                                   modes=list(spec.modes), seeds=seeds, n_boot=spec.n_boot, seed=seeds[0])
        for r in rows:
            r["direction"] = spec.direction.value
        computed, reused = runner.engine.computed, runner.engine.reused
        summary = {"points": len(points), "seeds": seeds, "evaluations_computed": computed,
                   "evaluations_reused": reused,
                   "sets": [{"selector": b, "fraction": f, "set_id": ns.set_id, "name": ns.name}
                            for (b, f), ns in mains.items()],
                   "ppl_matched_skipped": runner.skipped, "ppl_matched_not_matched": runner.not_matched,
                   "selectivity": [{k: r[k] for k in ("selector", "fraction", "mode", "value", "ci_lo", "ci_hi")}
                                   for r in rows if r["kind"] == "selectivity" and r["benchmark"] == "selectivity"]}
        record = publish(layout, aid, kind=KIND, model_id=model_id, revision=revision, config=cfg, summary=summary,
                         seconds=timer.seconds, tables={SWEEP_POINTS: runner.points, SWEEP_SUMMARY: rows})
        return Sweep(aid, model_id, revision, cfg, json.loads(record["summary_json"]),
                     _read_rows(layout, SWEEP_POINTS, aid), _read_rows(layout, SWEEP_SUMMARY, aid), est,
                     computed, reused)
