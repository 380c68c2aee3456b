"""Where each kind of object lives inside a store folder.

```
<store>/negdb.json                              store format marker
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

from negdb.errors import StoreError

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

    def table_dir(self, table: str) -> Path:
        return self.root / "tables" / table

    def acts_group(self, model_id: str, revision: str, slice_id: str) -> Path:
        return self.root / "acts" / safe_key(model_id) / safe_key(revision) / slice_id

    def work_dir(self, job_key: str) -> Path:
        return self.root / "work" / job_key

    def lock_file(self, name: str) -> Path:
        return self.root / "locks" / f"{safe_key(name)}.lock"

    def init(self) -> "StoreLayout":
        """Create the store folder (idempotent); refuse a folder that is another store format."""
        if self.marker.exists():
            fmt = json.loads(self.marker.read_text()).get("format")
            if fmt != FORMAT_VERSION:
                raise StoreError(
                    f"{self.root} holds a negdb store of format {fmt}; this negdb reads format "
                    f"{FORMAT_VERSION}: use a new --store folder"
                )
            return self
        if self.root.exists() and not self.root.is_dir():
            raise StoreError(f"--store {self.root} is a file: pass a folder path")
        self.root.mkdir(parents=True, exist_ok=True)
        from negdb.store.segments import atomic_write_bytes

        atomic_write_bytes(self.marker, json.dumps({"format": FORMAT_VERSION}).encode(), exclusive=True)
        return self
