"""1-Wasserstein distance between each neuron's z-normalised values and N(0, 1), split by the sign of x.

Exact (default): W1 = integral over u in (0, 1) of |F^-1(u) - Q(u)| du, with F^-1(u) = z_(i) on ((i-1)/n, i/n]
and Q the standard normal quantile function. Per interval (a, b] with c = z_(i), using
integral_a^b Q(u) du = phi(Q(a)) - phi(Q(b)) =: D_i:

- c >= Q(b): c (b - a) - D_i;   c <= Q(a): its negation, i.e. always |c / n - D_i| when c is outside (Q(a), Q(b));
- Q(a) < c < Q(b) (the curves cross inside the interval, O(sqrt n) intervals per neuron): split at
  u* = Phi(c), giving c (2 u* - a - b) - phi(Q(a)) - phi(Q(b)) + 2 phi(c).

Q(i/n), phi(Q(i/n)) and D_i are computed once per n (``normal_tables``). The kernel evaluates
|c / n - D_i| for every value in one vectorised pass and then fixes only the few crossing intervals, found with
a cheap superset test |c / n - D_i| < ``reach_i`` (Phi is evaluated only there).

Sample (the authors' code): y = n draws of N(0, 1), sorted; W1 = mean |z_(i) - y_(i)|, equal to
``scipy.stats.wasserstein_distance(z, y)``. ``NormalSampler`` makes the draws reproducible per (seed, layer)
and independent of how a layer's neurons are cut into blocks.

``w_dist_neg`` / ``w_dist_pos`` restrict the sum to the intervals whose raw value x_(i) is negative /
non-negative (z is sorted exactly like x), so ``w_dist = w_dist_neg + w_dist_pos``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np
from scipy.special import ndtr, ndtri

from .rows import RowSplit

__all__ = ["NormalSampler", "NormalTables", "Reference", "normal_tables", "w1_crossing_fix", "w1_exact_rows",
           "w1_exact_sums", "w1_sample_rows"]

Reference = Literal["exact", "sample"]
_INV_SQRT_2PI = 1.0 / np.sqrt(2.0 * np.pi)


def _pdf(z: np.ndarray) -> np.ndarray:
    return _INV_SQRT_2PI * np.exp(-0.5 * z * z)


@dataclass(frozen=True, eq=False)
class NormalTables:
    """Standard-normal quantities on the grid u = i/n (read-only arrays)."""

    n: int
    q: np.ndarray  # (n + 1,) Q(i / n); q[0] = -inf, q[n] = +inf
    phi: np.ndarray  # (n + 1,) phi(q[i]); 0 at both ends
    interval_mean: np.ndarray  # (n,) D_i = integral of Q over ((i-1)/n, i/n] = phi[i-1] - phi[i]
    reach: np.ndarray  # (n,) |c/n - D_i| < reach_i whenever Q(a) < c < Q(b) (inf on the two end intervals)


@lru_cache(maxsize=8)
def normal_tables(n: int) -> NormalTables:
    """The tables for ``n`` values, computed once per n."""
    u = np.arange(n + 1, dtype=np.float64) / n
    q = ndtri(u)
    q[0], q[n] = -np.inf, np.inf
    phi = _pdf(q)
    phi[0] = phi[n] = 0.0
    d = phi[:-1] - phi[1:]
    with np.errstate(invalid="ignore"):
        reach = np.maximum(d - q[:-1] / n, q[1:] / n - d)
    reach[0] = reach[-1] = np.inf
    for arr in (q, phi, d, reach):
        arr.flags.writeable = False
    return NormalTables(n=n, q=q, phi=phi, interval_mean=d, reach=reach)


class NormalSampler:
    """Seeded N(0, 1) draws for the sample reference of one layer.

    Wraps ``np.random.default_rng([seed, layer])``; ``draw(k, n)`` returns the next ``(k, n)`` block (one row per
    neuron). numpy fills arrays in C order from one stream, so drawing ``(k1, n)`` then ``(k2, n)`` gives the same
    rows as one ``(k1 + k2, n)`` draw: results do not depend on how a layer is split into column blocks, as long
    as blocks are asked for in neuron order.
    """

    def __init__(self, seed: int, layer: int) -> None:
        self.seed = int(seed)
        self.layer = int(layer)
        self.drawn = 0  # rows (neurons) drawn so far
        self._rng = np.random.default_rng([self.seed, self.layer])

    def draw(self, k: int, n: int) -> np.ndarray:
        """The next ``k`` rows of ``n`` standard-normal float64 draws (unsorted)."""
        y = self._rng.standard_normal((k, n))
        self.drawn += k
        return y

    def __repr__(self) -> str:
        return f"NormalSampler(seed={self.seed}, layer={self.layer}, drawn={self.drawn})"


def w1_exact_rows(buf: np.ndarray, rows: np.ndarray, mean: np.ndarray, inv_std: np.ndarray, n_neg: np.ndarray,
                  tables: NormalTables, mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact W1 of ``r`` neurons, as (part over negative raw values, part over non-negative raw values).

    ``buf``: C-contiguous ``(r, n)`` float64 holding the centred sorted values ``x - mean`` (overwritten).
    ``rows``: the sorted raw values ``(r, n)``; ``inv_std``: 1 / population std per row; ``n_neg``: count of
    x < 0 per row; ``mask``: optional ``(r, n)`` bool scratch.
    """
    neg, pos, cand, cand_abs = w1_exact_sums(buf, inv_std, n_neg, tables, mask)
    fix_neg, fix_pos = w1_crossing_fix(rows, mean, inv_std, n_neg, tables, cand, cand_abs)
    return neg + fix_neg, pos + fix_pos


