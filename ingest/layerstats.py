"""Statistics phase: per layer, compute every statistic from the stored pre-activations.

The values come either from the stored Zarr array, read in column blocks that fit ``--mem-budget``, or, on a
GPU, from a copy of exactly the stored values that stayed on the device during streaming (``resident``). The
statistics kernel is numpy's (:func:`negdb.stats.compute.block_stats`) or torch's
(:func:`negdb.stats.torch_block.block_stats_torch`, on the model's device), chosen by
:func:`negdb.stats.torch_block.backend_for`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import zarr

from negdb.ingest.plan import StatSpec
from negdb.stats.compute import block_stats
from negdb.stats.mapping import normalise_distances, percentile_rank
from negdb.stats.schema import NEURON_STATS
from negdb.stats.wasserstein import NormalSampler
from negdb.store.arrays import CHUNK_COLS

BYTES_PER_VALUE = 40  # float16 read + float32/float64 working copies + sorted copy, per value of a block


@dataclass(frozen=True)
class PairPlan:
    """The seeded token pairs of mapping difficulty, and where their rows sit in the stored MLP inputs."""

    a: np.ndarray
    b: np.ndarray
    md_rows: np.ndarray

    def positions(self) -> tuple[np.ndarray, np.ndarray]:
        return np.searchsorted(self.md_rows, self.a), np.searchsorted(self.md_rows, self.b)


@dataclass(frozen=True)
class Kernel:
    """Which statistics kernel runs where: ``backend`` ``"numpy"`` (CPU threads) or ``"torch"`` (on ``device``).

    ``device_budget_mb``: device memory for one torch column chunk; ``threads``: numpy's threads (None: all cores).
    """

    backend: str = "numpy"
    device: str = "cpu"
    device_budget_mb: int = 1024
    threads: int | None = None


def _input_distances(inputs: zarr.Array, pairs: PairPlan, block: int = 8192) -> np.ndarray:
    """d_in of every pair from the stored float16 MLP inputs, in bounded blocks of pairs."""
    h = inputs[:]
    pos_a, pos_b = pairs.positions()
    dist = np.empty(len(pos_a), dtype=np.float64)
    for i in range(0, len(pos_a), block):
        diff = h[pos_a[i:i + block]].astype(np.float32) - h[pos_b[i:i + block]].astype(np.float32)
        dist[i:i + block] = np.sqrt(np.einsum("ij,ij->i", diff, diff, dtype=np.float64))
    return normalise_distances(dist)


def block_columns(n_tokens: int, d_mlp: int, mem_budget_mb: int) -> int:
    """Neurons per block so that a block's working memory stays within the budget (independent of tokens)."""
    read_buffer = n_tokens * CHUNK_COLS * 2 * 2  # Zarr decodes whole 128-column inner chunks (float16)
    k = max(1, (mem_budget_mb * 2**20 - read_buffer) // (n_tokens * BYTES_PER_VALUE))
    if k >= CHUNK_COLS:
        k -= k % CHUNK_COLS
    return min(k, d_mlp)


def layer_stats(preact: zarr.Array, inputs: zarr.Array, pairs: PairPlan, spec: StatSpec, layer: int,
                mem_budget_mb: int, kernel: Kernel = Kernel(), resident=None) -> pa.Table:
    """All statistics of one layer as an Arrow table with columns ``neuron`` + negdb.stats.schema.

    ``resident``: the layer's stored values as an ``(n_tokens, d_mlp)`` torch tensor on ``kernel.device``
    (used instead of reading ``preact``; needs the torch kernel).
    """
    n_tokens, d_mlp = preact.shape
    d_in = _input_distances(inputs, pairs)
    sampler = NormalSampler(spec.w_seed, layer) if spec.w_reference == "sample" else None
    parts: dict[str, list[np.ndarray]] = {}
    ref = spec.w_reference
    if kernel.backend == "torch":
        from negdb.stats.torch_block import block_stats_torch

        budget = kernel.device_budget_mb * 2**20
        if resident is not None:
            blocks = [(0, resident)]
        else:  # stored blocks, moved to the device one at a time
            import torch

            k = block_columns(n_tokens, d_mlp, mem_budget_mb)
            blocks = ((c0, torch.from_numpy(np.asarray(preact[:, c0:c0 + k])).to(kernel.device))
                      for c0 in range(0, d_mlp, k))
        for _, x in blocks:
            cols = block_stats_torch(x, reference=ref, sampler=sampler, pairs=(pairs.a, pairs.b),  # type: ignore
                                     d_in=d_in, budget_bytes=budget)
            for name, values in cols.items():
                parts.setdefault(name, []).append(np.asarray(values))
    else:
        k = block_columns(n_tokens, d_mlp, mem_budget_mb)
        for c0 in range(0, d_mlp, k):
            x = preact[:, c0:c0 + k]  # stored dtype: block_stats converts while it transposes
            cols = block_stats(x, reference=ref, sampler=sampler, pairs=(pairs.a, pairs.b),  # type: ignore[arg-type]
                               d_in=d_in, threads=kernel.threads)
            for name, values in cols.items():
                parts.setdefault(name, []).append(np.asarray(values))
    data = {name: np.concatenate(v) for name, v in parts.items()}
    data["w_pct"] = percentile_rank(data["w_dist"])
    columns = {"neuron": pa.array(np.arange(d_mlp, dtype=np.int32))}
    for col in NEURON_STATS:
        columns[col.name] = pa.array(data[col.name]).cast(col.arrow_type)
    return pa.table(columns)
