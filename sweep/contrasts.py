"""The summaries of a sweep across seeds: dose-response, selectivity index, sign and selector contrasts.

Everything here is a pure function of per-item scores (:class:`Acc` decisions, :class:`Ppl` window losses),
one :data:`Scores` per (grid point, condition, seed), read from the stored evaluations by :func:`scores`.

One estimate (:func:`paired`) is the difference ``a - b`` of two conditions evaluated on the same items, averaged
over seeds, with a 95% percentile interval from a paired bootstrap over items (``n_boot`` draws):

- accuracy: per seed the macro difference over groups (BLiMP paradigm, TSE phenomenon) of ``mean(a) - mean(b)``,
  as :func:`negdb.ablate.compare.compare` reports it, then the mean over seeds. Items are resampled within each
  group, the same draw for ``a`` and ``b``. When every seed holds the same items of a benchmark (no ``--limit``,
  or a limit above every group size), the per-item values are first averaged over seeds and the items resampled
  once (seeds are not independent samples then); otherwise every (seed, group) is a stratum of its own
  (:func:`negdb.evals.metrics.bootstrap_samples`), which treats the seeds' subsamples as independent.
- perplexity: ``ppl(a) - ppl(b)`` with ``ppl = exp(sum NLL / sum tokens)``; identical windows in every seed
  (always for WikiText-2) have their NLL averaged over seeds first (as ``compare`` averages random seeds),
  else the seeds' resampled differences are averaged.
- one random stream per estimate: ``numpy.random.default_rng(seed)`` consumed group by group in first-seen order,
  so that with one seed an estimate equals ``compare``'s row. A mean over benchmarks (``grammar``: BLiMP acc_sum
  and TSE acc_mean; ``suite``: each suite benchmark's first metric) averages the members' estimates draw by
  draw, member ``i`` drawing from ``default_rng(seed + i)``, again as ``compare`` does.

Summary rows (``sweep_summary``):

- ``dose``: a condition (ablation, random, ppl-matched) against the baseline at one point.
- ``selectivity``: with losses ``L = -delta`` (accuracy, as a fraction of items),
  ``SI = (L_grammar(W) - L_grammar(PM)) - (L_suite(W) - L_suite(PM))`` between the ablation W and its
  perplexity-matched control PM on the same items: a difference-in-differences, > 0 when W hurts grammar more,
  relative to the rest of the suite, than the control that does the same perplexity damage (the double
  dissociation). The baseline cancels, so ``SI = D_suite - D_grammar`` with ``D = acc(W) - acc(PM)``;
  grammar and suite here average whichever of their benchmarks were evaluated (at least one each).
- ``sign``: mode A minus mode B (``neg-pos``, ``neg-both``, ``pos-both``) of the ablation of the same set.
- ``selector``: the reference selector (``w_dist``) minus each other one at equal fraction and mode; the items
  are shared, the sets differ.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from negdb.ablate.compare import decisions, item_nll
from negdb.evals.metrics import DECISION_COLUMN, SUMMARIES
from negdb.errors import BadArgument
from negdb.evals import registry
from negdb.evals.metrics import bootstrap_samples, ppl_bootstrap_samples
from negdb.store.results import StoredResult

Key = tuple[str, str]
"""(benchmark, metric); summaries are ``(grammar|suite, mean)``."""
CONDITIONS = ("ablation", "random", "ppl-matched")
REFERENCE_SELECTOR = "w_dist"


# ---------------------------------------------------------------------------------------------- per-item scores


@dataclass(frozen=True, eq=False)
class Items:
    """The items of one benchmark as evaluated: positions and (for grouped benchmarks) group codes."""

    ids: np.ndarray
    codes: np.ndarray | None
    labels: tuple[str, ...] = ()

    def same(self, other: Items) -> bool:
        return self is other or (np.array_equal(self.ids, other.ids) and self.labels == other.labels
                                 and (self.codes is None) == (other.codes is None)
                                 and (self.codes is None or np.array_equal(self.codes, other.codes)))

    def split(self, values: np.ndarray) -> list[np.ndarray]:
        """``values`` per group, groups in first-seen order (one part when ungrouped)."""
        if self.codes is None:
            return [values]
        return [values[self.codes == j] for j in range(len(self.labels))]


@dataclass(frozen=True, eq=False)
class Acc:
    """Per-item decisions (1 correct, 0 wrong) of one condition on one seed's items."""

    values: np.ndarray
    items: Items


