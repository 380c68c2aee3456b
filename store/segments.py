"""Immutable Parquet segments written atomically.

A segment appears whole or not at all: it is written to a temporary file in the same folder,
flushed to disk, then linked into place (exclusive: the first writer wins) or renamed over the
old file (replace). Readers never see a partial file, and no writer holds a lock on the catalog.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from negdb.errors import NegdbError, NotEnoughDisk, StoreError
from negdb.store.faults import crash_point
from negdb.store.files import fsync_dir, list_segments  # noqa: F401  (part of this module's API)


@contextlib.contextmanager
def disk_errors(what: str | Path) -> Iterator[None]:
    """Turn a full disk into :class:`NotEnoughDisk` and a read-only store into :class:`StoreError`, naming ``what``
    (the file or folder being written). Nothing partial is published by the writers that use this."""
    try:
        yield
    except NegdbError:
        raise
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            full = NotEnoughDisk(f"the disk is full while writing {what}: free space or use another --store; "
                                 "nothing partial was published")
            full.what = str(what)  # type: ignore[attr-defined]  # for callers that say more (ingest: it resumes)
            raise full from err
        if err.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise StoreError(f"cannot write {err.filename or what}: {err.strerror.lower()}; use a writable "
                             "--store folder") from err
        if err.errno == errno.ENOTDIR:
            raise StoreError(f"cannot write {what}: a part of its path is a file, not a folder; pass a folder "
                             "path as --store") from err
        raise


def _publish(tmp: Path, final: Path, exclusive: bool) -> bool:
    try:
        if exclusive:
            try:
                os.link(tmp, final)
            except FileExistsError:
                return False
        else:
            os.replace(tmp, final)
            return True
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(final.parent)
    return True


def atomic_write_bytes(path: Path, data: bytes, *, exclusive: bool = False) -> bool:
    """Write ``data`` to ``path`` atomically; with ``exclusive`` keep an existing file. Returns True if written."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.partial")
    with disk_errors(str(path)):
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        return _publish(tmp, path, exclusive)


SCAN_GROUP_ROWS = 131_072
"""Most rows in one row group of a scanned table (whole layers; one larger layer is a group of its own)."""


def layer_groups(layers: pa.ChunkedArray | pa.Array, max_rows: int | None = None) -> list[tuple[int, int]]:
    """(offset, rows) of each row group of a table ordered by ``layers``: runs of consecutive layers of at most
    ``max_rows`` (default :data:`SCAN_GROUP_ROWS`) rows together. A group never spans a gap in the layers, so its
    footer's (min, max) of ``layer`` names exactly the layers it holds (:func:`negdb.store.integrity.
    repeated_layers` relies on it)."""
    import numpy as np

    max_rows = SCAN_GROUP_ROWS if max_rows is None else max_rows

    values = np.asarray(layers.to_numpy() if isinstance(layers, pa.ChunkedArray) else layers.to_numpy(
        zero_copy_only=False))
    if not len(values):
        return []
    starts = np.flatnonzero(np.r_[True, values[1:] != values[:-1]])
    runs = list(zip(starts.tolist(), np.diff(np.r_[starts, len(values)]).tolist(), values[starts].tolist()))
    groups: list[tuple[int, int]] = []
    prev = None
    for off, n, layer in runs:
        if groups and prev is not None and layer == prev + 1 and groups[-1][1] + n <= max_rows:
            groups[-1] = (groups[-1][0], groups[-1][1] + n)
        else:
            groups.append((off, n))
        prev = layer
    return groups


def write_parquet(where: str | Path | io.BytesIO, table: pa.Table, *, row_group_size: int | None = None,
                  scan: bool = False) -> None:
    """Write ``table`` as Parquet to ``where``: ZSTD, or with ``scan`` the encoding of a table that queries scan
    column by column (``neuron_stats``): LZ4, dictionaries for the text keys only, and row groups of whole
    consecutive layers (:func:`layer_groups`). A scan of such a column costs about a third of one over ZSTD
    row groups of one layer each (decoding, dictionary fallbacks, and a fixed cost per row group), for files about
    5% larger: ``bench/RESULTS.md``."""
    if not scan:
        pq.write_table(table, where, compression="zstd", row_group_size=row_group_size)
        return
    texts = [f.name for f in table.schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)]
    groups = layer_groups(table.column("layer")) if "layer" in table.column_names else [(0, table.num_rows)]
    with pq.ParquetWriter(where, table.schema, compression="lz4", use_dictionary=texts) as writer:
        for off, n in groups or [(0, 0)]:
            writer.write_table(table.slice(off, n), row_group_size=max(n, 1))


def write_segment(path: Path, table: pa.Table, *, exclusive: bool = True, row_group_size: int | None = None,
                  scan: bool = False) -> bool:
    """Write an Arrow table as one Parquet segment at ``path`` atomically (:func:`write_parquet`). Returns True if
    written."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.partial")
    with disk_errors(str(path)):
        path.parent.mkdir(parents=True, exist_ok=True)
        write_parquet(tmp, table, row_group_size=row_group_size, scan=scan)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        crash_point("segment.before_link")
        written = _publish(tmp, path, exclusive)
    if written:
        from negdb.store.duckfile import segment_published

        segment_published(path)  # the store's negdb.duckdb gains a view when a table gets its first segment
    return written


Listing = tuple[tuple[str, int, int], ...]
"""(path, size in bytes, modification time in ns) of each segment, sorted by path."""


def segment_listing(folder: Path) -> Listing:
    """The published segments of one table with their size and modification time (records such as a run's are
    replaced in place, which changes both); a segment removed while listing is left out."""
    out = []
    for p in list_segments(folder):
        try:
            st = p.stat()
        except FileNotFoundError:
            continue
        out.append((str(p), st.st_size, st.st_mtime_ns))
    return tuple(out)
