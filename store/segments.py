"""Immutable Parquet segments written atomically.

A segment appears whole or not at all: it is written to a temporary file in the same folder,
flushed to disk, then linked into place (exclusive: the first writer wins) or renamed over the
old file (replace). Readers never see a partial file, and no writer holds a lock on the catalog.
"""

from __future__ import annotations

import contextlib
import errno
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


def write_segment(path: Path, table: pa.Table, *, exclusive: bool = True, row_group_size: int | None = None) -> bool:
    """Write an Arrow table as one Parquet segment at ``path`` atomically. Returns True if written."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.partial")
    with disk_errors(str(path)):
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, tmp, compression="zstd", row_group_size=row_group_size)
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
