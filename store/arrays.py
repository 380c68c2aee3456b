"""Zarr v3 arrays of pre-activations: sharded by token blocks, chunked by neuron columns.

Each layer is one array of shape ``(n_tokens, d_mlp)``. A shard holds one ingest batch of rows
for all neurons, so a streaming write is one whole-shard write (no read-modify-write), while the
inner chunks are narrow column stripes, so reading one neuron (or a block of neurons) over all
tokens touches only those stripes of each shard.

Integrity (docs/STORE.md, "Integrity"): every array negdb writes stores every chunk, even one that
equals the fill value (``write_empty_chunks``), and every chunk carries a CRC-32C (zarr's ``crc32c``
codec; a shard's index has its own). So a deleted chunk file is detected by its absence and a
truncated or altered one by its checksum: :func:`read_array` raises :class:`~negdb.errors.StoreDamaged`
naming the file instead of returning zeros. Small whole arrays (:func:`put_vector`: token ids, window
and position indices, md pairs) are written in a temporary folder and renamed into place, and carry
the SHA-256 of their values, checked on every read and before a resume re-uses them.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import shutil
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import Crc32cCodec, ZstdCodec

from negdb.errors import StoreDamaged, one_line
from negdb.store.faults import crash_point
from negdb.store.segments import fsync_dir

CHUNK_COLS = 128
ROW_CHUNK = 256  # rows of md-input arrays: batches rarely split a chunk, so little read-modify-write
ALL_CHUNKS = "negdb_all_chunks"
"""Attribute of arrays written with every chunk stored: a missing chunk file means damage, never fill."""
SHA256 = "negdb_sha256"
"""Attribute of whole small arrays: the SHA-256 of their values (C order, stored dtype)."""
_CONFIG = {"write_empty_chunks": True}


def _compressors(compression: str = "zstd") -> list[Any]:
    """zstd level 1 (float16 activations shrink ~10%; LZ4 gains nothing; ``none`` writes fastest), then a CRC-32C."""
    return [ZstdCodec(level=1), Crc32cCodec()] if compression == "zstd" else [Crc32cCodec()]


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
        compressors=_compressors(compression), fill_value=0, attributes={"layer": layer, ALL_CHUNKS: True},
        config=_CONFIG,
    )


def create_rows(group: zarr.Group, path: str, *, n_rows: int, n_cols: int, dtype: str) -> zarr.Array:
    """Create (or open) a row-chunked 2-D array, e.g. the MLP inputs of the md token sample."""
    if path in group:
        return group[path]  # type: ignore[return-value]
    parent, _, name = path.rpartition("/")
    target = group.require_group(parent) if parent else group
    return target.create_array(name, shape=(n_rows, n_cols), dtype=dtype,
                               chunks=(min(ROW_CHUNK, max(n_rows, 1)), n_cols),
                               compressors=[Crc32cCodec()], fill_value=0,  # read whole, written in the hot loop
                               attributes={ALL_CHUNKS: True}, config=_CONFIG)


def values_sha256(values: np.ndarray) -> str:
    """SHA-256 of an array's values (C order) with its dtype and shape."""
    values = np.ascontiguousarray(values)
    h = hashlib.sha256(f"{values.dtype.str}{values.shape}".encode())
    h.update(values.tobytes())
    return h.hexdigest()


def put_vector(group_dir: Path, name: str, values: np.ndarray, *, tmp_dir: Path) -> None:
    """Store a small array whole at ``group_dir/name`` (token ids, window and position indices, md pairs).

    Write-then-publish: the array is written and flushed in a temporary folder under ``tmp_dir`` (same file
    system) and renamed into place, so ``name`` never exists without its data. An array already there (a
    resumed job's) is re-used only if it holds exactly ``values`` (its recorded SHA-256 and its content are
    checked); otherwise it is replaced.
    """
    final = group_dir / name
    if (final / "zarr.json").exists():
        try:
            if np.array_equal(read_array(final), values):
                return
        except StoreDamaged:
            pass
        shutil.rmtree(final)
    tmp_dir.mkdir(parents=True, exist_ok=True)
    tmp = tmp_dir / f".{final.name}.{uuid.uuid4().hex}.partial"
    arr = zarr.create_array(str(tmp), shape=values.shape, dtype=values.dtype,
                            chunks=values.shape if values.size else (1,) * values.ndim,
                            compressors=_compressors(), fill_value=0,
                            attributes={ALL_CHUNKS: True, SHA256: values_sha256(values)}, config=_CONFIG)
    crash_point("vector.after_create")
    arr[...] = values
    fsync_files(p for p in tmp.rglob("*") if p.is_file())
    crash_point("vector.before_rename")
    final.parent.mkdir(parents=True, exist_ok=True)
    os.rename(tmp, final)
    fsync_dir(final.parent)


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


# ------------------------------------------------------------------------------------------ checked reading

