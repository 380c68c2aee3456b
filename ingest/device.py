"""Where an ingest's statistics run: the kernel for the model's device, its memory budget, device-resident capture
buffers, and the thread share left to statistics running in the background (used by :mod:`negdb.ingest.pipeline`)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from negdb.ingest.layerstats import Kernel
from negdb.ingest.plan import IngestSpec, Resources
from negdb.ingest.slices import TokenSlice
from negdb.ingest.state import JobState
from negdb.stats.rows import available_threads
from negdb.stats.torch_block import backend_for

RESIDENT_SHARE = 0.5
"""Largest share of a GPU's free memory that the device copies of the captured pre-activations may take."""
DEVICE_STATS_SHARE = 0.25
"""Share of a GPU's free memory one statistics chunk may use."""


def kernel_for(res: Resources, lm) -> Kernel:
    """The statistics kernel for this checkpoint: torch on the model's GPU, numpy on CPUs (``--stats-backend``)."""
    backend = backend_for(lm.device, res.stats_backend)
    device = str(lm.device) if backend == "torch" else "cpu"
    return Kernel(backend=backend, device=device, device_budget_mb=device_budget_mb(res, device))


def device_budget_mb(res: Resources, device: str) -> int:
    """Device memory for one statistics chunk: ``--mem-budget`` on the CPU, a quarter of what is free on a GPU."""
    if torch.device(device).type != "cuda":
        return res.mem_budget_mb
    free, _ = torch.cuda.mem_get_info(torch.device(device))
    return max(res.mem_budget_mb, int(free * DEVICE_STATS_SHARE) // 2**20)


@contextmanager
def fewer_threads(background: bool) -> Iterator[None]:
    """While another checkpoint's statistics run in the background, torch's forward pass leaves them a core."""
    before = torch.get_num_threads()
    if background and before > 1 and available_threads() <= before:
        torch.set_num_threads(before - 1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def resident_buffers(opts: IngestSpec, res: Resources, lm, sl: TokenSlice, state: JobState,
              kernel: Kernel) -> dict[int, torch.Tensor]:
    """Device buffers that receive every captured batch of the layers needing statistics, when they fit.

    Used with the torch kernel when this run streams every batch (not a resume part-way): on a GPU when the
    buffers take at most ``RESIDENT_SHARE`` of its free memory, on the CPU when they fit ``--mem-budget``.
    """
    todo = [l for l in state.stats_layers if l not in state.stats_done]
    if kernel.backend != "torch" or state.batches_done or not todo:
        return {}
    dtype = getattr(torch, opts.store_dtype)
    if not fits(sl.n_tokens * lm.d_mlp * len(todo) * torch.finfo(dtype).bits // 8, lm.device, res.mem_budget_mb):
        return {}
    return {l: torch.empty((sl.n_tokens, lm.d_mlp), dtype=dtype, device=lm.device) for l in todo}


def fits(need: int, device: torch.device, mem_budget_mb: int) -> bool:
    """Whether ``need`` bytes of device copies fit: ``RESIDENT_SHARE`` of a GPU's free memory, half the budget on
    the CPU."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return need <= RESIDENT_SHARE * free
    return need <= mem_budget_mb * 2**20 // 2