def w1_exact_sums(buf: np.ndarray, inv_std: np.ndarray, n_neg: np.ndarray, tables: NormalTables,
                  mask: np.ndarray | None = None,
                  split: RowSplit | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The vectorised pass of ``w1_exact_rows``: sums of |c/n - D_i| split by sign, and the crossing candidates.

    Returns (neg sums, non-negative sums, flat positions of candidate intervals, their |c/n - D_i|); the sums are
    exact once ``w1_crossing_fix`` has replaced the candidates' terms. ``split`` may pass ``RowSplit(n_neg, n)``.
    """
    r, n = buf.shape
    np.multiply(buf, (inv_std / n)[:, None], out=buf)  # z / n
    np.subtract(buf, tables.interval_mean, out=buf)
    np.abs(buf, out=buf)  # |c / n - D_i|: the exact integral wherever the curves do not cross inside the interval
    if mask is None:
        mask = np.empty((r, n), dtype=bool)
    np.less(buf, tables.reach, out=mask)
    cand = np.flatnonzero(mask)  # few: O(sqrt n) per neuron
    cand_abs = buf.reshape(-1)[cand]
    neg, pos = (split or RowSplit(n_neg, n)).sums(buf)
    return neg, pos, cand, cand_abs


def w1_crossing_fix(rows: np.ndarray, mean: np.ndarray, inv_std: np.ndarray, n_neg: np.ndarray,
                    tables: NormalTables, cand: np.ndarray,
                    cand_abs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row, what to add to the sums of ``w1_exact_sums`` for the intervals where Q crosses c = z_(i).

    ``cand`` are flat positions into ``rows`` (r, n) and ``cand_abs`` the terms the sums used for them.
    """
    r, n = rows.shape
    fix_neg, fix_pos = np.zeros(r), np.zeros(r)
    if cand.size == 0:
        return fix_neg, fix_pos
    row, col = np.divmod(cand, n)
    c = (rows.reshape(-1)[cand].astype(np.float64) - mean[row]) * inv_std[row]
    cross = (c > tables.q[col]) & (c < tables.q[col + 1])
    row, col, c, cand_abs = row[cross], col[cross], c[cross], cand_abs[cross]
    u_star = ndtr(c)  # only here: Phi is needed for the split point of crossing intervals
    exact = c * (2.0 * u_star - (2.0 * col + 1.0) / n) - tables.phi[col] - tables.phi[col + 1] + 2.0 * _pdf(c)
    fix = exact - cand_abs
    on_neg = col < n_neg[row]
    fix_neg += np.bincount(row[on_neg], weights=fix[on_neg], minlength=r)
    fix_pos += np.bincount(row[~on_neg], weights=fix[~on_neg], minlength=r)
    return fix_neg, fix_pos


def w1_sample_rows(buf: np.ndarray, inv_std: np.ndarray, y_sorted: np.ndarray, n_neg: np.ndarray,
                   split: RowSplit | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Sample-reference W1 (mean |z_(i) - y_(i)|) of ``r`` neurons, split like ``w1_exact_rows``.

    ``buf`` holds the centred sorted values (overwritten); ``y_sorted`` is ``(r, n)``, each row sorted.
    """
    n = buf.shape[1]
    np.multiply(buf, inv_std[:, None], out=buf)
    np.subtract(buf, y_sorted, out=buf)
    np.abs(buf, out=buf)
    neg_part, pos_part = (split or RowSplit(n_neg, n)).sums(buf)
    return neg_part / n, pos_part / n
