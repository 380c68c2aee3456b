"""Row layout helpers: a ``(n_tokens, k)`` column block as contiguous per-neuron rows, and work on them.

Everything in negdb.stats works on *rows* (one neuron per row, tokens along the last axis) because numpy
sorts and reduces contiguous rows fastest. ``to_rows`` makes that layout with a tiled transpose (a plain
``x.T.copy()`` walks memory with a huge stride and is ~9x slower); ``row_chunks`` cuts the rows into pieces
whose float64 working copies fit in the L2 cache; ``run_parallel`` spreads independent pieces over threads
(numpy releases the GIL inside sorts and ufunc loops).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np

from negdb.errors import BadArgument

__all__ = ["RowSplit", "as_block", "available_threads", "row_chunks", "row_dot", "run_parallel",
           "sign_counts", "split_row_sums", "to_rows"]

T = TypeVar("T")

_TILE = 64  # tokens per transpose tile: 64 x k float32 stays in L1/L2 while it is written out transposed
_CHUNK_BYTES = 1 << 19  # float64 working bytes per row chunk (buffers of a chunk stay well inside a 2 MiB L2)
_DOT_SEGMENT = 8192  # OpenBLAS hands a dot product of more than 10,000 values to its thread pool


def as_block(x: np.ndarray, name: str = "x") -> np.ndarray:
    """Check that ``x`` is a 2-D floating array with at least one token; return it as an ndarray."""
    x = np.asarray(x)
    if x.ndim != 2:
        raise BadArgument(f"{name} must be a 2-D (n_tokens, k) array, got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise BadArgument(f"{name} must hold floating-point values, got dtype {x.dtype}")
    if x.shape[0] == 0:
        raise BadArgument(f"{name} has no tokens (shape {x.shape})")
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


def row_chunks(k: int, n: int, itemsize: int = 8, budget: int | None = None) -> list[slice]:
    """Consecutive row slices covering ``range(k)``, each about ``budget`` bytes at ``itemsize`` per value."""
    step = max(1, (budget or _CHUNK_BYTES) // max(1, n * itemsize))
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
    values, which costs far more than the sum itself (and spins on the other cores afterwards). Rows are summed
    in segments of at most 8192 values so that each call stays on the calling thread.
    """
    n = a.shape[-1]
    if n <= _DOT_SEGMENT:
        return np.vecdot(a, b)
    m = -(-n // _DOT_SEGMENT)
    if n % m == 0 and a.ndim == 2 and a.flags.c_contiguous and b.shape == a.shape and b.flags.c_contiguous:
        r = a.shape[0]
        return np.vecdot(a.reshape(r * m, n // m), b.reshape(r * m, n // m)).reshape(r, m).sum(axis=1)
    total = np.vecdot(a[..., :_DOT_SEGMENT], b[..., :_DOT_SEGMENT])
    for s0 in range(_DOT_SEGMENT, n, _DOT_SEGMENT):
        total += np.vecdot(a[..., s0:s0 + _DOT_SEGMENT], b[..., s0:s0 + _DOT_SEGMENT])
    return total


def sign_counts(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per ascending-sorted row: how many values are < 0 and how many are <= 0 (two binary searches per row)."""
    k = rows.shape[0]
    # the smallest positive value of the dtype: "< it" means "<= 0" for values of that dtype
    probes = np.array([0.0, np.finfo(rows.dtype).smallest_subnormal], dtype=rows.dtype)
    counts = np.empty((k, 2), dtype=np.int64)
    for i in range(k):  # one C call per row; a vectorised bisection costs ~15 calls per chunk of rows
        counts[i] = np.searchsorted(rows[i], probes)
    return counts[:, 0], counts[:, 1]


class RowSplit:
    """Cut points for summing ``row[:split]`` and ``row[split:]`` of every row of ``(r, n)`` buffers in one pass.

    Built once per set of rows, then ``sums(buf)`` costs one ``np.add.reduceat`` per buffer.
    """

    def __init__(self, split: np.ndarray, n: int) -> None:
        self.split = np.asarray(split, dtype=np.int64)
        self.n = n
        r = len(self.split)
        self.idx = np.empty(2 * r, dtype=np.int64)
        self.idx[0::2] = np.arange(r, dtype=np.int64) * n
        self.idx[1::2] = self.idx[0::2] + np.minimum(self.split, n - 1)  # indices must be < size: fixed below
        self.empty = self.split <= 0
        self.full = self.split >= n
        self.edges = bool(self.empty.any() or self.full.any())

    def sums(self, buf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(sum of row[:split], sum of row[split:]) per row of the C-contiguous ``buf``."""
        if self.n == 1:
            v = buf[:, 0]
            return np.where(self.empty, 0.0, v), np.where(self.empty, v, 0.0)
        s = np.add.reduceat(buf.reshape(-1), self.idx)
        left, right = s[0::2], s[1::2]
        if self.edges:
            left[self.empty] = 0.0  # reduceat gives flat[i], not 0, for an empty segment [i, i)
            left[self.full] += right[self.full]  # split == n was cut at n - 1: the last value went right
            right[self.full] = 0.0
        return left, right


def split_row_sums(buf: np.ndarray, split: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the sum of ``buf[r, :split[r]]`` and of ``buf[r, split[r]:]`` (``0 <= split <= n``)."""
    return RowSplit(split, buf.shape[1]).sums(buf)
