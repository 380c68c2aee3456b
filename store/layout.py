"""Where each kind of object lives inside a store folder.

```
<store>/negdb.json                              store format marker
<store>/negdb.duckdb                            views-only DuckDB file over the segments (store/duckfile.py)
<store>/tables/<table>/<segment>.parquet        immutable catalog segments (read by DuckDB)
<store>/acts/<model>/<revision>/<slice>/        Zarr v3 group of stored pre-activations
<store>/work/<job>/                             scratch of an unfinished job (resume state)
<store>/locks/<name>.lock                       advisory locks between writer processes
```

A store at an object-store URL (``s3://bucket/prefix``) has the same ``negdb.json``, ``tables/`` and ``acts/`` objects;
its ``work/`` and ``locks/`` are local, in a scratch folder of this machine (:func:`scratch_dir`), and a unit of work
is guarded by a lease object instead of a lock (:meth:`StoreLayout.guard`). Catalog segments are read, tested and
created through :meth:`StoreLayout.read_segment`, :meth:`~StoreLayout.has_segment` and
:meth:`~StoreLayout.put_segment`, which create a segment only if absent on both kinds (a link into place on a
folder, a conditional ``PUT`` with ``If-None-Match: *`` on an object store): the first writer wins.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from negdb.errors import StoreDamaged, StoreError, one_line

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow as pa

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


def scratch_dir(url: str) -> Path:
    """The local folder of an object-store URL's ``work/`` and ``locks/`` (not a store: ingest stages its
    checkpoints in a store of its own, :func:`negdb.ingest.remote.staging_dir`)."""
    from negdb.config import cache_dir

    return cache_dir() / "scratch" / short_hash("scratch-v1", url.rstrip("/"), n=16)


@dataclass(frozen=True)
class StoreLayout:
    """Paths of one store folder, or of a store at an object-store ``url`` (then ``root`` is its local scratch
    folder: :func:`scratch_dir`). :meth:`at` makes either from what ``--store`` says."""

    root: Path
    url: str | None = None

    @classmethod
    def at(cls, store: str | Path | None) -> "StoreLayout":
        """The layout of ``store``: a folder (default ``$NEGDB_STORE`` or ``./negdb-store``) or an fsspec URL."""
        from negdb.store.objects import is_url

        if store is not None and is_url(store):
            url = str(store).rstrip("/")
            return cls(scratch_dir(url), url=url)
        from negdb.config import store_path

        return cls(store_path(store))

    @property
    def location(self) -> Path | str:
        """The store itself: its URL, else its folder (what a :class:`~negdb.store.catalog.Catalog` opens)."""
        return self.url if self.url is not None else self.root

    @property
    def objects(self) -> Any:
        """The store's objects (:mod:`negdb.store.objects`)."""
        from negdb.store.objects import objects_for

        return objects_for(self.location)

    # ------------------------------------------------------------------------------------ segments

    @staticmethod
    def segment_name(table: str, stem: str) -> str:
        """The object name of ``table``'s segment ``stem`` (``tables/<table>/<stem>.parquet``)."""
        return f"tables/{table}/{stem}.parquet"

    def has_segment(self, table: str, stem: str) -> bool:
        if self.url is None:
            return (self.table_dir(table) / f"{stem}.parquet").exists()
        return bool(self.objects.exists(self.segment_name(table, stem)))

    def read_segment(self, table: str, stem: str) -> "pa.Table | None":
        """The segment ``stem`` of ``table`` (``None`` when it is not published)."""
        import pyarrow.parquet as pq

        if self.url is None:
            path = self.table_dir(table) / f"{stem}.parquet"
            return pq.read_table(path) if path.exists() else None
        try:
            data = self.objects.read(self.segment_name(table, stem))
        except FileNotFoundError:
            return None
        return pq.read_table(io.BytesIO(data))

    def put_segment(self, table: str, stem: str, data: "pa.Table", *, exclusive: bool = True,
                    row_group_size: int | None = None) -> bool:
        """Publish ``data`` as the segment ``stem`` of ``table`` whole; with ``exclusive`` (the default) only if
        absent (first writer wins), else replacing it. True if this call wrote it."""
        from negdb.store.segments import write_segment

        if self.url is None:
            return write_segment(self.table_dir(table) / f"{stem}.parquet", data, exclusive=exclusive,
                                 row_group_size=row_group_size)
        from negdb.store.faults import crash_point
        from negdb.store.segments import write_parquet

        buf = io.BytesIO()
        write_parquet(buf, data, row_group_size=row_group_size)
        crash_point("segment.before_link")
        objects, name = self.objects, self.segment_name(table, stem)
        if exclusive:
            return bool(objects.put_new(name, buf.getvalue()))
        objects.replace(name, buf.getvalue())
        return True

    @contextlib.contextmanager
    def guard(self, name: str, *, done: Callable[[], bool]) -> Iterator[None]:
        """Hold the unit of work ``name`` for the block, so that two writers do not compute it both: a lock file
        in a folder store, a lease object (:mod:`negdb.store.lease`) in an object store, where a writer that
        finds ``done()`` true while waiting goes on without it. The caller checks again whether the work is
        stored before doing it; correctness never depends on the guard (segments are created if absent)."""
        if self.url is None:
            from negdb.store.locks import exclusive_lock

            with exclusive_lock(self.lock_file(name)):
                yield
            return
        from negdb.store import lease

        with lease.held(self.objects, safe_key(name), done=done, ttl_s=120.0, poll_s=1.0):
            yield

    # ------------------------------------------------------------------------------------ paths

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

    def is_store(self) -> bool:
        """Whether the store exists (its ``negdb.json``)."""
        return self.marker.exists() if self.url is None else bool(self.objects.exists("negdb.json"))

    def check(self) -> "StoreLayout":
        """Refuse a folder that is not a store this negdb reads: a damaged or foreign ``negdb.json``, another
        format, or a folder holding a ``tables/`` folder without the marker (not made by negdb). A missing or
        empty folder passes (a new store)."""
        if self.url is not None:
            self._check_url(create=False)
            return self
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

    def _check_url(self, *, create: bool) -> None:
        objects = self.objects
        if create:
            objects.put_new("negdb.json", json.dumps({"format": FORMAT_VERSION}).encode())
        elif not objects.exists("negdb.json"):
            return
        try:
            fmt = json.loads(objects.read("negdb.json")).get("format")
        except (ValueError, AttributeError) as err:
            raise StoreDamaged(f"{self.url}/negdb.json is damaged ({one_line(err)}): use another --store") from err
        if fmt != FORMAT_VERSION:
            raise StoreError(f"{self.url} holds a negdb store of format {fmt}; this negdb reads format "
                             f"{FORMAT_VERSION}: use a new --store")

    def init(self) -> "StoreLayout":
        """Create the store folder (idempotent); refuse a folder that is another store format, a damaged store,
        or a non-empty folder that is not a store (negdb never adopts someone else's files). An object store
        gets its ``negdb.json`` (created if absent)."""
        if self.url is not None:
            self._check_url(create=True)
            return self
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
