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

from negdb.errors import NotEnoughDisk


def fsync_dir(path: Path) -> None:
    """Flush a folder's entries (a rename or link in it) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def disk_errors(what: str) -> Iterator[None]:
    """Turn a full disk into a one-line NegdbError."""
    try:
        yield
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise NotEnoughDisk(
                f"the disk is full while writing {what}: free space or use another --store; "
                "the unfinished work is kept and resumes when you run the command again"
            ) from err
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
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.partial")
    with disk_errors(str(path)):
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        return _publish(tmp, path, exclusive)


def write_segment(path: Path, table: pa.Table, *, exclusive: bool = True, row_group_size: int | None = None) -> bool:
    """Write an Arrow table as one Parquet segment at ``path`` atomically. Returns True if written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.partial")
    with disk_errors(str(path)):
        pq.write_table(table, tmp, compression="zstd", row_group_size=row_group_size)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        return _publish(tmp, path, exclusive)


def list_segments(folder: Path) -> list[Path]:
    """The published segments of one table (temporary files excluded), sorted by name."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.rglob("*.parquet") if not p.name.startswith("."))


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
