"""``negdb sweep``'s pure statistics (:mod:`negdb.sweep.contrasts`, :mod:`negdb.sweep.estimate`) on synthetic
scores, against references written here with plain loops (docs/ANALYSES.md)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from negdb.errors import NegdbError
from negdb.evals import registry
from negdb.sweep import SweepSpec, contrasts
from negdb.sweep.estimate import probe_bound
from tests.ablate_helpers import draws, percentile, ppl_reference, stratified_reference


def _unit(values, ids, groups=None):
    ids = np.asarray(ids)
    if groups is None:
        items = contrasts.Items(ids, None)
    else:
        labels = tuple(dict.fromkeys(groups))
        items = contrasts.Items(ids, np.array([labels.index(g) for g in groups]), labels)
    return contrasts.Acc(np.asarray(values, dtype=np.float32), items)


def _rand_pairs(rng, n_seeds, n, same, groups=None):
    out = []
    for s in range(n_seeds):
        ids = list(range(n)) if same else list(rng.choice(1000, n, replace=False))
        b = (rng.random(n) < 0.6).astype(float)
        a = np.where(rng.random(n) < 0.3, 1 - b, b)
        out.append((_unit(a, ids, groups), _unit(b, ids, groups)))
    return out


def _ref_units(pairs, seed, n_boot):
    """The documented procedure on synthetic units: same items -> average over seeds; else seeds as strata."""
    labels = pairs[0][0].items.labels or ("",)

    def parts(u):
        codes = u.items.codes
        return {g: [float(v) for v, c in zip(u.values, codes if codes is not None else [0] * len(u.values))
                    if c == j] for j, g in enumerate(u.items.labels or ("",))}
    same = all(list(a.items.ids) == list(pairs[0][0].items.ids) for a, _ in pairs)
    rng = np.random.default_rng(seed)
    boots = [0.0] * n_boot
    value = 0.0
    for g in labels:
        if same:
            a = [sum(x) / len(pairs) for x in zip(*(parts(p[0])[g] for p in pairs))]
            b = [sum(x) / len(pairs) for x in zip(*(parts(p[1])[g] for p in pairs))]
            strata = [(a, b)]
        else:
            strata = [(parts(p[0])[g], parts(p[1])[g]) for p in pairs]
        value += sum(sum(x - y for x, y in zip(a, b)) / len(a) for a, b in strata) / len(strata) / len(labels)
        for a, b in strata:
            d = [x - y for x, y in zip(a, b)]
            for k, row in enumerate(draws(rng, len(d), n_boot)):
                boots[k] += sum(d[i] for i in row) / len(d) / len(strata) / len(labels)
    return value, percentile(boots, 2.5), percentile(boots, 97.5), boots


@pytest.mark.parametrize("same", [True, False])
@pytest.mark.parametrize("grouped", [True, False])
def test_paired_against_reference(same, grouped):
    rng = np.random.default_rng(3)
    groups = ["x", "y", "y", "z", "x", "z", "y", "x", "z", "z", "x", "y"] if grouped else None
    pairs = _rand_pairs(rng, 3, 12, same, groups)
    b = contrasts.paired(pairs, 300, 7)
    value, lo, hi, _ = _ref_units(pairs, 7, 300)
    assert (b.value, b.lo, b.hi) == pytest.approx((value, lo, hi), abs=1e-12)
    assert b.n_seeds == 3 and b.n == 12


def test_seeds_with_the_same_items_are_not_independent_samples():
    # three seeds that evaluated the same items to the same decisions say no more than one seed
    (pair,) = _rand_pairs(np.random.default_rng(1), 1, 20, True)
    one, three = contrasts.paired([pair], 300, 2), contrasts.paired([pair] * 3, 300, 2)
    assert (three.value, three.lo, three.hi) == (one.value, one.lo, one.hi)
    _, naive = stratified_reference([(pair[0].values, pair[1].values)] * 3, 300, 2)  # seeds as strata
    assert (one.hi - one.lo) > (percentile(naive, 97.5) - percentile(naive, 2.5))


def test_one_seed_is_the_comparison_of_negdb_ablate():
    rng = np.random.default_rng(5)
    groups = ["x", "y", "x", "y", "y", "x", "z", "z"]
    pairs = _rand_pairs(rng, 1, 8, True, groups)
    a, b = pairs[0]
    strata = [(a.values[a.items.codes == j].astype(float), b.values[b.items.codes == j].astype(float))
              for j in range(3)]
    value, boots = stratified_reference(strata, 400, 11)
    got = contrasts.paired(pairs, 400, 11)
    assert (got.value, got.lo, got.hi) == pytest.approx((value, percentile(boots, 2.5), percentile(boots, 97.5)))


def test_perplexity_estimates():
    rng = np.random.default_rng(2)
    ids = contrasts.Items(np.arange(6), None)
    n = np.array([5.0, 7, 6, 5, 9, 4])

    def ppl_unit(items=ids, nn=n):
        return contrasts.Ppl(rng.random(len(nn)) * 20 + 10, nn, items)

    same = [(ppl_unit(), ppl_unit()) for _ in range(3)]
    got = contrasts.paired(same, 300, 4)
    na = [sum(v) / 3 for v in zip(*(p[0].nll for p in same))]
    nb = [sum(v) / 3 for v in zip(*(p[1].nll for p in same))]
    assert (got.value, got.lo, got.hi) == pytest.approx(ppl_reference(na, n, nb, n, 300, 4), abs=1e-9)
    # different items per seed (LAMBADA with --limit): the mean of the seeds' differences, one stream
    diff = []
    for s in range(2):
        items = contrasts.Items(np.arange(6) + 10 * s, None)
        diff.append((ppl_unit(items), ppl_unit(items)))
    got = contrasts.paired(diff, 300, 4)
    r = np.random.default_rng(4)
    boots = [0.0] * 300
    for a, b in diff:
        for k, row in enumerate(draws(r, 6, 300)):
            pa = math.exp(sum(a.nll[i] for i in row) / sum(a.n[i] for i in row))
            pb = math.exp(sum(b.nll[i] for i in row) / sum(b.n[i] for i in row))
            boots[k] += (pa - pb) / 2
    value = sum(math.exp(a.nll.sum() / a.n.sum()) - math.exp(b.nll.sum() / b.n.sum()) for a, b in diff) / 2
    assert (got.value, got.lo, got.hi) == pytest.approx((value, percentile(boots, 2.5), percentile(boots, 97.5)))


def test_summary_means_and_selectivity_on_synthetic_scores():
    rng = np.random.default_rng(9)
    keys = [("blimp", "acc_sum"), ("tse", "acc_mean"), ("copa", "acc"), ("piqa", "acc")]
    pairs = {k: _rand_pairs(rng, 2, 10, False, ["p", "q"] * 5 if k[0] in ("blimp", "tse") else None) for k in keys}
    est = contrasts.estimates(pairs, 200, 3)
    suite = [(b, "acc") for b in registry.aliases()["suite"] if b in ("copa", "piqa")]  # the alias's order
    for name, members in (("grammar", keys[:2]), ("suite", suite)):
        refs = [_ref_units(pairs[m], 3 + i, 200) for i, m in enumerate(members)]
        boots = [sum(r[3][k] for r in refs) / 2 for k in range(200)]
        g = est[(name, "mean")]
        assert (g.value, g.lo, g.hi) == pytest.approx((sum(r[0] for r in refs) / 2, percentile(boots, 2.5),
                                                      percentile(boots, 97.5)))
    # selectivity: W loses grammar items the matched control keeps, and equal suite accuracy -> SI > 0
    ids = list(range(10))
    w = [{("blimp", "acc_sum"): _unit([0] * 10, ids, ["p"] * 10), ("copa", "acc"): _unit([1] * 10, ids)}]
    pm = [{("blimp", "acc_sum"): _unit([1] * 6 + [0] * 4, ids, ["p"] * 10), ("copa", "acc"): _unit([1] * 10, ids)}]
    si = contrasts.selectivity(w, pm, 100, 0)
    assert si[("selectivity", "si")].value == pytest.approx(0.6)
    assert si[("grammar", "loss_w_minus_pm")].value == pytest.approx(0.6)
    assert si[("suite", "loss_w_minus_pm")].value == pytest.approx(0.0)
    assert contrasts.selectivity(w, [{("blimp", "acc_sum"): pm[0][("blimp", "acc_sum")]}], 100, 0) == {}


def test_pairs_must_share_items():
    a = _unit([1, 0, 1], [0, 1, 2])
    b = _unit([1, 1, 1], [0, 1, 3])
    with pytest.raises(NegdbError):
        contrasts.paired([(a, b)], 10, 0)


def test_probe_bound_and_options():
    assert probe_bound(0.01, 0.005, 0.9) >= 1 + math.ceil(math.log2(0.9 / 0.02))
    assert probe_bound(0.6, 0.005, 0.9) == 1 + math.ceil(math.log2(0.45 / 0.005))
    from negdb.cli import parse

    o = SweepSpec("m", fractions=parse.percentages("0.5, 1,2%,1"), by=("w_dist", "skew"), modes=("neg", "both"),
                  seeds=(4, 5))
    assert o.fractions == (0.005, 0.01, 0.02) and o.seeds == (4, 5)
    assert [p.k for p in o.points()][:3] == ["0.5%", "0.5%", "1%"] and len(o.points()) == 2 * 3 * 2
    assert o.run_sampling(5).seed == o.run_controls(5).seed == o.run_bootstrap(5).seed == 5
    assert o.run_controls(5).seeds == 1
    for bad in ({"fractions": ()}, {"fractions": (0.01, 1.5)}, {"by": ("w_dist", "nope")}, {"modes": ()},
                {"direction": "up"}, {"seeds": ()}, {"seeds": (-1,)}, {"evals": "ppl,blimp"}):
        with pytest.raises(NegdbError):
            SweepSpec("m", **bad)
    for bad in ("", "abc", "150", "0"):
        with pytest.raises(NegdbError):
            parse.percentages(bad)
