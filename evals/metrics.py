"""Decisions and accuracies from continuation scores, and a paired bootstrap for comparing two runs.

All functions are pure numpy over arrays (or :class:`negdb.evals.scoring.ContinuationScore` lists).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from negdb.errors import BadArgument

DECISION_COLUMN = {"acc_sum": "correct", "acc": "correct", "acc_mean": "correct_alt", "acc_norm": "correct_alt"}
"""Accuracy metric -> the ``eval_items`` column holding its per-item decision."""
SUMMARIES = {"grammar": (("blimp", "acc_sum"), ("tse", "acc_mean"))}
"""Summary rows of a comparison: name -> (benchmark, metric) parts, averaged. ``suite`` is added from the
suite alias (``negdb.ablate.compare``)."""


@dataclass(frozen=True)
class GroupAccuracy:
    """Accuracy per group and overall.

    Attributes:
        per_group: group -> accuracy, in first-seen order.
        counts: group -> number of items.
        macro: mean of the per-group accuracies (how BLiMP and TSE papers report).
        micro: accuracy over all items.
        n: number of items.
    """

    per_group: dict[str, float]
    counts: dict[str, int]
    macro: float
    micro: float
    n: int


def _arr(x: Any, dtype: Any = np.float64) -> np.ndarray:
    return np.asarray(x, dtype=dtype)


def pair_scores(scores: Sequence[Any], by: str = "sum") -> np.ndarray:
    """``(n,)`` log-probabilities of ContinuationScores: their total (``"sum"``) or per-token mean (``"mean"``)."""
    if by == "sum":
        return _arr([s.logprob_sum for s in scores])
    if by == "mean":
        return _arr([s.logprob_sum / s.n_tokens for s in scores])
    raise BadArgument(f"by must be 'sum' or 'mean', got {by!r}")


def minimal_pair_correct(good: Sequence[Any] | np.ndarray, bad: Sequence[Any] | np.ndarray,
                         by: str = "sum") -> np.ndarray:
    """Whether each good sentence scores strictly higher than its bad one (a tie counts as wrong).

    ``good`` / ``bad`` are ContinuationScores (compared by total, ``by="sum"``, or mean per-token log-probability,
    ``by="mean"``) or arrays of log-probabilities already reduced.
    """
    g = pair_scores(good, by) if len(good) and not np.isscalar(good[0]) else _arr(good)
    b = pair_scores(bad, by) if len(bad) and not np.isscalar(bad[0]) else _arr(bad)
    if g.shape != b.shape:
        raise BadArgument(f"good and bad differ in length ({g.shape[0]} vs {b.shape[0]})")
    return g > b


def group_accuracy(correct: Sequence[bool] | np.ndarray, groups: Sequence[str | None] | None = None) -> GroupAccuracy:
    """Per-group, macro (mean over groups) and micro (over items) accuracy; no groups -> one group ``"all"``."""
    c = _arr(correct, bool)
    if c.size == 0:
        raise BadArgument("no items to score")
    keys = ["all"] * c.size if groups is None else [str(g) for g in groups]
    if len(keys) != c.size:
        raise BadArgument(f"{c.size} decisions but {len(keys)} group labels")
    hits: dict[str, int] = {}
    counts: dict[str, int] = {}
    for k, ok in zip(keys, c.tolist()):
        counts[k] = counts.get(k, 0) + 1
        hits[k] = hits.get(k, 0) + int(ok)
    per = {k: hits[k] / counts[k] for k in counts}
    return GroupAccuracy(per, counts, float(np.mean(list(per.values()))), float(c.mean()), int(c.size))


def multiple_choice(logprobs: Sequence[Sequence[float]], gold: Sequence[int],
                    choices: Sequence[Sequence[str]] | None = None) -> dict[str, np.ndarray]:
    """lm-eval multiple-choice decisions per item.

    Args:
        logprobs: per item, the total log-probability of each choice's continuation.
        gold: per item, the index of the correct choice.
        choices: per item, the choice strings (without the target delimiter); given, ``acc_norm`` is returned too:
            the argmax of ``logprob / len(choice)`` in characters, as lm-eval's ``acc_norm``.

    Returns:
        ``{"acc": bool array, "acc_norm": bool array (with choices)}``; ties go to the first choice (``argmax``).
    """
    if len(logprobs) != len(gold):
        raise BadArgument(f"{len(logprobs)} items but {len(gold)} gold labels")
    acc = np.array([int(np.argmax(lp)) == int(g) for lp, g in zip(logprobs, gold)], dtype=bool)
    out = {"acc": acc}
    if choices is not None:
        norm = []
        for lp, ch, g in zip(logprobs, choices, gold):
            lengths = _arr([float(len(c)) for c in ch])
            norm.append(int(np.argmax(_arr(lp) / lengths)) == int(g))
        out["acc_norm"] = np.array(norm, dtype=bool)
    return out


def lambada(scores: Sequence[Any]) -> dict[str, float]:
    """LAMBADA: ``acc`` (share of greedy last words) and ``ppl`` = exp(-mean log P(last word | context))."""
    if not scores:
        raise BadArgument("no items to score")
    lp = _arr([s.logprob_sum for s in scores])
    return {"acc": float(np.mean([s.is_greedy for s in scores])), "ppl": float(math.exp(-lp.mean()))}


def paired_bootstrap(a_correct: Sequence[Any] | np.ndarray, b_correct: Sequence[Any] | np.ndarray,
                     n_boot: int = 1000, seed: int = 0) -> tuple[float, float, float]:
    """Paired bootstrap of the accuracy difference ``mean(a) - mean(b)`` over the same items.

    Resamples item indices with replacement (``n_boot`` times, ``numpy.random.default_rng(seed)``), applying each
    draw to both runs, and returns ``(delta, lo, hi)``: the observed difference and the 2.5th / 97.5th percentiles
    (linear interpolation) of the resampled differences, a 95% interval.
    """
    a = _arr(a_correct)
    b = _arr(b_correct)
    if a.shape != b.shape or a.ndim != 1:
        raise BadArgument(f"paired bootstrap needs two 1-d arrays of the same length, got {a.shape} and {b.shape}")
    if a.size == 0:
        raise BadArgument("paired bootstrap needs at least one item")
    if n_boot < 1:
        raise BadArgument(f"n_boot must be >= 1, got {n_boot}")
    diff = a - b
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, diff.size, size=(n_boot, diff.size))
    boots = diff[idx].mean(axis=1)
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return float(diff.mean()), float(lo), float(hi)


def bootstrap_samples(strata: Sequence[tuple[Any, Any]], n_boot: int = 1000,
                      seed: int | np.random.Generator = 0) -> np.ndarray:
    """``(n_boot,)`` resampled macro differences ``mean over strata of (mean(a) - mean(b))``.

    Each stratum is a pair of equal-length per-item arrays (the same items under two conditions, e.g. one BLiMP
    paradigm; values may be fractions, e.g. decisions averaged over seeds). Items are resampled with replacement
    within each stratum (``numpy.random.default_rng(seed)``; a Generator is used as is, consumed in stratum
    order), the same draw for both conditions.
    """
    if not strata:
        raise BadArgument("bootstrap needs at least one stratum")
    if n_boot < 1:
        raise BadArgument(f"n_boot must be >= 1, got {n_boot}")
    rng = np.random.default_rng(seed)
    total = np.zeros(n_boot)
    for a, b in strata:
        d = _arr(a) - _arr(b)
        if d.ndim != 1 or d.size == 0:
            raise BadArgument("every stratum needs two 1-d arrays of the same, non-zero length")
        total += d[rng.integers(0, d.size, size=(n_boot, d.size))].mean(axis=1)
    return total / len(strata)


def macro_delta(strata: Sequence[tuple[Any, Any]]) -> float:
    """The observed ``mean over strata of (mean(a) - mean(b))``."""
    return float(np.mean([(_arr(a) - _arr(b)).mean() for a, b in strata]))


def stratified_bootstrap(strata: Sequence[tuple[Any, Any]], n_boot: int = 1000, seed: int = 0
                         ) -> tuple[float, float, float]:
    """``(delta, lo, hi)``: the macro difference and its 95% percentile interval (:func:`bootstrap_samples`).

    With one stratum this is the plain paired bootstrap of :func:`paired_bootstrap`.
    """
    boots = bootstrap_samples(strata, n_boot, seed)
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return macro_delta(strata), float(lo), float(hi)


def ppl_bootstrap(nll_a: Any, n_a: Any, nll_b: Any, n_b: Any, n_boot: int = 1000, seed: int = 0
                  ) -> tuple[float, float, float]:
    """Paired bootstrap of a perplexity difference ``ppl(a) - ppl(b)`` over units (windows or items).

    ``nll_*`` are per-unit summed NLLs and ``n_*`` per-unit token counts; ``ppl = exp(sum nll / sum n)`` of the
    resampled units, the same draw for both. Returns ``(delta, lo, hi)``, a 95% percentile interval.
    """
    boot = ppl_bootstrap_samples(nll_a, n_a, nll_b, n_b, n_boot, seed)
    na, ca, nb, cb = _arr(nll_a), _arr(n_a), _arr(nll_b), _arr(n_b)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return float(math.exp(na.sum() / ca.sum()) - math.exp(nb.sum() / cb.sum())), float(lo), float(hi)


def ppl_bootstrap_samples(nll_a: Any, n_a: Any, nll_b: Any, n_b: Any, n_boot: int = 1000,
                          seed: int | np.random.Generator = 0) -> np.ndarray:
    """``(n_boot,)`` resampled differences ``ppl(a) - ppl(b)`` of :func:`ppl_bootstrap` (one ``(n_boot, n)``
    block of unit indices from ``numpy.random.default_rng(seed)``; a Generator is used as is)."""
    if n_boot < 1:
        raise BadArgument(f"n_boot must be >= 1, got {n_boot}")
    na, ca, nb, cb = _arr(nll_a), _arr(n_a), _arr(nll_b), _arr(n_b)
    if not (na.shape == ca.shape == nb.shape == cb.shape) or na.ndim != 1 or na.size == 0:
        raise BadArgument("ppl bootstrap needs four 1-d arrays of the same, non-zero length")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, na.size, size=(n_boot, na.size))
    return np.exp(na[idx].sum(1) / ca[idx].sum(1)) - np.exp(nb[idx].sum(1) / cb[idx].sum(1))
