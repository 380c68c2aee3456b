"""One shared catalog snapshot for many readers, replaced when the store's segment listing changes.

Writers publish immutable Parquet segments atomically (``negdb.store.segments``), so a snapshot (the list of
segment files a :class:`~negdb.store.catalog.Catalog` was opened on) is always a consistent, complete view.
:class:`LiveCatalog` keeps one such snapshot and, at most every ``check_interval`` seconds, compares a cheap
fingerprint of the store (the modification times of ``tables/`` and every folder below it, which change whenever
a segment is linked, renamed or removed there) with the one the snapshot was taken at. When it changed, the exact
listing is compared, and only if that changed is a new Catalog built, under a lock, while requests keep using
the old one; the new one is then swapped in and the old one is closed once its last request is done.

Folder timestamps have a coarse clock on some file systems: a segment published in the same clock tick as the
listing was read could leave the fingerprint unchanged. A snapshot whose fingerprint is that recent is therefore
marked unsettled, and the next check compares the exact listing regardless.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from typing import Any
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

from negdb.errors import NegdbError
from negdb.store.catalog import Catalog
from negdb.store.layout import StoreLayout
from negdb.store.segments import segment_listing

# A folder modified this recently (seconds) may change again within the same timestamp tick.
_RACY_S = 2.0
WARM_UP = "SELECT count(*) FROM neuron_stats"
"""Run once on each new snapshot of a folder store: it parses every statistics segment's footer into the user-SQL
database's metadata cache (a count needs nothing else), which the first search across checkpoints would otherwise
do in its request (about 80 ms at 154 checkpoints). Not on an object store, where each footer is a GET."""


def _fingerprint(tables: Path) -> tuple:
    """Modification times of ``tables/`` and every folder below it (a few ``stat`` calls, no file reads).

    A segment linked, renamed or removed anywhere below changes its folder's time; segments may sit in
    sub-folders (``segment_listing`` reads them recursively).
    """
    entries = []

    def walk(folder: str, rel: str) -> None:
        entries.append((rel, os.stat(folder).st_mtime_ns))
        with os.scandir(folder) as it:
            subs = [e for e in it if e.is_dir(follow_symlinks=False)]
        for e in subs:
            walk(e.path, f"{rel}/{e.name}")

    try:
        walk(str(tables), "")
    except FileNotFoundError:  # no tables yet, or a folder vanished meanwhile: differs from any real listing
        return ()
    return tuple(sorted(entries))


def _listing(tables: Path) -> tuple:
    """The published segments of every table folder, with size and mtime (run records are replaced in place)."""
    if not tables.is_dir():
        return ()
    with os.scandir(tables) as it:
        folders = sorted(e.path for e in it if e.is_dir(follow_symlinks=False))
    return tuple(entry for folder in folders for entry in segment_listing(Path(folder)))


class Snapshot:
    """A Catalog with the listing it was built from, counted while requests use it."""

    def __init__(self, catalog: Catalog, listing: tuple, fingerprint: tuple, listed_at: float) -> None:
        self.catalog = catalog
        self.listing = listing
        self.fingerprint = fingerprint
        self.listed_at = listed_at     # when the listing was last read (or confirmed unchanged)
        self.built_at = time.time()
        self.checked_at = self.built_at
        self.users = 0
        self.retired = False
        self.lock = threading.Lock()   # serialises negdb's own (non-query) calls on this Catalog's connection
        self.memo: dict[str, object] = {}  # facts derived from this (immutable) snapshot, computed once
        self.memo_lock = threading.Lock()

    def remember(self, key: str, compute):  # type: ignore[no-untyped-def]
        """``compute()`` once per snapshot (its listing never changes, so neither does the answer)."""
        with self.memo_lock:
            if key in self.memo:
                return self.memo[key]
        value = compute()
        with self.memo_lock:
            return self.memo.setdefault(key, value)

    @property
    def racy(self) -> bool:
        """A folder changed so shortly before the listing was read that a later change may share its timestamp."""
        newest = max((m for _, m in self.fingerprint), default=0)
        return newest / 1e9 > self.listed_at - _RACY_S

    @property
    def segments(self) -> int:
        return len(self.listing)


class LiveCatalog:
    """The service's shared, self-refreshing catalog snapshot (thread-safe)."""

    def __init__(self, root: Path | str, *, check_interval: float = 0.5) -> None:
        from negdb.store.objects import FsspecObjects, is_url

        self._objects = FsspecObjects(str(root)) if is_url(root) else None
        self.root: Path | str = str(root) if self._objects is not None else Path(root)
        self.layout = StoreLayout(Path(root) if self._objects is None else Path("/nonexistent-object-store"))
        self.tables = Path(root) / "tables" if self._objects is None else Path("/nonexistent-object-store")
        self.check_interval = check_interval
        self.rebuilds = 0
        self._lock = threading.Lock()          # guards _current and the user counts
        self._build_lock = threading.Lock()    # one check or rebuild at a time; readers never wait for it
        self._current = self._build()

    def _fingerprint(self) -> Any:
        if self._objects is not None:  # an object store: the listing (names, sizes, ETags) is the fingerprint
            # (entry, 0): no timestamp races to fear, each entry names size and ETag
            return tuple((f"{n}:{i.get('size')}:{i.get('ETag') or i.get('LastModified')}", 0)
                         for n, i in self._objects.listing("tables"))
        return _fingerprint(self.tables)

    def _list(self) -> Any:
        return self._fingerprint() if self._objects is not None else _listing(self.tables)

    def _build(self) -> Snapshot:
        fingerprint = self._fingerprint()   # taken first: a change after this point changes it again
        listed_at = time.time()
        listing = self._list()
        catalog = Catalog(self.root)
        if self._objects is None:
            with contextlib.suppress(NegdbError, duckdb.Error):  # only a warm-up: what fails here fails in its request
                catalog.query(WARM_UP)
        return Snapshot(catalog, listing, fingerprint, listed_at)

    @property
    def snapshot(self) -> Snapshot:
        return self._current

    def maybe_refresh(self, *, force: bool = False) -> bool:
        """Replace the snapshot if the store's segment listing changed. Returns True if it was replaced.

        Checks at most every ``check_interval`` seconds; while one thread checks or rebuilds, the others go on
        with the current snapshot instead of waiting (``force`` waits and always rebuilds).
        """
        if not force and time.time() - self._current.checked_at < self.check_interval:
            return False
        if not self._build_lock.acquire(blocking=force):
            return False
        try:
            snap = self._current
            if not force:
                if time.time() - snap.checked_at < self.check_interval:
                    return False  # another thread just checked
                fingerprint = self._fingerprint()
                if fingerprint == snap.fingerprint and not snap.racy:
                    snap.checked_at = time.time()
                    return False
                listed_at = time.time()
                if self._list() == snap.listing:
                    snap.fingerprint, snap.listed_at, snap.checked_at = fingerprint, listed_at, time.time()
                    return False
            new = self._build()
            with self._lock:
                old, self._current = self._current, new
                old.retired = True
                close_now = old.users == 0
            self.rebuilds += 1
        finally:
            self._build_lock.release()
        if close_now:
            old.catalog.close()
        return True

    @contextlib.contextmanager
    def use(self) -> Iterator[Snapshot]:
        """The current snapshot (refreshed first if due), kept open until the block ends."""
        self.maybe_refresh()
        with self._lock:
            snap = self._current
            snap.users += 1
        try:
            yield snap
        finally:
            with self._lock:
                snap.users -= 1
                close_now = snap.retired and snap.users == 0
            if close_now:
                snap.catalog.close()

    def close(self) -> None:
        with self._lock:
            self._current.retired = True
            close_now = self._current.users == 0
        if close_now:
            self._current.catalog.close()


_ROWS: dict[tuple, int] = {}
_ROWS_LOCK = threading.Lock()


def row_counts(listing: tuple, tables: Path) -> dict[str, dict[str, int]]:
    """Segments and rows per table of a snapshot's listing (rows from the Parquet footers, cached per file)."""
    out: dict[str, dict[str, int]] = {}
    for path, size, mtime in listing:
        table = Path(path).relative_to(tables).parts[0]
        key = (path, size, mtime)
        with _ROWS_LOCK:
            rows = _ROWS.get(key)
        if rows is None:
            try:
                rows = pq.read_metadata(path).num_rows
            except (OSError, ValueError):  # replaced since the listing (run records): counted at the next snapshot
                rows = 0
            else:
                with _ROWS_LOCK:
                    _ROWS[key] = rows
        entry = out.setdefault(table, {"segments": 0, "rows": 0})
        entry["segments"] += 1
        entry["rows"] += rows
    return out
