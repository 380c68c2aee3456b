"""A store as a set of named objects: list, read, create-if-absent, replace.

The publish protocol needs only these four operations: a segment is *created if absent* (the first writer wins)
and a run record is *replaced*. On a local folder, creation is a flushed temporary file hard-linked into place
(:func:`negdb.store.segments.atomic_write_bytes`). Copying between stores (:mod:`negdb.store.merge`) is written
against this interface, so that other backends (object storage) plug in without touching it.
"""

from __future__ import annotations

import os
from pathlib import Path

from negdb.store.segments import atomic_write_bytes


class LocalObjects:
    """The objects of a store folder; names are '/'-separated paths relative to the store root."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"LocalObjects({str(self.root)!r})"

    def path(self, name: str) -> Path:
        return self.root / name

    def list(self, prefix: str) -> list[str]:
        """Published objects under ``prefix`` (temporary ``.``-files excluded), sorted."""
        base = self.root / prefix
        if not base.is_dir():
            return []
        out = []
        for dirpath, _, files in os.walk(base):
            for f in files:
                if not f.startswith("."):
                    out.append(str((Path(dirpath) / f).relative_to(self.root)).replace(os.sep, "/"))
        return sorted(out)

    def exists(self, name: str) -> bool:
        return (self.root / name).is_file()

    def read(self, name: str) -> bytes:
        return (self.root / name).read_bytes()

    def size(self, name: str) -> int:
        return (self.root / name).stat().st_size

    def put_new(self, name: str, data: bytes) -> bool:
        """Create ``name`` with ``data`` unless it exists (atomic); True if this call created it."""
        return atomic_write_bytes(self.root / name, data, exclusive=True)

    def replace(self, name: str, data: bytes) -> None:
        atomic_write_bytes(self.root / name, data)