@dataclass(frozen=True, eq=False)
class Ppl:
    """Per-window summed NLL and predicted tokens (per item NLL and ones for LAMBADA)."""

    nll: np.ndarray
    n: np.ndarray
    items: Items


Unit = Acc | Ppl
Scores = dict[Key, Unit]


def _items(frame: Any, grouped: bool, like: Items | None) -> Items:
    ids = frame["item"].to_numpy().astype(np.int64)
    codes, labels = None, ()
    if grouped:
        groups = [str(g) for g in frame["grp"].to_list()]
        labels = tuple(dict.fromkeys(groups))
        index = {g: j for j, g in enumerate(labels)}
        codes = np.array([index[g] for g in groups], dtype=np.int32)
    out = Items(ids, codes, labels)
    return like if like is not None and like.same(out) else out


def scores(results: dict[str, list[StoredResult]], like: Scores | None = None) -> Scores:
    """Every metric of every benchmark of one condition as per-item arrays (decisions averaged over results).

    ``like`` (the baseline's scores on the same items) lets equal item lists share one :class:`Items`.
    """
    out: Scores = {}
    for bench, res in results.items():
        spec = registry.get(bench)
        frame = res[0].items()
        prev = next((u.items for (b, _), u in (like or {}).items() if b == bench), None)
        items = _items(frame, spec.group is not None, prev)
        for metric in spec.metrics:
            if metric == "ppl":
                nll, n = item_nll(res)
                out[(bench, metric)] = Ppl(nll, n, items)
            else:
                vals, _ = decisions(res, DECISION_COLUMN[metric])
                out[(bench, metric)] = Acc(vals.astype(np.float32), items)
    return out


# ---------------------------------------------------------------------------------------------- estimates


@dataclass(frozen=True)
class Boot:
    """An estimate: its value and bootstrap draws; ``n`` items (windows) per seed, ``n_seeds`` seeds."""

    value: float
    samples: np.ndarray
    n: int
    n_seeds: int

    @property
    def lo(self) -> float:
        return float(np.percentile(self.samples, 2.5))

    @property
    def hi(self) -> float:
        return float(np.percentile(self.samples, 97.5))


def paired(pairs: Sequence[tuple[Unit, Unit]], n_boot: int, seed: int) -> Boot:
    """Mean over seeds of ``a - b`` (one pair per seed, same items within a pair); see the module docstring."""
    if not pairs:
        raise BadArgument("nothing to compare: no seed has both conditions")
    for a, b in pairs:
        if type(a) is not type(b) or not a.items.same(b.items):
            raise BadArgument("the two conditions of a contrast hold different items (other --limit or seed?)")
    rng = np.random.default_rng(seed)
    same = all(a.items.same(pairs[0][0].items) for a, _ in pairs)
    first = pairs[0][0]
    if isinstance(first, Ppl):
        return _paired_ppl(pairs, same, n_boot, rng)
    if same:  # the seeds share their items: average per item, resample once
        a = np.mean([p[0].values for p in pairs], axis=0, dtype=np.float64)
        b = np.mean([p[1].values for p in pairs], axis=0, dtype=np.float64)
        per_group = [[s] for s in zip(first.items.split(a), first.items.split(b))]
    else:  # every (seed, group) a stratum, groups in the first seed's order
        labels = first.items.labels or ("",)
        if any(set(p[0].items.labels or ("",)) != set(labels) for p in pairs):
            raise BadArgument("the seeds' items fall in different groups: compare seeds of one --limit only")
        by_label: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {g: [] for g in labels}
        for a_, b_ in pairs:
            parts = zip(a_.items.labels or ("",), a_.items.split(a_.values.astype(np.float64)),
                        b_.items.split(b_.values.astype(np.float64)))
            for g, x, y in parts:
                by_label[g].append((x, y))
        per_group = list(by_label.values())
    value = float(np.mean([np.mean([(x - y).mean() for x, y in g]) for g in per_group]))
    samples = np.mean([bootstrap_samples(g, n_boot, rng) for g in per_group], axis=0)
    return Boot(value, samples, int(first.values.size), len(pairs))


