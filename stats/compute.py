"""Every per-neuron statistic of a column block, from one sort of each neuron's values.

``block_stats`` transposes the ``(n_tokens, k)`` block once into contiguous rows (float32) and sorts every row
in place, once. Everything else derives from the sorted rows: min, max, quantiles and sign counts by indexing;
moments and W1 in cache-sized chunks of rows on one float64 buffer (copy, centre, moments, then scale and the W1
pass). The rows are split into one part per thread (numpy releases the GIL in sorts and ufunc loops). There is
no per-neuron Python loop apart from one ``searchsorted`` call per row.

Given the token ``pairs`` of mapping difficulty, the transpose puts the tokens in the order (a, b, rest), so the
pair values of each neuron are two contiguous slices of its row before the sort: ``md`` then costs no gather
and no second transpose (the sort does not care about the token order).
"""

from __future__ import annotations

import numpy as np

from negdb.errors import BadArgument

from .mapping import PairPlan, mapping_difficulty, md_rows, pair_plan
from .moments import QUANTILES, central_moments_rows, degenerate, quantiles_sorted, shape_stats
from .rows import RowSplit, as_block, available_threads, row_chunks, run_parallel, sign_counts, to_rows
from .wasserstein import (NormalSampler, NormalTables, Reference, normal_tables, w1_crossing_fix, w1_exact_sums,
                          w1_sample_rows)

__all__ = ["BLOCK_COLUMNS", "MOMENT_COLUMNS", "block_stats", "check_reference", "empty_block"]

MOMENT_COLUMNS: tuple[str, ...] = (
    ("n", "mean", "std", "skew", "kurtosis", "min", "max") + tuple(name for name, _ in QUANTILES)
    + ("frac_neg", "mean_neg", "mean_pos")
)
BLOCK_COLUMNS: tuple[str, ...] = MOMENT_COLUMNS + ("w_dist", "w_dist_neg", "w_dist_pos")
_PROBS = tuple(p for _, p in QUANTILES)


def check_reference(reference: str, sampler: NormalSampler | None) -> None:
    """The W1 reference is 'exact', or 'sample' with a seeded sampler (both kernels check it alike)."""
    if reference not in ("exact", "sample"):
        raise BadArgument(f"reference must be 'exact' or 'sample', got {reference!r}")
    if reference == "sample" and sampler is None:
        raise BadArgument("reference='sample' needs a NormalSampler (seed, layer) for reproducible draws")


def empty_block(n: int, k: int, with_md: bool) -> dict[str, np.ndarray]:
    """The output columns of a block of ``k`` neurons over ``n`` tokens, to be filled (``md`` NaN until set)."""
    out = {name: np.empty(k, dtype=np.float64) for name in BLOCK_COLUMNS}
    out["n"] = np.full(k, n, dtype=np.int64)
    if with_md:
        out["md"] = np.full(k, np.nan)
    return out


def block_stats(x: np.ndarray, *, reference: Reference = "exact", sampler: NormalSampler | None = None,
                pairs: tuple[np.ndarray, np.ndarray] | None = None, d_in: np.ndarray | None = None,
                threads: int | None = None) -> dict[str, np.ndarray]:
    """Statistics of each column (neuron) of an ``(n_tokens, k)`` float block, keyed by ``BLOCK_COLUMNS``.

    Every array has length k: ``n`` is int64, the rest float64. ``reference="sample"`` needs a ``sampler``, which
    is asked for ``(k, n_tokens)`` draws (so call blocks in neuron order). Values must be finite. A column that is
    constant gets std 0 (to rounding) and NaN skew, kurtosis and distances. With ``pairs=(a, b)`` (token indices)
    and ``d_in``, the result also has ``md``, equal to ``mapping_difficulty(x[a], x[b], d_in)`` but cheaper.
    ``threads`` defaults to the cores available to the process.
    """
    x = as_block(x)
    n, k = x.shape
    check_reference(reference, sampler)
    threads = available_threads() if threads is None else max(1, int(threads))
    plan = None if pairs is None else pair_plan(pairs, d_in, n)

    out = empty_block(n, k, plan is not None)
    if k == 0:
        return out
    if plan is not None and plan.order is None:  # pairs that share tokens: gather them the plain way
        out["md"] = mapping_difficulty(x[plan.a], x[plan.b], plan.d_in, threads=threads)
        plan = None
    rows = to_rows(x, np.float64 if x.dtype == np.float64 else np.float32, threads,
                   order=None if plan is None else plan.order)
    y = sampler.draw(k, n) if reference == "sample" else None  # type: ignore[union-attr]
    tables = normal_tables(n) if reference == "exact" else None
    run_parallel(lambda s: _part(rows[s], None if y is None else y[s], tables, plan, out, s), _spans(k, threads),
                 threads)
    return out


