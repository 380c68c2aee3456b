"""Every per-neuron statistic of a column block with torch, on the device that holds the pre-activations.

The same statistics as :func:`negdb.stats.compute.block_stats` (same definitions, same keys, float64 results
equal to the numpy path to rounding: sums, moments and W1 are accumulated in float64), for an ``(n_tokens, k)``
tensor on any device. On a GPU this avoids the round trip through the CPU: the captured pre-activations of a
layer never leave the device. On a CPU numpy's sort is several times faster than torch's, so negdb uses this
path only where the data already is on a GPU (:func:`backend_for`), unless told otherwise.

The work per column chunk: one transpose into float32 rows (tokens along the last axis) and one sort; sign
counts, min, max and quantiles by indexing the sorted rows; sums, moments and the exact W1 in float64 on the
whole chunk at once (the crossing intervals of the exact W1, where the standard normal quantile curve crosses
the step function inside an interval, are found and corrected like the numpy kernel does). Chunks are sized from
``budget_bytes`` so that peak device memory does not grow with ``k``.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch

from negdb.errors import BadArgument

from .compute import check_reference, empty_block
from .mapping import pair_plan
from .moments import QUANTILES, quantile_of_sorted
from .wasserstein import NormalSampler, Reference, normal_tables

__all__ = ["BACKENDS", "BYTES_PER_VALUE", "Backend", "backend_for", "block_stats_torch"]

Backend = Literal["auto", "numpy", "torch"]
BACKENDS: tuple[str, ...] = ("auto", "numpy", "torch")
BYTES_PER_VALUE = 48
"""Device bytes per value of a chunk at its peak: float32 rows, sorted values and int64 sort indices, and the
float64 working arrays of the moment and W1 passes."""
_EPS = float(np.finfo(np.float64).eps)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_PROBS = tuple(p for _, p in QUANTILES)


def backend_for(device: str | torch.device, choice: str = "auto") -> str:
    """``"numpy"`` or ``"torch"``: the statistics path for data held on ``device``.

    ``auto`` picks torch on CUDA devices (the data is there already and a GPU sorts fast) and numpy elsewhere
    (numpy's sort is several times faster than torch's on CPUs).
    """
    if choice not in BACKENDS:
        raise BadArgument(f"--stats-backend must be one of {', '.join(BACKENDS)}, got {choice!r}")
    if choice != "auto":
        return choice
    return "torch" if torch.device(device).type == "cuda" else "numpy"


def _tables(n: int, device: torch.device) -> dict[str, torch.Tensor]:
    t = normal_tables(n)
    return {name: torch.from_numpy(np.array(getattr(t, attr))).to(device)
            for name, attr in (("q", "q"), ("phi", "phi"), ("d", "interval_mean"), ("reach", "reach"))}


def block_stats_torch(x: torch.Tensor | np.ndarray, *, reference: Reference = "exact",
                      sampler: NormalSampler | None = None, pairs: tuple[np.ndarray, np.ndarray] | None = None,
                      d_in: np.ndarray | None = None, budget_bytes: int = 1 << 30) -> dict[str, np.ndarray]:
    """Statistics of each column of an ``(n_tokens, k)`` float tensor, computed on its device.

    Arguments and result as :func:`negdb.stats.compute.block_stats` (numpy float64 / int64 arrays of length k,
    keyed by ``BLOCK_COLUMNS`` plus ``md`` when ``pairs`` and ``d_in`` are given). ``budget_bytes`` bounds the
    device memory of one column chunk (about ``BYTES_PER_VALUE`` bytes per value).
    """
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if x.dim() != 2:
        raise BadArgument(f"x must be a 2-D (n_tokens, k) array, got shape {tuple(x.shape)}")
    if not x.dtype.is_floating_point:
        raise BadArgument(f"x must hold floating-point values, got dtype {x.dtype}")
    n, k = x.shape
    if n == 0:
        raise BadArgument(f"x has no tokens (shape {tuple(x.shape)})")
    check_reference(reference, sampler)
    plan = None if pairs is None else pair_plan(pairs, d_in, n)
    out = empty_block(n, k, plan is not None)
    if k == 0:
        return out
    dev = x.device
    tables = _tables(n, dev) if reference == "exact" else None
    md_idx = None
    if plan is not None and len(plan.w):
        md_idx = (torch.from_numpy(plan.a).to(dev), torch.from_numpy(plan.b).to(dev),
                  torch.from_numpy(plan.w).to(dev))
    step = max(1, int(budget_bytes) // max(1, n * BYTES_PER_VALUE))
    with torch.inference_mode():
        for c0 in range(0, k, step):
            c1 = min(c0 + step, k)
            cols = x[:, c0:c1]
            y = None
            if sampler is not None and reference == "sample":
                y = torch.from_numpy(np.sort(sampler.draw(c1 - c0, n), axis=1)).to(dev)
            part = _chunk(cols, tables, y)
            if md_idx is not None:
                part["md"] = _md(cols, *md_idx)
            for name, values in part.items():
                out[name][c0:c1] = values.cpu().numpy()
    return out


def _chunk(cols: torch.Tensor, tables: dict[str, torch.Tensor] | None,
           y_sorted: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """The statistics of the columns ``cols`` ``(n, r)`` as float64 tensors of length r (on their device)."""
    n, r = cols.shape
    rows = torch.float64 if cols.dtype == torch.float64 else torch.float32  # as the numpy kernel
    xs = torch.sort(cols.t().to(rows), dim=1).values  # (r, n), ascending
    if not bool(torch.isfinite(xs[:, 0]).all() & torch.isfinite(xs[:, -1]).all()):
        raise BadArgument("pre-activations contain NaN or infinite values; statistics need finite values")
    n_neg = (xs < 0).sum(dim=1)
    n_le = (xs <= 0).sum(dim=1)
    col = torch.arange(n, device=xs.device)
    on_neg = col[None, :] < n_neg[:, None]  # (r, n): the intervals whose raw value is negative
    b = xs.to(torch.float64, copy=True)  # centred in place below: never an alias of xs
    sum_neg = torch.where(on_neg, b, 0.0).sum(dim=1)
    sum_all = b.sum(dim=1)
    sum_rest = sum_all - sum_neg
    mean = sum_all / n
    b.sub_(mean[:, None])  # centred
    sq = b * b
    m2 = sq.sum(dim=1) / n
    m3 = (sq * b).sum(dim=1) / n
    m4 = (sq * sq).sum(dim=1) / n
    del sq
    bad = m2 <= (_EPS * mean) ** 2
    std = torch.sqrt(m2)
    inv_std = torch.where(bad, torch.zeros_like(std), 1.0 / torch.where(bad, torch.ones_like(std), std))
    nan = torch.full_like(std, float("nan"))
    skew = torch.where(bad, nan, m3 * inv_std ** 3)
    kurt = torch.where(bad, nan, m4 * inv_std ** 4 - 3.0)
    if tables is None:
        term = (b * inv_std[:, None] - y_sorted).abs_() / n  # type: ignore[operator]
    else:
        term = _w1_terms(b, inv_std, tables)
    w_neg = torch.where(on_neg, term, 0.0).sum(dim=1)
    w_pos = term.sum(dim=1) - w_neg
    del term, b
    w_neg = torch.where(bad, nan, w_neg)
    w_pos = torch.where(bad, nan, w_pos)
    out = {"mean": mean, "std": std, "skew": skew, "kurtosis": kurt,
           "min": xs[:, 0].to(torch.float64), "max": xs[:, -1].to(torch.float64)}
    for (name, _), p in zip(QUANTILES, _PROBS):
        out[name] = quantile_of_sorted(xs, p)
    n_pos = n - n_le
    out["frac_neg"] = n_neg.to(torch.float64) / n
    out["mean_neg"] = torch.where(n_neg > 0, sum_neg / n_neg.clamp(min=1), nan)
    out["mean_pos"] = torch.where(n_pos > 0, sum_rest / n_pos.clamp(min=1), nan)
    out["w_dist"] = w_neg + w_pos
    out["w_dist_neg"] = w_neg
    out["w_dist_pos"] = w_pos
    return out


def _w1_terms(centred: torch.Tensor, inv_std: torch.Tensor, t: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per interval the exact integral of |F^-1(u) - Q(u)| (see negdb.stats.wasserstein), ``(r, n)`` float64."""
    r, n = centred.shape
    term = (centred * (inv_std / n)[:, None]).sub_(t["d"]).abs_()  # |c / n - D_i|: exact unless Q crosses c
    cand = term < t["reach"]  # a cheap superset of the crossing intervals (O(sqrt n) per row)
    row, col = cand.nonzero(as_tuple=True)
    if row.numel():
        c = centred[row, col] * inv_std[row]
        cross = (c > t["q"][col]) & (c < t["q"][col + 1])
        row, col, c = row[cross], col[cross], c[cross]
        u_star = torch.special.ndtr(c)
        mid = (2.0 * col.to(torch.float64) + 1.0) / n  # an int tensor times a float would be float32
        exact = (c * (2.0 * u_star - mid) - t["phi"][col] - t["phi"][col + 1]
                 + 2.0 * _INV_SQRT_2PI * torch.exp(-0.5 * c * c))
        term[row, col] = exact
    return term


def _md(cols: torch.Tensor, a: torch.Tensor, b: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Mapping difficulty of each column from the pair rows ``a``, ``b`` and weights ``w = 1 / d_in``."""
    p = a.numel()
    diff = (cols.index_select(0, a).to(torch.float64) - cols.index_select(0, b).to(torch.float64)).abs_()
    total = (diff * w[:, None]).sum(dim=0)
    srt = torch.sort(diff, dim=0).values
    h = p // 2
    median = srt[h] if p % 2 else (srt[h - 1] + srt[h]) / 2.0
    return torch.where(median > 0, total / (p * torch.where(median > 0, median, torch.ones_like(median))),
                       torch.full_like(total, float("nan")))
