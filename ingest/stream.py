"""Streaming phase: forward batches, captured pre-activations written to Zarr as they come."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import zarr

from negdb.ingest.state import JobState
from negdb.models.capture import run_batch
from negdb.store.arrays import (ROW_CHUNK, chunk_files, create_preact, create_rows, fsync_files, layer_name,
                                missing_files)
from negdb.store.faults import crash_point
from negdb.store.segments import disk_errors


@dataclass(frozen=True)
class StreamPlan:
    """Shapes of one job's spool: which layers, batch size, and which token rows keep MLP inputs."""

    layers: list[int]
    windows_per_batch: int
    store_dtype: str
    compression: str
    md_rows: np.ndarray  # sorted flat token indices whose MLP input is stored
    md_key: str  # sub-group of the MLP inputs (depends on the md pairs)


def _prepare(group: zarr.Group, plan: StreamPlan, *, n_tokens: int, seq_len: int, d_mlp: int,
             d_model: int) -> tuple[dict[int, zarr.Array], dict[int, zarr.Array]]:
    shard_rows = plan.windows_per_batch * seq_len
    preacts = {l: create_preact(group, l, n_tokens=n_tokens, d_mlp=d_mlp, shard_rows=shard_rows,
                                dtype=plan.store_dtype, compression=plan.compression) for l in plan.layers}
    inputs = {l: create_rows(group, f"md/{plan.md_key}/{layer_name(l)}", n_rows=len(plan.md_rows),
                             n_cols=d_model, dtype="float16") for l in plan.layers}
    return preacts, inputs


def _write(preacts: dict[int, zarr.Array], inputs: dict[int, zarr.Array], captured, r0: int, r1: int,
           j0: int, j1: int, group_dir: Path, shard_rows: int) -> None:
    files: list[Path] = []
    for layer, arr in preacts.items():
        arr[r0:r1] = captured.preacts[layer].numpy()
        files += chunk_files(group_dir / "preact" / layer_name(layer), shard_rows, r0, r1)
    if j1 > j0:
        for layer, arr in inputs.items():
            arr[j0:j1] = captured.inputs[layer].numpy().astype(np.float16)
            rel = Path(arr.path)
            files += chunk_files(group_dir / rel, arr.chunks[0], j0, j1)
    fsync_files(files)


def verify_done(group_dir: Path, plan: StreamPlan, state: JobState, shard_rows: int) -> int:
    """Check that every file of the batches counted done is there; count the batches from the first one with a
    missing file as not done (they are written again). Returns how many batches were taken back."""
    first_bad = state.batches_done
    for layer in plan.layers:
        for path in missing_files(group_dir / "preact" / layer_name(layer)):
            first_bad = min(first_bad, int(path.parent.name))  # c/<shard row>/0
        rows = group_dir / "md" / plan.md_key / layer_name(layer)
        for path in missing_files(rows):
            first_row = int(path.parent.name) * ROW_CHUNK
            if first_row < len(plan.md_rows):
                first_bad = min(first_bad, int(plan.md_rows[first_row]) // shard_rows)
    taken = max(0, state.batches_done - first_bad)
    state.batches_done -= taken
    return taken


def stream(lm, tokens: np.ndarray, group: zarr.Group, group_dir: Path, plan: StreamPlan, state: JobState,
           work: Path, on_tokens: Callable[[int], None], resident: dict[int, torch.Tensor] | None = None) -> None:
    """Run every remaining batch; each batch is durable (written and flushed) before it counts as done.

    ``resident`` (layer -> an ``(n_tokens, d_mlp)`` tensor on the model's device, in the store dtype) also
    receives each batch's captured values there, so that statistics can be computed on the device afterwards.
    """
    n_windows, seq_len = tokens.shape
    preacts, inputs = _prepare(group, plan, n_tokens=n_windows * seq_len, seq_len=seq_len,
                               d_mlp=lm.d_mlp, d_model=lm.d_model)
    wpb = plan.windows_per_batch
    n_batches = -(-n_windows // wpb)
    shard_rows = wpb * seq_len
    if state.batches_done and verify_done(group_dir, plan, state, shard_rows):
        state.save(work)
    pending: tuple[Future, int, int] | None = None
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="negdb-writer") as pool:
        for b in range(state.batches_done, n_batches):
            w0, w1 = b * wpb, min((b + 1) * wpb, n_windows)
            r0, r1 = w0 * seq_len, w1 * seq_len
            j0, j1 = np.searchsorted(plan.md_rows, [r0, r1])
            rows = torch.from_numpy(plan.md_rows[j0:j1] - r0)
            ids = torch.from_numpy(tokens[w0:w1].astype(np.int64)).to(lm.device)
            captured = run_batch(lm, ids, plan.layers, input_rows=rows,
                                 out_dtype=getattr(torch, plan.store_dtype), keep_on_device=resident is not None)
            for layer, buf in (resident or {}).items():
                buf[r0:r1].copy_(captured.device_preacts[layer], non_blocking=True)
            captured.device_preacts.clear()
            if pending is not None:
                _finish(pending, state, work, on_tokens)
            future = pool.submit(_write, preacts, inputs, captured, r0, r1, int(j0), int(j1), group_dir,
                                 shard_rows)
            pending = (future, b, r1 - r0)
        if pending is not None:
            _finish(pending, state, work, on_tokens)
    state.timings["stream_s"] = state.timings.get("stream_s", 0.0) + time.perf_counter() - started


def _finish(pending: tuple[Future, int, int], state: JobState, work: Path,
            on_tokens: Callable[[int], None]) -> None:
    future, b, n_rows = pending
    waited = time.perf_counter()
    with disk_errors(work / "spool.zarr"):
        future.result()
    state.timings["writer_wait_s"] = state.timings.get("writer_wait_s", 0.0) + time.perf_counter() - waited
    crash_point("stream.before_state")
    state.batches_done = b + 1
    state.save(work)
    crash_point("stream.after_batch")
    on_tokens(n_rows)