def _spans(k: int, parts: int) -> list[slice]:
    """``parts`` contiguous row ranges (one per thread)."""
    step = -(-k // max(1, parts))
    return [slice(r0, min(r0 + step, k)) for r0 in range(0, k, step)]


def _part(xs: np.ndarray, y: np.ndarray | None, tables: NormalTables | None, plan: PairPlan | None,
          out: dict[str, np.ndarray], s: slice) -> None:
    """All statistics of the rows ``xs`` (sorted here, in place) into ``out[...][s]``.

    Per-row work (the sort, sign counts, quantiles, the crossing fix-up) runs once on the whole part, in few
    large calls; the passes over every value run chunk by chunk on float64 buffers that stay in cache.
    """
    r, n = xs.shape
    chunks = row_chunks(r, n)
    rmax = chunks[0].stop - chunks[0].start
    if plan is not None:  # before the sort: row[:P] holds the a tokens, row[P:2P] the b tokens
        p = len(plan.w)
        diff = np.empty((rmax, p), dtype=np.float64)
        md = out["md"][s]
        for c in chunks:
            d = diff[:c.stop - c.start]
            np.copyto(d, xs[c, :p])
            np.subtract(d, xs[c, p:2 * p], out=d)
            md[c] = md_rows(np.abs(d, out=d), plan.w)
    xs.sort(axis=1)
    if not (np.isfinite(xs[:, 0]).all() and np.isfinite(xs[:, -1]).all()):
        raise BadArgument("pre-activations contain NaN or infinite values; statistics need finite values")
    n_neg, n_le = sign_counts(xs)

    sum_neg, sum_rest, mean, m2, m3, m4, inv_std, w_neg, w_pos = np.empty((9, r))
    cands: list[np.ndarray] = []
    cand_abs: list[np.ndarray] = []
    buf = np.empty((rmax, n), dtype=np.float64)
    sq = np.empty((rmax, n), dtype=np.float64)
    mask = np.empty((rmax, n), dtype=bool)
    for c in chunks:
        rc = c.stop - c.start
        b = buf[:rc]
        split = RowSplit(n_neg[c], n)
        np.copyto(b, xs[c])
        sum_neg[c], sum_rest[c] = split.sums(b)  # zeros add nothing, so sum_rest is the sum over x > 0
        mu = mean[c] = (sum_neg[c] + sum_rest[c]) / n
        np.subtract(b, mu[:, None], out=b)
        m2[c], m3[c], m4[c] = central_moments_rows(b, sq[:rc])
        inv = inv_std[c] = np.divide(1.0, np.sqrt(m2[c]), out=np.zeros(rc), where=~degenerate(mu, m2[c]))
        if y is None:
            w_neg[c], w_pos[c], pos, vals = w1_exact_sums(b, inv, n_neg[c], tables, mask[:rc], split)
            cands.append(pos + c.start * n)
            cand_abs.append(vals)
        else:
            w_neg[c], w_pos[c] = w1_sample_rows(b, inv, np.sort(y[c], axis=1), n_neg[c], split)
    if y is None:
        fix_neg, fix_pos = w1_crossing_fix(xs, mean, inv_std, n_neg, tables, np.concatenate(cands),
                                           np.concatenate(cand_abs))
        w_neg += fix_neg
        w_pos += fix_pos
    bad = inv_std == 0.0
    w_neg[bad] = w_pos[bad] = np.nan

    std, _, skew, kurt = shape_stats(mean, m2, m3, m4)
    out["mean"][s] = mean
    out["std"][s] = std
    out["skew"][s] = skew
    out["kurtosis"][s] = kurt
    out["min"][s] = xs[:, 0]
    out["max"][s] = xs[:, -1]
    for (name, _), values in zip(QUANTILES, quantiles_sorted(xs, _PROBS)):
        out[name][s] = values
    n_pos = n - n_le
    out["frac_neg"][s] = n_neg / n
    out["mean_neg"][s] = np.divide(sum_neg, n_neg, out=np.full(r, np.nan), where=n_neg > 0)
    out["mean_pos"][s] = np.divide(sum_rest, n_pos, out=np.full(r, np.nan), where=n_pos > 0)
    out["w_dist"][s] = w_neg + w_pos
    out["w_dist_neg"][s] = w_neg
    out["w_dist_pos"][s] = w_pos