def _open(path: Path) -> zarr.Array:
    try:
        return zarr.open_array(str(path), mode="r")  # type: ignore[return-value]
    except Exception as err:  # noqa: BLE001 - a missing or garbled zarr.json, whatever zarr raises
        raise StoreDamaged(f"the stored array {path} cannot be opened ({one_line(err)}): run `negdb check` "
                           "to see what is affected") from err


def _grid(arr: zarr.Array) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(files per dimension, rows/columns per file): shards when sharded, else chunks."""
    block = arr.shards or arr.chunks
    return tuple(-(-s // b) for s, b in zip(arr.shape, block)), tuple(block)


def array_files(path: Path, arr: zarr.Array | None = None) -> list[Path]:
    """Every chunk (or shard) file of the array at ``path``, stored or not (for an array at an object-store URL,
    ``path`` is the URL string and so are the files)."""
    arr = arr if arr is not None else _open(path)
    counts, _ = _grid(arr)
    keys = [arr.metadata.encode_chunk_key(idx) for idx in itertools.product(*(range(n) for n in counts))]
    if isinstance(path, str):
        return [f"{path.rstrip('/')}/{k}" for k in keys]  # type: ignore[misc]
    return [path / k for k in keys]


def missing_files(path: Path, arr: zarr.Array | None = None) -> list[Path]:
    """Chunk files of an array written with every chunk stored that are not there (none for other arrays)."""
    arr = arr if arr is not None else _open(path)
    if not arr.attrs.get(ALL_CHUNKS) and arr.ndim < 2:
        return []  # an array of an older store, written without its fill-valued chunks: absence is no damage
    files = array_files(path, arr)
    if isinstance(path, str):  # an object store: one listing of the array's prefix
        import fsspec

        fs, base = fsspec.core.url_to_fs(path)
        found = {p.rstrip("/") for p in fs.find(base)}
        cut = len(path.rstrip("/")) - len(base.rstrip("/"))
        return [f for f in files if str(f)[cut:] not in found]
    return [p for p in files if not p.is_file()]


def _damaged_file(path: Path, arr: zarr.Array, *, probe: bool = False) -> Path | None:
    """The first chunk file of ``arr`` that does not decode (read one file's region at a time; with ``probe`` only
    its first element, which decodes a shard's index and one inner chunk: finds truncated files cheaply)."""
    counts, block = _grid(arr)
    for idx in itertools.product(*(range(n) for n in counts)):
        region = tuple(slice(i * b, min((i + 1) * b, s) if not probe else min(i * b + 1, s))
                       for i, b, s in zip(idx, block, arr.shape))
        try:
            arr[region]
        except Exception:  # noqa: BLE001 - whatever the codec raises for this file
            return path / arr.metadata.encode_chunk_key(idx)
    return None


def read_array(path: Path, selection: Any = Ellipsis) -> np.ndarray:
    """``array[selection]`` of the Zarr array at ``path``, or :class:`StoreDamaged` naming the damaged file.

    A chunk file that is missing (zarr would return the fill value: zeros), truncated or altered (its
    CRC-32C or the shard index's does not match), or a whole small array whose SHA-256 does not match
    its record, is an error, never data.
    """
    arr = _open(path)
    missing = missing_files(path, arr)
    if missing:
        raise StoreDamaged(f"the stored file {missing[0]} is missing ({len(missing)} of the array's "
                           f"{len(array_files(path, arr))} files are): run `negdb check` to see what is affected and "
                           "`negdb repair` to quarantine it")
    try:
        out = np.asarray(arr[selection])
    except Exception as err:  # noqa: BLE001 - zarr raises ValueError / RuntimeError for bad chunks
        bad = _damaged_file(path, arr)
        raise StoreDamaged(f"the stored file {bad or path} is damaged ({one_line(err)}): run `negdb check` to "
                           "see what is affected and `negdb repair` to quarantine it") from err
    digest = arr.attrs.get(SHA256)
    if digest and selection is Ellipsis and values_sha256(out) != digest:
        raise StoreDamaged(f"the stored array {path} does not match its recorded SHA-256: run `negdb check` to "
                           "see what is affected and `negdb repair` to quarantine it")
    return out


def verify_array(path: Path, *, full: bool = True, probe: bool = False) -> None:
    """Check an array: every file present and its SHA-256 if recorded; with ``full`` every file decoded (reads the
    whole array), with ``probe`` the start of every file (its shard index: finds truncated files);
    :class:`StoreDamaged` naming the first bad file if not."""
    arr = _open(path)
    missing = missing_files(path, arr)
    if missing:
        raise StoreDamaged(f"the stored file {missing[0]} is missing")
    if full or probe:
        bad = _damaged_file(path, arr, probe=not full)
        if bad is not None:
            raise StoreDamaged(f"the stored file {bad} is damaged")
    digest = arr.attrs.get(SHA256)
    if digest:
        try:
            values = np.asarray(arr[...])
        except Exception as err:  # noqa: BLE001 - whatever the codec raises
            raise StoreDamaged(f"the stored array {path} is damaged ({one_line(err)})") from err
        if values_sha256(values) != digest:
            raise StoreDamaged(f"the stored array {path} does not match its recorded SHA-256")
