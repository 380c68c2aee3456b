"""negdb.evals.metrics: decisions, grouped accuracy, multiple choice, paired bootstrap."""

from __future__ import annotations

import numpy as np
import pytest

from negdb.errors import BadArgument
from negdb.evals.metrics import group_accuracy, lambada, minimal_pair_correct, multiple_choice, paired_bootstrap
from negdb.evals.scoring import ContinuationScore


def _s(total: float, n: int, greedy: bool = False) -> ContinuationScore:
    return ContinuationScore(total, n, greedy)


def test_minimal_pairs_by_sum_and_mean():
    good = [_s(-10.0, 5), _s(-6.0, 2), _s(-4.0, 2)]
    bad = [_s(-12.0, 4), _s(-8.0, 4), _s(-4.0, 2)]
    assert minimal_pair_correct(good, bad).tolist() == [True, True, False]  # a tie is wrong
    assert minimal_pair_correct(good, bad, by="mean").tolist() == [True, False, False]
    assert minimal_pair_correct(np.array([1.0, 0.0]), np.array([0.0, 1.0])).tolist() == [True, False]
    with pytest.raises(BadArgument):
        minimal_pair_correct(good, bad, by="median")


def test_group_accuracy_macro_and_micro():
    acc = group_accuracy([1, 1, 1, 0, 0, 1], ["a", "a", "a", "a", "b", "b"])
    assert acc.per_group == {"a": 0.75, "b": 0.5} and acc.counts == {"a": 4, "b": 2}
    assert acc.macro == pytest.approx(0.625) and acc.micro == pytest.approx(4 / 6) and acc.n == 6
    assert group_accuracy([True, False]).per_group == {"all": 0.5}


def test_multiple_choice_acc_and_char_normalised_acc():
    logprobs = [[-3.0, -4.0], [-10.0, -12.0, -11.0]]
    choices = [["ab", "abcdefgh"], ["a" * 2, "a" * 10, "a" * 3]]
    out = multiple_choice(logprobs, [1, 1], choices)
    # item 0: acc picks 0; acc_norm: -1.5 vs -0.5 -> 1. item 1: acc picks 0; acc_norm: -5, -1.2, -3.67 -> 1.
    assert out["acc"].tolist() == [False, False]
    assert out["acc_norm"].tolist() == [True, True]


def test_lambada_metrics():
    out = lambada([_s(-1.0, 1, True), _s(-3.0, 2, False)])
    assert out["acc"] == 0.5 and out["ppl"] == pytest.approx(np.exp(2.0))


def _bootstrap_reference(a, b, n_boot, seed):
    a = np.asarray(a, float)
    b = np.asarray(b, float)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(a), size=(n_boot, len(a)))
    deltas = []
    for row in idx:  # one resample at a time
        deltas.append(np.mean(a[row]) - np.mean(b[row]))
    deltas = np.sort(deltas)
    return a.mean() - b.mean(), np.quantile(deltas, 0.025), np.quantile(deltas, 0.975)


@pytest.mark.parametrize("seed", [0, 7])
def test_paired_bootstrap_matches_direct_numpy(seed):
    rng = np.random.default_rng(100 + seed)
    a = rng.random(37) < 0.7
    b = rng.random(37) < 0.5
    got = paired_bootstrap(a, b, n_boot=500, seed=seed)
    assert got == pytest.approx(_bootstrap_reference(a, b, 500, seed), abs=1e-12)
    delta, lo, hi = got
    assert lo <= delta <= hi
    assert paired_bootstrap(a, b, n_boot=500, seed=seed) == got


def test_paired_bootstrap_edge_cases():
    same = np.array([1, 0, 1, 1])
    assert paired_bootstrap(same, same) == (0.0, 0.0, 0.0)
    assert paired_bootstrap([1, 1, 1], [0, 0, 0]) == (1.0, 1.0, 1.0)
    with pytest.raises(BadArgument):
        paired_bootstrap([1, 0], [1])
