"""Zarr v3 arrays of pre-activations: sharded by token blocks, chunked by neuron columns.

Each layer is one array of shape ``(n_tokens, d_mlp)``. A shard holds one ingest batch of rows
for all neurons, so a streaming write is one whole-shard write (no read-modify-write), while the
inner chunks are narrow column stripes, so reading one neuron (or a block of neurons) over all
tokens touches only those stripes of each shard.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import zarr
from zarr.codecs import ZstdCodec

CHUNK_COLS = 128
ROW_CHUNK = 256  # rows of md-input arrays: batches rarely split a chunk, so little read-modify-write


def _compressor(compression: str = "zstd") -> ZstdCodec | None:
    """zstd level 1: float16 activations shrink ~10% (LZ4 gains nothing); ``none`` writes fastest."""
    return ZstdCodec(level=1) if compression == "zstd" else None


def layer_name(layer: int) -> str:
    return f"L{layer:03d}"


def md_group_name(md_pairs: int, md_seed: int) -> str:
    """The sub-group ``md/<name>/`` of an acts group holding the md token pairs and the MLP inputs they need
    (named by the statistics spec's pair count and seed)."""
    return f"p{md_pairs}-s{md_seed}"


def create_preact(group: zarr.Group, layer: int, *, n_tokens: int, d_mlp: int, shard_rows: int,
                  dtype: str, compression: str = "zstd") -> zarr.Array:
    """Create (or open, when resuming) the pre-activation array of one layer."""
    sub = group.require_group("preact")
    name = layer_name(layer)
    if name in sub:
        return sub[name]  # type: ignore[return-value]
    cols = min(CHUNK_COLS, d_mlp)
    return sub.create_array(
        name, shape=(n_tokens, d_mlp), dtype=dtype, shards=(shard_rows, d_mlp),
        chunks=(shard_rows, cols) if d_mlp % cols == 0 else (shard_rows, d_mlp),
        compressors=_compressor(compression), fill_value=0, attributes={"layer": layer},
    )


def create_rows(group: zarr.Group, path: str, *, n_rows: int, n_cols: int, dtype: str) -> zarr.Array:
    """Create (or open) a row-chunked 2-D array, e.g. the MLP inputs of the md token sample."""
    if path in group:
        return group[path]  # type: ignore[return-value]
    parent, _, name = path.rpartition("/")
    target = group.require_group(parent) if parent else group
    return target.create_array(name, shape=(n_rows, n_cols), dtype=dtype,
                               chunks=(min(ROW_CHUNK, max(n_rows, 1)), n_cols),
                               compressors=None, fill_value=0)  # read whole, written in the hot loop


def put_vector(group: zarr.Group, name: str, values: np.ndarray) -> zarr.Array:
    """Store a small array whole (token ids, window and position indices, md pairs)."""
    if name in group:
        arr = group[name]
        return arr  # type: ignore[return-value]
    arr = group.create_array(name, shape=values.shape, dtype=values.dtype,
                             chunks=values.shape if values.size else (1,) * values.ndim,
                             compressors=_compressor(), fill_value=0)
    arr[...] = values
    return arr


def chunk_files(array_dir: Path, chunk_rows: int, row0: int, row1: int) -> list[Path]:
    """Files holding rows ``row0:row1`` of a 2-D array with one chunk column (default key encoding)."""
    first, last = row0 // chunk_rows, (row1 - 1) // chunk_rows
    return [array_dir / "c" / str(i) / "0" for i in range(first, last + 1)]


def fsync_files(paths: Iterable[Path]) -> None:
    """Flush written chunk files to disk (before the resume state says they are done)."""
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def open_group(path: Path, mode: str = "a") -> zarr.Group:
    return zarr.open_group(str(path), mode=mode)  # type: ignore[arg-type]
