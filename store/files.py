"""The store's files at the lowest level: flushing a folder's entries and listing a table's published segments.

Below :mod:`negdb.store.segments` (which writes segments and re-exports these) and
:mod:`negdb.store.duckfile` (which segments notify when a table gets its first segment).
"""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """Flush a folder's entries (a rename or link in it) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def list_segments(folder: Path) -> list[Path]:
    """The published segments of one table (temporary files excluded), sorted by name."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.rglob("*.parquet") if not p.name.startswith("."))
