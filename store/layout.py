"""Where each kind of object lives inside a store folder.

```
<store>/negdb.json                              store format marker
<store>/negdb.duckdb                            views-only DuckDB file over the segments (store/duckfile.py)
<store>/tables/<table>/<segment>.parquet        immutable catalog segments (read by DuckDB)
<store>/acts/<model>/<revision>/<slice>/        Zarr v3 group of stored pre-activations
<store>/work/<job>/                             scratch of an unfinished job (resume state)
<store>/locks/<name>.lock                       advisory locks between writer processes
```
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from negdb.errors import StoreDamaged, StoreError, one_line

FORMAT_VERSION = 1
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def short_hash(*parts: object, n: int = 12) -> str:
    """Stable hex digest of the JSON form of ``parts``."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:n]


def safe_key(text: str) -> str:
    """A file-name-safe key for ``text``; a hash suffix keeps distinct inputs distinct."""
    cleaned = _SAFE.sub("_", text).strip("._") or "x"
    if cleaned == text and len(text) <= 80:
        return text
    return f"{cleaned[-60:]}-{short_hash(text, n=8)}"


@dataclass(frozen=True)
class StoreLayout:
    """Paths of one store folder."""

    root: Path

    @property
    def marker(self) -> Path:
        return self.root / "negdb.json"

    @property
    def duckdb_file(self) -> Path:
        return self.root / "negdb.duckdb"

    def table_dir(self, table: str) -> Path:
        return self.root / "tables" / table

    def acts_group(self, model_id: str, revision: str, slice_id: str) -> Path:
        return self.root / "acts" / safe_key(model_id) / safe_key(revision) / slice_id

    def work_dir(self, job_key: str) -> Path:
        return self.root / "work" / job_key

    def lock_file(self, name: str) -> Path:
        return self.root / "locks" / f"{safe_key(name)}.lock"

    def check(self) -> "StoreLayout":
        """Refuse a folder that is not a store this negdb reads: a damaged or foreign ``negdb.json``, another
        format, or a folder holding a ``tables/`` folder without the marker (not made by negdb). A missing or
        empty folder passes (a new store)."""
        if self.root.exists() and not self.root.is_dir():
            raise StoreError(f"--store {self.root} is a file: pass a folder path")
        if self.marker.is_dir():
            raise StoreDamaged(f"{self.marker} is a folder, not negdb's store marker: move it away if {self.root} "
                               "is a negdb store, or use another --store")
        if not self.marker.exists():
            if (self.root / "tables").exists() or (self.root / "acts").exists():
                raise StoreError(f"{self.root} holds tables/ or acts/ but no negdb.json, so it is not a negdb "
                                 "store: use a new or empty --store folder")
            return self
        try:
            data = json.loads(self.marker.read_text())
        except (OSError, UnicodeDecodeError, ValueError) as err:
            raise StoreDamaged(f"{self.marker} is damaged ({one_line(err)}): if {self.root} is a negdb store, "
                               f'write {{"format": {FORMAT_VERSION}}} into it; else use another --store') from err
        fmt = data.get("format") if isinstance(data, dict) else None
        if fmt != FORMAT_VERSION:
            raise StoreError(f"{self.root} holds a negdb store of format {fmt}; this negdb reads format "
                             f"{FORMAT_VERSION}: use a new --store folder")
        return self

    def init(self) -> "StoreLayout":
        """Create the store folder (idempotent); refuse a folder that is another store format, a damaged store,
        or a non-empty folder that is not a store (negdb never adopts someone else's files)."""
        if self.check().marker.exists():
            if not self.duckdb_file.exists():  # a store from before the views file
                from negdb.store.duckfile import ensure

                ensure(self.root)
            return self
        if self.root.is_dir() and any(not p.name.startswith(".negdb.json.") for p in self.root.iterdir()):
            raise StoreError(f"{self.root} is not empty and is not a negdb store (no negdb.json): use a new or "
                             "empty --store folder")
        from negdb.store.segments import atomic_write_bytes, disk_errors

        with disk_errors(self.root):
            self.root.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.marker, json.dumps({"format": FORMAT_VERSION}).encode(), exclusive=True)
        from negdb.store.duckfile import ensure

        ensure(self.root)  # negdb.duckdb: every table's view, for the duckdb shell
        return self
