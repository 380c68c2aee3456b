"""negdb.evals.metrics: stratified and perplexity bootstraps against brute-force references written here."""

from __future__ import annotations

import math

import numpy as np
import pytest

from negdb.errors import BadArgument, NegdbError
from negdb.evals.metrics import (bootstrap_samples, macro_delta, paired_bootstrap, ppl_bootstrap,
                                 stratified_bootstrap)
from tests.ablate_helpers import ci, percentile, ppl_reference, stratified_reference


def _strata(seed: int, sizes=(7, 19, 4), p=(0.8, 0.5, 0.3), shift=0.1, frac=False):
    """Paired decisions per stratum: b ~ Bernoulli(p), a flips some of them (a = b mostly: paired data)."""
    rng = np.random.default_rng(seed)
    out = []
    for n, q in zip(sizes, p):
        b = (rng.random(n) < q).astype(float)
        a = np.where(rng.random(n) < shift, 1 - b, b)
        if frac:  # decisions averaged over seeds, e.g. three random control sets
            a = (a + (rng.random(n) < q) + (rng.random(n) < q)) / 3
        out.append((a, b))
    return out


def test_percentile_helper_matches_numpy_default():
    # the hand-written reference itself, so that the references below are trustworthy
    rng = np.random.default_rng(0)
    for n in (1, 2, 5, 101):
        x = rng.normal(size=n)
        for q in (0, 2.5, 50, 97.5, 100):
            assert percentile(x, q) == pytest.approx(float(np.percentile(x, q)), abs=1e-12)


@pytest.mark.parametrize("seed", [0, 3, 11])
def test_one_stratum_is_the_paired_bootstrap(seed):
    (a, b), = _strata(seed, sizes=(23,), p=(0.6,))
    assert stratified_bootstrap([(a, b)], 500, seed) == paired_bootstrap(a, b, 500, seed)
    assert bootstrap_samples([(a, b)], 500, seed).shape == (500,)


@pytest.mark.parametrize("frac", [False, True])
def test_macro_delta_is_the_mean_of_per_stratum_differences(frac):
    strata = _strata(1, frac=frac)
    by_hand = sum(sum(x - y for x, y in zip(a, b)) / len(a) for a, b in strata) / len(strata)
    assert macro_delta(strata) == pytest.approx(by_hand, abs=1e-12)
    # not the micro (pooled) difference: the strata differ in size, so the two disagree here
    pooled = np.concatenate([a - b for a, b in strata]).mean()
    assert abs(macro_delta(strata) - pooled) > 1e-3


@pytest.mark.parametrize(("seed", "n_boot"), [(0, 200), (5, 333)])
@pytest.mark.parametrize("frac", [False, True])
def test_stratified_bootstrap_equals_brute_force(seed, n_boot, frac):
    strata = _strata(seed, sizes=(9, 14), p=(0.7, 0.4), frac=frac)
    d, lo, hi = stratified_bootstrap(strata, n_boot, seed)
    ref_d, boots = stratified_reference(strata, n_boot, seed)
    assert d == pytest.approx(ref_d, abs=1e-12)
    np.testing.assert_allclose(bootstrap_samples(strata, n_boot, seed), boots, atol=1e-12, rtol=0)
    ref_lo, ref_hi = ci(boots)
    assert (lo, hi) == pytest.approx((ref_lo, ref_hi), abs=1e-12)
    # the same draw for both conditions: swapping them mirrors the interval exactly
    d2, lo2, hi2 = stratified_bootstrap([(b, a) for a, b in strata], n_boot, seed)
    assert (d2, lo2, hi2) == pytest.approx((-d, -hi, -lo), abs=1e-12)


def test_resampling_stays_within_each_stratum():
    # per-item differences are constant within a stratum (1 in the first, 0 in the second, sizes 3 and 50):
    # resampling within strata keeps every draw's macro difference at exactly 0.5; pooling items across strata
    # (or weighting strata by size) would not
    strata = [(np.ones(3), np.zeros(3)), (np.zeros(50), np.zeros(50))]
    d, lo, hi = stratified_bootstrap(strata, 400, 1)
    assert (d, lo, hi) == (0.5, 0.5, 0.5)


