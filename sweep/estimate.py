"""The work a sweep will do, printed before it starts (``negdb sweep --dry-run`` prints only this).

Nominal work is points x seeds x conditions x benchmarks evaluations plus the baseline's. Many of them are one
stored evaluation (the baseline is shared by every point, results without ``--limit`` by every seed, equal sets by
several points), so the estimate counts distinct evaluation keys (:func:`negdb.ablate.evaluate.make_key`) and
how many of them are stored. Keys are exact where the set is known without evaluating anything: the baseline,
every main set (selected, not saved), the random control of a main set already saved. The perplexity-matched
search is replayed from stored probes where they exist; its remaining probes are an upper bound (doubling, then
bisection), and the evaluations of a control set not found yet are counted as to compute. The rough time is
the median stored ``eval_results.seconds`` of the same model, benchmark and limit. A replay may save the neuron
set of the next probe (never evaluating it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from negdb.ablate.controls import main_fraction, ppl_matched
from negdb.evals.registry import PERPLEXITY_BENCHMARK as PPL_BENCHMARK
from negdb.query import sets as setlib
from negdb.query.setstore import NeuronSet
from negdb.store.catalog import Catalog
from negdb.sweep.grid import Setup, SweepSpec, selection
from negdb.values import duration_text


@dataclass
class Estimate:
    """Counts of evaluations (see the module docstring); ``seconds`` covers ``timed`` of those to compute."""

    points: int = 0
    seeds: int = 0
    conditions: list[str] = field(default_factory=list)
    benchmarks: list[str] = field(default_factory=list)
    nominal: int = 0
    planned: int = 0
    stored: int = 0
    pending: int = 0
    probes_stored: int = 0
    probes_left: int = 0
    seconds: float | None = None
    timed: int = 0
    complete: str | None = None
    result_ids: list[str] = field(default_factory=list, repr=False)
    """The planned (known) evaluation keys."""

    @property
    def to_compute(self) -> int:
        return self.planned - self.stored + self.pending + self.probes_left

    def to_dict(self) -> dict[str, Any]:
        out = {**asdict(self), "to_compute": self.to_compute}
        del out["result_ids"]
        return out

    def text(self) -> str:
        if self.complete is not None:
            return f"sweep {self.complete} is stored: nothing to compute (it is read back)"
        conds = len(self.conditions)
        lines = [f"grid: {self.points} points x {self.seeds} seeds x {conds} conditions "
                 f"({', '.join(self.conditions)}) x {len(self.benchmarks)} benchmarks = "
                 f"{self.points * self.seeds * conds * len(self.benchmarks)} evaluations, + baseline "
                 f"{self.seeds * len(self.benchmarks)} (nominal {self.nominal})",
                 f"distinct evaluations with a known key: {self.planned}, {self.stored} stored, "
                 f"{self.planned - self.stored} to compute"]
        if self.pending or self.probes_left or self.probes_stored:
            lines.append(f"control sets not chosen yet: {self.pending} evaluations to compute; ppl-matched probes: "
                         f"{self.probes_stored} stored, up to {self.probes_left} to run (an estimate)")
        total = self.to_compute
        if total == 0:
            lines.append("everything is stored: the sweep only reads")
        elif self.seconds is not None:
            lines.append(f"rough time: ~{duration_text(self.seconds)} for {self.timed} of the {total} evaluations to "
                         "compute (median stored time of this model, benchmark and limit)")
        else:
            lines.append(f"rough time: unknown (no stored timing of this model yet) for {total} evaluations")
        return "\n".join(lines)



def probe_bound(fraction: float, resolution: float, max_fraction: float) -> int:
    """At most how many probes a perplexity match starting at ``2 * fraction`` runs (doubling, then bisection)."""
    start = max(resolution, 2 * fraction)
    doubling = 1 + (math.ceil(math.log2(max_fraction / start)) if start < max_fraction else 0)
    bisection = math.ceil(math.log2(max(1.0, max_fraction / 2 / resolution)))
    return doubling + bisection


class _Missing(Exception):
    """A probe of the replayed perplexity match is not stored."""


def _saved(cat: Catalog, set_id: str) -> NeuronSet | None:
    rows = cat.arrow("SELECT name FROM neuron_sets WHERE set_id = ? ORDER BY created_at, name LIMIT 1",
                     [set_id]).to_pylist()
    return setlib.get(cat, rows[0]["name"]) if rows else None


def _timings(cat: Catalog, model_id: str) -> dict[tuple[str, int | None], float]:
    df = cat.sql("SELECT benchmark, item_limit, median(seconds) AS s FROM eval_results "
                 "WHERE model_id = ? AND seconds > 0 GROUP BY ALL", [model_id])
    return {(r["benchmark"], r["item_limit"]): float(r["s"]) for r in df.iter_rows(named=True)}


def _stored_values(cat: Catalog) -> dict[str, float | None]:
    """Every stored evaluation's primary value by result id, as of a fresh snapshot: one listing of the store
    (``eval_results`` is held in memory), not one read per planned evaluation (a GET each on an object store)."""
    cat.refresh()
    table = cat.arrow("SELECT result_id, primary_value FROM eval_results")
    return dict(zip(table.column("result_id").to_pylist(), table.column("primary_value").to_pylist()))


def estimate(cat: Catalog, opts: SweepSpec, st: Setup) -> Estimate:
    """Count the sweep's evaluations and how many are stored (see the module docstring)."""
    values = _stored_values(cat)
    seeds, benches = list(opts.seeds), st.benches
    points = opts.points()
    est = Estimate(points=len(points), seeds=len(seeds), conditions=["ablation", *st.controls],
                   benchmarks=list(benches))
    est.nominal = len(seeds) * len(benches) * (1 + len(points) * (1 + len(st.controls)))
    planned: dict[str, tuple[str, int | None]] = {}
    todo: list[tuple[str, int | None]] = []
    probe = opts.controls.probe_tokens

    def plan(mode: str, set_id: str | None, seeds_: Sequence[int], bench_list: Sequence[str] = benches) -> None:
        for s in seeds_:
            for b in bench_list:
                limit = st.limit(b, opts)
                planned[st.result_id(mode, set_id, b, limit, s)] = (b, limit)

    def stored_value(rid: str) -> float | None:
        return float(values[rid]) if values.get(rid) is not None else None

    plan("none", None, seeds)
    mains: dict[tuple[str, float], tuple[setlib.Selection, NeuronSet | None]] = {}
    for p in points:
        if (p.by, p.fraction) not in mains:
            sel = selection(cat, opts, st.keys, p.by, p.fraction)
            mains[(p.by, p.fraction)] = (sel, _saved(cat, sel.content_hash))
        sel, main = mains[(p.by, p.fraction)]
        plan(p.mode, sel.content_hash, seeds)
        if "random" in st.controls:
            for s in seeds:
                if main is None:
                    todo.extend((b, st.limit(b, opts)) for b in benches)
                    continue
                rnd = setlib.select(cat, st.keys.model_id, st.keys.revision, random_like=main.name, seed=s,
                                    slice_id=st.keys.slice_id, spec_id=st.keys.spec_id)
                plan(p.mode, rnd.content_hash, [s])
        if "ppl-matched" not in st.controls:
            continue
        p0_id = st.result_id("none", None, PPL_BENCHMARK, probe, 0)
        pw_id = st.result_id(p.mode, sel.content_hash, PPL_BENCHMARK, probe, 0)
        planned[p0_id] = planned[pw_id] = (PPL_BENCHMARK, probe)
        p0, pw = stored_value(p0_id), stored_value(pw_id)
        bound = probe_bound(main_fraction(sel, st.d_mlp), opts.controls.resolution,  # type: ignore[arg-type]
                            opts.controls.max_fraction)
        if main is None or p0 is None or pw is None:
            est.probes_left += bound
            todo.extend((b, st.limit(b, opts)) for b in benches for _ in seeds)
            continue
        if not pw > p0:
            continue  # the ablation does not raise perplexity: no matched control
        seen: list[str] = []

        def replay(ns: NeuronSet, mode: str = p.mode) -> float:
            rid = st.result_id(mode, ns.set_id, PPL_BENCHMARK, probe, 0)
            value = stored_value(rid)
            if value is None:
                raise _Missing
            seen.append(rid)
            return value

        try:
            match = ppl_matched(cat, main, d_mlp=st.d_mlp, target=pw, baseline=p0, probe=replay,
                                tolerance=opts.controls.tolerance, resolution=opts.controls.resolution,
                                max_fraction=opts.controls.max_fraction)
        except _Missing:
            est.probes_stored += len(set(seen))
            est.probes_left += max(1, bound - len(seen))
            todo.extend((b, st.limit(b, opts)) for b in benches for _ in seeds)
            continue
        est.probes_stored += len(set(seen))
        plan(p.mode, match.neuron_set.set_id, seeds)
    est.planned = len(planned)
    est.result_ids = list(planned)
    missing = [v for rid, v in planned.items() if rid not in values]
    est.stored = est.planned - len(missing)
    est.pending = len(todo)
    todo = missing + todo + [(PPL_BENCHMARK, probe)] * est.probes_left
    times = _timings(cat, st.keys.model_id)
    known = [times[k] for k in todo if k in times]
    est.timed = len(known)
    est.seconds = float(sum(known)) if known else None
    return est