def _ppl(nll: np.ndarray, n: np.ndarray) -> float:
    return math.exp(float(nll.sum()) / float(n.sum()))


def _paired_ppl(pairs: Sequence[tuple[Any, Any]], same: bool, n_boot: int, rng: np.random.Generator) -> Boot:
    if same and all(np.array_equal(p[0].n, pairs[0][0].n) and np.array_equal(p[1].n, pairs[0][1].n)
                    for p in pairs):
        na = np.mean([p[0].nll for p in pairs], axis=0)
        nb = np.mean([p[1].nll for p in pairs], axis=0)
        ca, cb = pairs[0][0].n, pairs[0][1].n
        return Boot(_ppl(na, ca) - _ppl(nb, cb), ppl_bootstrap_samples(na, ca, nb, cb, n_boot, rng),
                    int(na.size), len(pairs))
    value = float(np.mean([_ppl(a.nll, a.n) - _ppl(b.nll, b.n) for a, b in pairs]))
    samples = np.mean([ppl_bootstrap_samples(a.nll, a.n, b.nll, b.n, n_boot, rng) for a, b in pairs], axis=0)
    return Boot(value, samples, int(pairs[0][0].nll.size), len(pairs))


def mean_of(parts: Sequence[Boot]) -> Boot:
    """The mean of estimates, draw by draw (every part weighs the same)."""
    return Boot(float(np.mean([p.value for p in parts])), np.mean([p.samples for p in parts], axis=0),
                sum(p.n for p in parts), min(p.n_seeds for p in parts))


def minus(x: Boot, y: Boot) -> Boot:
    """``x - y``, draw by draw."""
    return Boot(x.value - y.value, x.samples - y.samples, x.n + y.n, min(x.n_seeds, y.n_seeds))


def negate(x: Boot) -> Boot:
    return Boot(0.0 - x.value, 0.0 - x.samples, x.n, x.n_seeds)  # no negative zeros in tables


def summary_members(keys: Iterable[Key], minimum: int = 2) -> dict[str, list[Key]]:
    """``grammar`` and ``suite`` -> their (benchmark, metric) parts among ``keys`` (as ``compare``: >= minimum)."""
    have = set(keys)
    suite = tuple((b, registry.get(b).metrics[0]) for b in registry.aliases().get("suite", []))
    out = {}
    for name, members in {**SUMMARIES, "suite": suite}.items():
        present = [m for m in members if m in have]
        if len(present) >= minimum:
            out[name] = present
    return out


def estimates(pairs: dict[Key, list[tuple[Unit, Unit]]], n_boot: int, seed: int) -> dict[Key, Boot]:
    """Per (benchmark, metric) :func:`paired`, plus the ``grammar``/``suite`` means (member i: ``seed + i``)."""
    out = {k: paired(v, n_boot, seed) for k, v in pairs.items() if v}
    for name, members in summary_members([k for k, v in pairs.items() if v]).items():
        out[(name, "mean")] = mean_of([paired(pairs[m], n_boot, seed + i) for i, m in enumerate(members)])
    return out


