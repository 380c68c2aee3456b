"""Moments, quantiles and sign statistics of each neuron, from its sorted values.

Definitions match scipy / numpy defaults: population std (ddof=0), biased skewness m3 / m2^1.5 and Fisher
excess kurtosis m4 / m2^2 - 3 (``scipy.stats.skew`` / ``scipy.stats.kurtosis``; like scipy they are NaN when
m2 is zero to within rounding of the mean), quantiles with numpy's default 'linear' method.
``frac_neg`` is the fraction of x < 0; ``mean_neg`` / ``mean_pos`` average x over x < 0 / x > 0 (NaN if none).
"""

from __future__ import annotations

import numpy as np

from .rows import row_dot

__all__ = ["QUANTILES", "central_moments_rows", "degenerate", "quantile_of_sorted", "quantiles_sorted", "shape_stats"]

QUANTILES: tuple[tuple[str, float], ...] = (
    ("q01", 0.01), ("q05", 0.05), ("q25", 0.25), ("q50", 0.50), ("q75", 0.75), ("q95", 0.95), ("q99", 0.99),
)
_EPS = np.finfo(np.float64).eps  # scipy.stats.skew / kurtosis treat m2 <= (eps * mean)^2 as zero


def quantile_of_sorted(rows, p: float):
    """numpy's 'linear' quantile ``p`` of each ascending-sorted row of ``rows`` (a numpy array or a torch tensor,
    shape (k, n)), in float64: the one interpolation both statistics kernels use."""
    n = rows.shape[1]
    virtual = (n - 1) * float(p)
    lo = int(np.floor(virtual))
    hi = min(lo + 1, n - 1)
    t = virtual - lo
    a, b = rows[:, lo], rows[:, hi]
    a, b = (a.astype(np.float64), b.astype(np.float64)) if isinstance(rows, np.ndarray) else (a.double(), b.double())
    diff = b - a
    return b - diff * (1.0 - t) if t >= 0.5 else a + diff * t  # numpy's _lerp


def quantiles_sorted(rows: np.ndarray, probs: tuple[float, ...] | np.ndarray) -> np.ndarray:
    """``(len(probs), k)`` float64 quantiles of each ascending-sorted row (numpy 'linear' method)."""
    out = np.empty((len(probs), rows.shape[0]), dtype=np.float64)
    for j, p in enumerate(probs):
        out[j] = quantile_of_sorted(rows, p)
    return out


def central_moments_rows(buf: np.ndarray, sq: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row of centred float64 values ``buf`` (r, n): mean of d^2, d^3 and d^4. ``sq`` is optional scratch."""
    n = buf.shape[1]
    sq = np.square(buf, out=sq)
    m2 = row_dot(buf, buf) / n
    m3 = row_dot(sq, buf) / n
    m4 = row_dot(sq, sq) / n
    return m2, m3, m4


def degenerate(mean: np.ndarray, m2: np.ndarray) -> np.ndarray:
    """Rows whose variance is zero to within rounding of the mean (constant columns), as scipy decides."""
    return m2 <= (_EPS * mean) ** 2


def shape_stats(mean: np.ndarray, m2: np.ndarray, m3: np.ndarray,
                m4: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(std, 1 / std, skew, excess kurtosis); 1 / std is 0 and skew / kurtosis NaN where ``degenerate``."""
    bad = degenerate(mean, m2)
    std = np.sqrt(m2)
    ok = ~bad
    inv_std = np.divide(1.0, std, out=np.zeros_like(std), where=ok)
    skew = np.full_like(std, np.nan)
    kurt = np.full_like(std, np.nan)
    skew[ok] = m3[ok] * inv_std[ok] ** 3
    kurt[ok] = m4[ok] * inv_std[ok] ** 4 - 3.0
    return std, inv_std, skew, kurt
