"""Row layout helpers: a ``(n_tokens, k)`` column block as contiguous per-neuron rows, and work on them.

Everything in negdb.stats works on *rows* (one neuron per row, tokens along the last axis) because numpy
sorts and reduces contiguous rows fastest. ``to_rows`` makes that layout with a tiled transpose (a plain
``x.T.copy()`` walks memory with a huge stride and is ~10x slower); ``row_chunks`` cuts the rows into pieces
whose float64 working copies fit in the L2 cache; ``run_parallel`` spreads independent pieces over threads
(numpy releases the GIL inside its loops, so two cores give close to twice the speed).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np

from negdb.errors import NegdbError

__all__ = ["as_block", "available_threads", "count_sorted_below", "row_chunks", "row_dot", "run_parallel",
           "split_row_sums", "to_rows"]

T = TypeVar("T")

_TILE = 64  # tokens per transpose tile: 64 x k float32 stays in L1/L2 while it is written out transposed
_CHUNK_BYTES = 1 << 20  # float64 working bytes per row chunk (two such buffers fit a 2 MiB L2)
_DOT_SEGMENT = 8192  # OpenBLAS hands a dot product of more than 10,000 values to its thread pool


def as_block(x: np.ndarray, name: str = "x") -> np.ndarray:
    """Check that ``x`` is a 2-D floating array with at least one token; return it as an ndarray."""
    x = np.asarray(x)
    if x.ndim != 2:
        raise NegdbError(f"{name} must be a 2-D (n_tokens, k) array, got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise NegdbError(f"{name} must hold floating-point values, got dtype {x.dtype}")
    if x.shape[0] == 0:
        raise NegdbError(f"{name} has no tokens (shape {x.shape})")
    return x


def available_threads() -> int:
    """The number of CPU cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def to_rows(x: np.ndarray, dtype: type = np.float32, threads: int = 1, order: np.ndarray | None = None) -> np.ndarray:
    """The ``(k, n)`` C-contiguous transpose of an ``(n, k)`` block, converted to ``dtype``, copied tile by tile.

    With ``order`` (a permutation of the n token indices), row j holds ``x[order, j]``.
    """
    n, k = x.shape
    out = np.empty((k, n), dtype=dtype)
    if k == 0:
        return out

    def part(span: tuple[int, int]) -> None:
        for t0 in range(span[0], span[1], _TILE):
            t1 = min(t0 + _TILE, span[1])
            out[:, t0:t1] = (x[t0:t1] if order is None else x[order[t0:t1]]).T

    run_parallel(part, _spans(n, threads, _TILE), threads)
    return out


def row_chunks(k: int, n: int, itemsize: int = 8, budget: int = _CHUNK_BYTES) -> list[slice]:
    """Consecutive row slices covering ``range(k)``, each about ``budget`` bytes at ``itemsize`` per value."""
    step = max(1, budget // max(1, n * itemsize))
    return [slice(r0, min(r0 + step, k)) for r0 in range(0, k, step)]


def run_parallel(fn: Callable[[T], object], items: Iterable[T], threads: int) -> None:
    """Call ``fn`` on every item, on up to ``threads`` threads; the first exception raised is re-raised."""
    items = list(items)
    if threads <= 1 or len(items) <= 1:
        for item in items:
            fn(item)
        return
    with ThreadPoolExecutor(max_workers=min(threads, len(items))) as pool:
        for future in [pool.submit(fn, item) for item in items]:
            future.result()


def _spans(n: int, parts: int, align: int) -> Iterator[tuple[int, int]]:
    """``parts`` contiguous ranges covering ``range(n)`` with boundaries on multiples of ``align``."""
    step = -(-n // max(1, parts))
    step = -(-step // align) * align
    for s0 in range(0, n, step):
        yield s0, min(s0 + step, n)


def row_dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per row, the dot product of ``a`` and ``b`` (``(r, n)``, or ``b`` of shape ``(n,)``), single-threaded.

    ``np.vecdot`` calls BLAS ``ddot`` per row; OpenBLAS wakes its thread pool for every call longer than 10,000
    values, which costs far more than the sum itself (and spins on the other cores afterwards). Summing segments
    of at most 8192 values keeps each call on the calling thread.
    """
    n = a.shape[-1]
    total = np.vecdot(a[..., :_DOT_SEGMENT], b[..., :_DOT_SEGMENT])
    for s0 in range(_DOT_SEGMENT, n, _DOT_SEGMENT):
        total += np.vecdot(a[..., s0:s0 + _DOT_SEGMENT], b[..., s0:s0 + _DOT_SEGMENT])
    return total


def count_sorted_below(rows: np.ndarray, value: float = 0.0, inclusive: bool = False) -> np.ndarray:
    """Per row of ascending-sorted ``rows``, how many entries are ``< value`` (``<= value`` if inclusive).

    A binary search run on all rows at once: about log2(n) gathers of one value per row.
    """
    k, n = rows.shape
    lo = np.zeros(k, dtype=np.int64)
    hi = np.full(k, n, dtype=np.int64)
    r = np.arange(k)
    while True:
        active = lo < hi
        if not active.any():
            return lo
        mid = (lo + hi) // 2
        v = rows[r, np.minimum(mid, n - 1)]
        below = (v <= value) if inclusive else (v < value)
        go_right = active & below
        lo = np.where(go_right, mid + 1, lo)
        hi = np.where(active & ~below, mid, hi)


def split_row_sums(buf: np.ndarray, split: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the sum of ``buf[r, :split[r]]`` and of ``buf[r, split[r]:]`` (one pass, ``np.add.reduceat``).

    ``buf`` is C-contiguous ``(k, n)`` with n >= 1; ``0 <= split <= n``.
    """
    k, n = buf.shape
    if n == 1:
        v = buf[:, 0]
        return np.where(split > 0, v, 0.0), np.where(split > 0, 0.0, v)
    flat = buf.reshape(-1)
    starts = np.arange(k, dtype=np.int64) * n
    cut = np.minimum(split, n - 1)  # reduceat needs indices < size; split == n is repaired below
    idx = np.empty(2 * k, dtype=np.int64)
    idx[0::2] = starts
    idx[1::2] = starts + cut
    sums = np.add.reduceat(flat, idx)
    left, right = sums[0::2].copy(), sums[1::2].copy()
    # reduceat gives flat[i] (not 0) for an empty segment [i, i): split == 0 means nothing on the left
    left[split == 0] = 0.0
    full = split >= n  # the last value was counted on the right
    if full.any():
        left[full] += right[full]
        right[full] = 0.0
    return left, right