def selectivity(w: Sequence[Scores], pm: Sequence[Scores], n_boot: int, seed: int) -> dict[Key, Boot]:
    """The selectivity index of the ablation ``w`` against its matched control ``pm`` (one Scores per seed).

    Returns ``{("selectivity", "si"): SI, ("grammar", "loss_w_minus_pm"): L_g(W) - L_g(PM),
    ("suite", "loss_w_minus_pm"): L_s(W) - L_s(PM)}``, or ``{}`` without a grammar and a suite benchmark.
    Member ``i`` of grammar + suite (in that order) draws from ``default_rng(seed + i)``.
    """
    keys = set.intersection(*(set(s) for s in [*w, *pm])) if w and pm else set()
    groups = summary_members(keys, minimum=1)
    if "grammar" not in groups or "suite" not in groups:
        return {}
    members = [*groups["grammar"], *groups["suite"]]
    d = [paired([(a[m], b[m]) for a, b in zip(w, pm)], n_boot, seed + i) for i, m in enumerate(members)]
    dg, ds = mean_of(d[:len(groups["grammar"])]), mean_of(d[len(groups["grammar"]):])
    return {("selectivity", "si"): minus(ds, dg), ("grammar", "loss_w_minus_pm"): negate(dg),
            ("suite", "loss_w_minus_pm"): negate(ds)}


# ---------------------------------------------------------------------------------------------- summary rows

PointKey = tuple[str, float, str, str, int]
"""(by, fraction, mode, condition, seed)."""


def _row(kind: str, by: str, fraction: float, mode: str, condition: str | None, key: Key, b: Boot
         ) -> dict[str, Any]:
    return {"kind": kind, "selector": by, "fraction": fraction, "mode": mode, "condition": condition,
            "benchmark": key[0], "metric": key[1], "value": b.value, "ci_lo": b.lo, "ci_hi": b.hi, "n": b.n,
            "n_seeds": b.n_seeds}


def _pairs(xs: Sequence[Scores | None], ys: Sequence[Scores | None]) -> dict[Key, list[tuple[Unit, Unit]]]:
    """Per key present in both, the (x, y) pairs of the seeds where both conditions exist."""
    both = [(x, y) for x, y in zip(xs, ys) if x is not None and y is not None]
    if not both:
        return {}
    keys = [k for k in both[0][0] if all(k in x and k in y for x, y in both)]
    return {k: [(x[k], y[k]) for x, y in both] for k in keys}


def summarize(base: dict[int, Scores], data: dict[PointKey, Scores], *, bys: Sequence[str],
              fractions: Sequence[float], modes: Sequence[str], seeds: Sequence[int], n_boot: int,
              seed: int) -> list[dict[str, Any]]:
    """Every ``sweep_summary`` row (without ``analysis_id``) from the baseline and condition scores per seed."""
    rows: list[dict[str, Any]] = []
    bases = [base.get(s) for s in seeds]

    def cond(by: str, f: float, mode: str, c: str) -> list[Scores | None]:
        return [data.get((by, f, mode, c, s)) for s in seeds]

    for by in bys:
        for f in fractions:
            for mode in modes:
                for c in CONDITIONS:
                    for key, b in estimates(_pairs(cond(by, f, mode, c), bases), n_boot, seed).items():
                        rows.append(_row("dose", by, f, mode, c, key, b))
                both = [(x, y) for x, y in zip(cond(by, f, mode, "ablation"), cond(by, f, mode, "ppl-matched"))
                        if x is not None and y is not None]
                for key, b in selectivity([x for x, _ in both], [y for _, y in both], n_boot, seed).items():
                    rows.append(_row("selectivity", by, f, mode, "ablation-ppl-matched", key, b))
            for i, ma in enumerate(modes):
                for mb in modes[i + 1:]:
                    pairs = _pairs(cond(by, f, ma, "ablation"), cond(by, f, mb, "ablation"))
                    for key, b in estimates(pairs, n_boot, seed).items():
                        rows.append(_row("sign", by, f, f"{ma}-{mb}", "ablation", key, b))
    ref = REFERENCE_SELECTOR if REFERENCE_SELECTOR in bys else bys[0]
    for other in [b for b in bys if b != ref]:
        for f in fractions:
            for mode in modes:
                pairs = _pairs(cond(ref, f, mode, "ablation"), cond(other, f, mode, "ablation"))
                for key, b in estimates(pairs, n_boot, seed).items():
                    rows.append(_row("selector", f"{ref}-{other}", f, mode, "ablation", key, b))
    return rows