def test_interval_width_matches_the_analytic_standard_error():
    # macro mean of independent per-stratum means: var = sum_s var_s / n_s / S^2 (bootstrap uses the plug-in var)
    strata = _strata(2, sizes=(40, 60, 80), p=(0.5, 0.5, 0.5), shift=0.3)
    boots = bootstrap_samples(strata, 4000, 9)
    se = math.sqrt(sum(np.var(a - b) / len(a) for a, b in strata)) / len(strata)
    assert np.std(boots) == pytest.approx(se, rel=0.08)
    assert np.mean(boots) == pytest.approx(macro_delta(strata), abs=3 * se / math.sqrt(4000) + 1e-3)


@pytest.mark.parametrize("seed", range(6))
def test_interval_contains_the_observed_difference(seed):
    strata = _strata(seed, sizes=(30, 25, 45))
    d, lo, hi = stratified_bootstrap(strata, 500, seed)
    assert lo <= d <= hi and lo < hi


def test_seed_changes_the_draws_and_repeats_them():
    strata = _strata(4)
    assert stratified_bootstrap(strata, 300, 1) == stratified_bootstrap(strata, 300, 1)
    assert not np.array_equal(bootstrap_samples(strata, 300, 1), bootstrap_samples(strata, 300, 2))


def test_stratified_errors():
    with pytest.raises(BadArgument):
        bootstrap_samples([], 10, 0)
    with pytest.raises(BadArgument):
        bootstrap_samples([(np.ones(3), np.ones(3))], 0, 0)
    with pytest.raises(BadArgument):
        bootstrap_samples([(np.ones(3), np.ones(3)), (np.ones(0), np.ones(0))], 10, 0)
    with pytest.raises((NegdbError, ValueError)):
        bootstrap_samples([(np.ones(3), np.ones(4))], 10, 0)


# ------------------------------------------------------------------------------------------------ perplexity


def _windows(seed: int, n: int = 12):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(20, 64, size=n).astype(float)
    tokens[-1] = 7  # a short last window
    nll_b = tokens * rng.uniform(2.0, 3.0, size=n)
    nll_a = nll_b + tokens * rng.normal(0.05, 0.05, size=n)  # a slightly worse condition, paired by window
    return nll_a, tokens, nll_b, tokens


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ppl_bootstrap_equals_brute_force(seed):
    nll_a, n_a, nll_b, n_b = _windows(seed)
    got = ppl_bootstrap(nll_a, n_a, nll_b, n_b, 300, seed)
    ref = ppl_reference(list(nll_a), list(n_a), list(nll_b), list(n_b), 300, seed)
    assert got == pytest.approx(ref, abs=1e-9)


def test_ppl_observed_delta_is_the_token_weighted_exp_ratio():
    nll_a, n_a, nll_b, n_b = _windows(7)
    d, lo, hi = ppl_bootstrap(nll_a, n_a, nll_b, n_b, 500, 0)
    ppl_a = math.exp(sum(nll_a) / sum(n_a))
    ppl_b = math.exp(sum(nll_b) / sum(n_b))
    assert d == pytest.approx(ppl_a - ppl_b, rel=1e-12)
    # token-weighted, not the mean of per-window perplexities
    unweighted = np.mean(np.exp(nll_a / n_a)) - np.mean(np.exp(nll_b / n_b))
    assert abs(d - unweighted) > 1e-6
    assert lo <= d <= hi
    # per-item units (LAMBADA): n = 1 each, ppl = exp(mean nll)
    ones = np.ones(len(nll_a))
    d1, _, _ = ppl_bootstrap(nll_a / n_a, ones, nll_b / n_b, ones, 50, 0)
    assert d1 == pytest.approx(math.exp(np.mean(nll_a / n_a)) - math.exp(np.mean(nll_b / n_b)), rel=1e-12)


def test_ppl_identical_conditions_give_a_zero_interval():
    nll_a, n_a, _, _ = _windows(3)
    assert ppl_bootstrap(nll_a, n_a, nll_a, n_a, 100, 0) == (0.0, 0.0, 0.0)


def test_ppl_errors():
    with pytest.raises(BadArgument):
        ppl_bootstrap([1.0, 2.0], [1, 1], [1.0], [1], 10, 0)
    with pytest.raises(BadArgument):
        ppl_bootstrap([], [], [], [], 10, 0)


def test_ppl_bootstrap_refuses_zero_draws_like_the_others():
    with pytest.raises(BadArgument):
        ppl_bootstrap([1.0, 2.0], [1, 1], [1.5, 2.0], [1, 1], 0, 0)
