"""Mapping difficulty (``md``) as in the authors' code, and the within-layer percentile of a statistic.

For P disjoint token pairs (a_k, b_k):
d_in[k] = ||h[a_k] - h[b_k]|| / max_k ||h[a_k] - h[b_k]||, d_out[k, j] = |x[a_k, j] - x[b_k, j]| / median_k(same),
md_j = mean_k d_out[k, j] / d_in[k].

Two choices the definition leaves open, made here: pairs with d_in == 0 (identical MLP inputs, where
d_out / d_in is 0 / 0) are dropped from both the median and the mean; a neuron whose median |x_a - x_b| is 0
gets NaN (the database stores NULL) instead of a division by zero.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata

from negdb.errors import BadArgument

from .rows import available_threads, row_dot, run_parallel

__all__ = ["PairPlan", "draw_pairs", "input_distances", "mapping_difficulty", "md_rows", "pair_plan",
           "percentile_rank"]

_TILE = 64  # pairs per transpose tile


def draw_pairs(n_tokens: int, n_pairs: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n_pairs`` disjoint token pairs ``(a, b)`` (int64), all 2P tokens distinct, from ``default_rng(seed)``."""
    n_tokens, n_pairs = int(n_tokens), int(n_pairs)
    if n_pairs < 1:
        raise BadArgument(f"mapping difficulty needs at least one token pair, got n_pairs={n_pairs}")
    if 2 * n_pairs > n_tokens:
        raise BadArgument(f"{n_pairs} disjoint token pairs need {2 * n_pairs} tokens but the slice has {n_tokens}; "
                         f"use at most {n_tokens // 2} pairs or more tokens")
    tokens = np.random.default_rng(seed).choice(n_tokens, size=2 * n_pairs, replace=False).astype(np.int64)
    return tokens[:n_pairs], tokens[n_pairs:]


def input_distances(h_a: np.ndarray, h_b: np.ndarray) -> np.ndarray:
    """d_in: the L2 distance of each pair's MLP inputs ``(P, d_model)``, divided by the largest one (float64)."""
    h_a, h_b = np.asarray(h_a), np.asarray(h_b)
    if h_a.shape != h_b.shape or h_a.ndim != 2:
        raise BadArgument(f"h_a and h_b must be (P, d_model) arrays of one shape, got {h_a.shape} and {h_b.shape}")
    return normalise_distances(np.linalg.norm(h_a.astype(np.float64) - h_b.astype(np.float64), axis=1))


def normalise_distances(dist: np.ndarray) -> np.ndarray:
    """Pair distances divided by the largest one (all zero stays zero: mapping_difficulty then drops every pair)."""
    top = dist.max(initial=0.0)
    return dist / top if top > 0 else np.zeros_like(dist)


def mapping_difficulty(x_a: np.ndarray, x_b: np.ndarray, d_in: np.ndarray, *,
                       threads: int | None = None) -> np.ndarray:
    """md of every column: ``x_a`` / ``x_b`` are the ``(P, k)`` pre-activations at the pair tokens (float64 out)."""
    x_a, x_b, d_in = np.asarray(x_a), np.asarray(x_b), np.asarray(d_in, dtype=np.float64)
    if x_a.shape != x_b.shape or x_a.ndim != 2 or d_in.shape != (x_a.shape[0],):
        raise BadArgument(f"mapping_difficulty needs x_a, x_b of one (P, k) shape and d_in of shape (P,); got "
                         f"{x_a.shape}, {x_b.shape}, {d_in.shape}")
    keep = d_in > 0
    if not keep.all():
        x_a, x_b, d_in = x_a[keep], x_b[keep], d_in[keep]
    p, k = x_a.shape
    md = np.full(k, np.nan)
    if p == 0 or k == 0:
        return md
    w = 1.0 / d_in
    threads = available_threads() if threads is None else max(1, int(threads))
    step = -(-k // threads)

    def part(c0: int) -> None:
        c1 = min(c0 + step, k)
        diff = np.empty((c1 - c0, p), dtype=np.float64)  # |x_a - x_b| as rows, built tile by tile
        for t0 in range(0, p, _TILE):
            t1 = min(t0 + _TILE, p)
            tile = np.subtract(x_a[t0:t1, c0:c1], x_b[t0:t1, c0:c1], dtype=np.float64)
            diff[:, t0:t1] = np.abs(tile, out=tile).T
        md[c0:c1] = md_rows(diff, w)

    run_parallel(part, range(0, k, step), threads)
    return md


@dataclass(frozen=True, eq=False)
class PairPlan:
    """The pairs that count (d_in > 0), their weights 1 / d_in, and a token order (a, b, rest) if they are disjoint."""

    a: np.ndarray
    b: np.ndarray
    d_in: np.ndarray
    w: np.ndarray
    order: np.ndarray | None


def pair_plan(pairs: tuple[np.ndarray, np.ndarray], d_in: np.ndarray | None, n_tokens: int) -> PairPlan:
    """Check the pairs against ``n_tokens`` and ``d_in``; drop pairs with d_in == 0."""
    if d_in is None:
        raise BadArgument("mapping difficulty needs d_in (input_distances) along with the pairs")
    a, b = (np.asarray(v, dtype=np.int64).reshape(-1) for v in pairs)
    d_in = np.asarray(d_in, dtype=np.float64).reshape(-1)
    if not (a.shape == b.shape == d_in.shape):
        raise BadArgument(f"pairs and d_in must have one length, got {a.shape}, {b.shape}, {d_in.shape}")
    if a.size and (min(a.min(), b.min()) < 0 or max(a.max(), b.max()) >= n_tokens):
        raise BadArgument(f"pair token indices must lie in [0, {n_tokens})")
    keep = d_in > 0
    a, b, d_in = a[keep], b[keep], d_in[keep]
    free = np.ones(n_tokens, dtype=bool)
    free[a] = False
    free[b] = False
    distinct = n_tokens - int(free.sum()) == 2 * a.size
    order = np.concatenate([a, b, np.flatnonzero(free)]) if distinct and a.size else None
    return PairPlan(a=a, b=b, d_in=d_in, w=1.0 / d_in, order=order)


def md_rows(diff: np.ndarray, w: np.ndarray) -> np.ndarray:
    """md per row of ``diff`` = |x_a - x_b| as ``(r, P)`` float64 (partially reordered in place); ``w`` = 1 / d_in."""
    r, p = diff.shape
    total = row_dot(diff, w)  # sum_k |x_a - x_b| / d_in, before the reorder below
    h = p // 2
    diff.partition(h, axis=1)  # one selection per row (two kth values would take a much slower path)
    median = diff[:, h] if p % 2 else (diff[:, :h].max(axis=1) + diff[:, h]) / 2.0
    return np.divide(total, p * median, out=np.full(r, np.nan), where=median > 0)


def percentile_rank(values: np.ndarray) -> np.ndarray:
    """Percentile (0..100) of each value among all non-NaN values; ties share their average rank; NaN stays NaN.

    Equal to ``scipy.stats.percentileofscore(finite, v, kind='mean')``: (rank - 0.5) / m * 100 with average ranks.
    """
    values = np.asarray(values, dtype=np.float64)
    out = np.full(values.shape, np.nan)
    ok = ~np.isnan(values)
    m = int(ok.sum())
    if m:
        out[ok] = (rankdata(values[ok], method="average") - 0.5) / m * 100.0
    return out
