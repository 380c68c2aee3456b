"""The DuckDB catalog: SQL views over a snapshot of the store's Parquet segments.

Writers never open a DuckDB file (a DuckDB database file admits one writing process and blocks
readers meanwhile). They publish immutable Parquet segments atomically instead, and each
``Catalog`` is an in-memory DuckDB connection whose views read the segments that existed when it
was opened (or last refreshed). So readers never block writers, writers never block each other,
and no reader sees a partial result.

A ``Catalog`` holds two in-memory DuckDB databases with the same views:

- ``con``: negdb's own, trusted queries (:meth:`Catalog.sql`, :meth:`Catalog.arrow`);
- a hardened one for user SQL (:meth:`Catalog.query`, the only path for it): DuckDB refuses every
  file outside ``<store>/tables/`` (``enable_external_access = false`` with ``allowed_directories``),
  Python replacement scans, installing or loading extensions and spilling to temporary files, and
  its configuration is locked (``lock_configuration = true``) before the views are made, so no
  statement can undo any of it. Each call runs on its own cursor under a time limit
  (``interrupt()`` from a timer) and a streamed row limit.

DuckDB's ``allowed_directories`` allows *writing* inside the tables folder too (a ``COPY ... TO``
there would work), so the statement check of :mod:`negdb.store.safety` (one SELECT, DuckDB's own
parser) is what keeps user SQL from writing there; the hardened connection is the second wall
for everything outside it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Iterator
from typing import Any

import duckdb
import polars as pl
import pyarrow as pa

from negdb.errors import BadArgument, BadQuery, QueryTimeout, QueryTooLarge, StoreError, one_line
from negdb.store.bounds import memory_bound, time_bound
from negdb.store.hardened import (QUERY_MEMORY_HEADROOM_MIB, default_memory_limit, empty_select,
                                  hardened_connection, quote_ident, size_bytes)
from negdb.store import manifest
from negdb.store.integrity import KEYS, LAYER_KEY_STATS, damaged_segment, dedupe_filter, repeated_layers
from negdb.store.layout import StoreLayout
from negdb.store.safety import check_statement, expression_type
from negdb.store.segments import Listing, segment_listing
from negdb.store.tables import NEURONS_SOURCES, NEURONS_VIEW, Table, all_tables, neurons_meaning, view_docs

QUERY_TIMEOUT_S = 10.0
"""Default time limit of user SQL embedded in commands (``--where`` of select/ablate) and of the service."""

FETCH_BATCH_ROWS = 8192
"""Rows per streamed batch of a user query."""


@dataclass(frozen=True)
class QueryResult:
    """What :meth:`Catalog.query` returns: at most ``max_rows`` rows; ``truncated`` if more existed."""

    table: pa.Table
    truncated: bool


def _sql_list(paths: list[Path] | list[str]) -> str:
    return "[" + ", ".join("'" + str(p).replace("'", "''") + "'" for p in paths) + "]"


# neuron_stats segments sit in model_id=/revision= folders (see ingest/publish.py): DuckDB prunes by path
_HIVE = ", hive_partitioning = true, hive_types = {'model_id': VARCHAR, 'revision': VARCHAR}"
SMALL_TABLES = frozenset({"models", "checkpoints", "slices", "stat_specs", "runs", "activations", "neuron_sets",
                          "eval_results", "ablations", "analyses"})


def _offsets_kept(rel: duckdb.DuckDBPyRelation) -> duckdb.DuckDBPyRelation:
    """``rel`` with its ``TIME WITH TIME ZONE`` columns as text (``12:30:00+05:30``): Arrow's time types have
    no offset, and DuckDB's Arrow export drops it."""
    kinds = [str(t) for t in rel.types]
    if "TIME WITH TIME ZONE" not in kinds:
        return rel
    exprs = [(f"#{i}::VARCHAR" if kind == "TIME WITH TIME ZONE" else f"#{i}") + ' AS "' + name.replace('"', '""')
             + '"' for i, (name, kind) in enumerate(zip(rel.columns, kinds), start=1)]
    return rel.project(", ".join(exprs))


@contextlib.contextmanager
def _registered(con: duckdb.DuckDBPyConnection, name: str, table: pa.Table) -> Iterator[None]:
    """``table`` visible to ``con``'s SQL as ``name`` for the block (unregistered after it, even on an error)."""
    con.register(name, table)
    try:
        yield
    finally:
        con.unregister(name)


class Catalog:
    """Read access to a store's catalog through DuckDB (a consistent snapshot).

    ``sql``/``arrow`` run negdb's own queries on ``con`` (one thread at a time, like any DuckDB
    connection). ``query`` is for user SQL and may be called from several threads at once: each call
    gets its own cursor of the hardened database. ``refresh`` takes a new snapshot for both.
    """

    def __init__(self, root: Path | str, *, query_memory_limit: str | None = None,
                 use_manifest: bool | None = None) -> None:
        from negdb.store.objects import FsspecObjects, LocalObjects, is_url

        self.url = str(root).rstrip("/") if is_url(root) else None
        self._objects = FsspecObjects(self.url) if self.url else None
        self.layout = StoreLayout(Path(root)) if self.url is None else StoreLayout.at(self.url)
        if self.url is None:
            self.layout.check()
        self.con = duckdb.connect(":memory:")
        self.con.execute("SET GLOBAL parquet_metadata_cache = true")
        fs = None
        if self._objects is not None:
            from negdb.store.listedfs import ListedFileSystem

            fs = self._listed_fs = ListedFileSystem(self._objects.fs)
            self.con.register_filesystem(fs)
            tables_dir: Path | str = self._objects.uri("tables")
        else:
            # relative paths in negdb's own SQL resolve against the store, as in the views file (store/duckfile.py)
            self.con.execute("SET file_search_path = ?", [str(Path(root).expanduser().resolve())])
            tables_dir = Path(root).expanduser().resolve() / "tables"
        self._tables_dir = tables_dir
        self._memory_limit = query_memory_limit or default_memory_limit()
        self._memory_budget = size_bytes(self._memory_limit) + QUERY_MEMORY_HEADROOM_MIB * 2**20
        self._safe = hardened_connection(tables_dir, self._memory_limit, fs)
        self._safe_lock = threading.Lock()
        self._views: frozenset[str] = frozenset()
        self._listings: dict[str, Listing] = {}
        # what is known about each segment (by name): from earlier snapshots or the store's manifest
        self._store = self._objects if self._objects is not None else LocalObjects(self.layout.root)
        self._prefix = (self._objects.uri("") if self._objects is not None
                        else str(self.layout.root).rstrip("/") + "/")
        self._use_manifest = (use_manifest if use_manifest is not None
                              else os.environ.get("NEGDB_CATALOG_MANIFEST", "1") != "0")
        self._known: dict[str, manifest.SegmentInfo] = {}
        self._in_mem: dict[str, dict[str, tuple[int, int]]] = {}  # small table -> segments held: (size, stamp)
        self._fresh: set[str] = set()
        self._seeded = False
        self.segments_read = 0
        """Segments the last refresh read itself (the rest came from the earlier snapshot or the manifest)."""
        self.refresh()

    # ------------------------------------------------------------------------------------ snapshot

    def refresh(self) -> None:
        """Take a new snapshot: re-read the list of published segments.

        Only the views of tables whose listing (segment paths, sizes and modification stamps) changed since the
        last refresh are made again, and only the segments this catalog has not seen (by name, size and stamp)
        are read: a refresh after one new segment reads that one segment. The first refresh (opening the
        catalog) takes what it can from the store's manifest (:mod:`negdb.store.manifest`) and reads the rest;
        having read many segments itself, it publishes a new manifest for the next reader.
        """
        with self._safe_lock:
            if not self._seeded:
                self._seeded = True
                if self._use_manifest:
                    self._seed(manifest.latest(self._store))
            listings = self._all_listings()
            if self._objects is not None:
                self._listed_fs.listed = frozenset(self._objects.full(self._name(p))
                                                   for lst in listings.values() for p, _, _ in lst)
            changed = set()
            read = 0
            for table in all_tables():
                listing = listings.get(table.name, ())
                old = self._listings.get(table.name)
                if listing == old:
                    continue
                self._listings.pop(table.name, None)  # a failure below leaves the table to be made anew
                try:
                    read += self._view(table, listing)
                except duckdb.Error as err:
                    damaged = damaged_segment(Path(p) for p, _, _ in listing) if self._objects is None else None
                    raise (damaged or StoreError(f"cannot read the {table.name} segments of {self.layout.location} "
                                                 f"({one_line(err)}): run `negdb check`")) from err
                self._listings[table.name] = listing
                changed.add(table.name)
            if changed & set(NEURONS_SOURCES):
                self.con.execute(NEURONS_VIEW)
                self._safe.execute(NEURONS_VIEW)
            self._views = frozenset(self._listings) | {"neurons"}
            self.segments_read = read
            if self._use_manifest and read >= manifest.WRITE_AFTER:
                self._publish_manifest()

    # ------------------------------------------------------------------------------------ listing

    def _all_listings(self) -> dict[str, Listing]:
        """Each table's (path or URL, size, modification stamp) of its published segments, sorted by path (an
        object store: one listing of ``tables/``; the stamp is a stable hash of the ETag)."""
        self._fresh = set()
        if self._objects is None:
            soon = time.time_ns() - int(manifest.FRESH_S * 1e9)
            out = {t.name: segment_listing(self.layout.table_dir(t.name)) for t in all_tables()}
            self._fresh = {self._name(p) for lst in out.values() for p, _, mtime in lst if mtime > soon}
            return out
        grouped: dict[str, list[tuple[str, int, int]]] = {}
        soon_s = time.time() - manifest.FRESH_S
        for name, info in self._objects.listing("tables"):
            parts = name.split("/")
            if len(parts) < 3:
                continue
            etag = info.get("ETag")
            changed = info.get("LastModified") or info.get("mtime") or info.get("created")
            stamp = str(etag or changed)
            grouped.setdefault(parts[1], []).append((self._objects.uri(name), int(info.get("size") or 0),
                                                     int.from_bytes(hashlib.blake2b(stamp.encode(), digest_size=7)
                                                                    .digest(), "big")))
            if not etag:  # no content hash: trust the modification time only once it is old enough
                when = changed.timestamp() if hasattr(changed, "timestamp") else None
                if not isinstance(when, float) or when > soon_s:
                    self._fresh.add(name)
        return {t: tuple(v) for t, v in grouped.items()}

    def _name(self, path: str) -> str:
        """A listed segment's name relative to the store (``tables/<table>/...``)."""
        return path[len(self._prefix):] if path.startswith(self._prefix) else path

    # ------------------------------------------------------------------------------------ manifest

    def _seed(self, found: manifest.Manifest | None) -> None:
        """Take what the manifest knows: segment facts, and the small tables' rows into both databases."""
        if found is None:
            return
        self._known.update(found.segments)
        for table, rows in found.rows.items():
            if table not in SMALL_TABLES or not rows.num_rows:
                continue
            names = set(rows.column(manifest.SEGMENT).unique().to_pylist())
            for con in (self.con, self._safe):
                with _registered(con, "_negdb_seed", rows):
                    con.execute(f"CREATE OR REPLACE TABLE _mem_{table} AS SELECT * FROM _negdb_seed")
            self._in_mem[table] = {n: (i.size, i.stamp) for n, i in found.segments.items() if n in names}

    def _publish_manifest(self) -> None:
        """Publish what this catalog knows as the store's manifest (best effort)."""
        current = {self._name(p): (size, stamp) for lst in self._listings.values() for p, size, stamp in lst}
        keep = {n: i for n, i in self._known.items()
                if current.get(n) == (i.size, i.stamp) and n not in self._fresh}
        rows = {}
        for table, names in self._in_mem.items():
            wanted = [n for n in names if n in keep]
            if wanted:
                with _registered(self.con, "_negdb_names", pa.table({"n": wanted})):
                    rows[table] = self.con.sql(f"SELECT * FROM _mem_{table} WHERE {manifest.SEGMENT} IN "
                                               "(SELECT n FROM _negdb_names)").to_arrow_table()
        small = {n for names in self._in_mem.values() for n in names}
        keep = {n: i for n, i in keep.items() if i.schema or i.keys or n in small}
        manifest.publish(self._store, manifest.Manifest(keep, rows))

    # ------------------------------------------------------------------------------------ views

    def _view(self, table: Table, listing: Listing) -> int:
        """Make ``table``'s view on both databases over the segments of ``listing``; the number of segments read
        (the rest was known: from an earlier snapshot or the manifest)."""
        segments: list = [Path(p) if self._objects is None else p for p, _, _ in listing]
        if not segments:
            for con in (self.con, self._safe):
                con.execute(f"DROP TABLE IF EXISTS _mem_{table.name}")
            self._in_mem.pop(table.name, None)
            self.con.execute(f"DROP VIEW IF EXISTS {table.name}")
            self.con.register(f"_empty_{table.name}", table.schema.empty_table())
            self.con.execute(f"CREATE OR REPLACE VIEW {table.name} AS SELECT * FROM _empty_{table.name}")
            self._safe.execute(f"CREATE OR REPLACE VIEW {table.name} AS {empty_select(table)}")
            return 0
        hive = _HIVE if all("/model_id=" in str(p) for p in segments) else ""
        if table.name in SMALL_TABLES:
            return self._small_view(table, listing, hive)
        return self._large_view(table, listing, segments, hive)

    def _resolved(self, paths: list) -> list:
        """The paths the hardened database reads (inside its allowed_directories): resolved in a folder store."""
        if self._objects is not None:
            return paths
        folder = self.layout.root / "tables"
        return [self._tables_dir / Path(p).relative_to(folder) for p in paths]  # type: ignore[operator]

    def _large_view(self, table: Table, listing: Listing, segments: list, hive: str) -> int:
        """A view over the segments' files, read per group of equal schema (no file but the first of a group is
        opened to make it), so a large table's view costs no reads of every footer."""
        new = self._unknown(listing, segments)
        if new:
            self._learn(table.name, new, listing)
        groups: dict[str, list[int]] = {}
        for i, (p, _, _) in enumerate(listing):
            groups.setdefault(self._known[self._name(p)].schema, []).append(i)
        repeated: dict[str, list[int]] = {}
        if table.name == "neuron_stats" and len(listing) > 1:
            # a layer held by two neuron_stats segments (an older negdb's resume could write one twice): shown once
            rows = [(p, *k) for p, _, _ in listing for k in self._known[self._name(p)].keys]
            repeated = repeated_layers(rows, listing)
        for con, every in ((self.con, segments), (self._safe, self._resolved(segments))):
            extra = ", filename = true" if repeated else ""
            body = " UNION ALL BY NAME ".join(
                f"SELECT * FROM read_parquet({_sql_list([every[i] for i in idx])}{hive}{extra})"
                for idx in groups.values())
            if repeated:
                names = {str(p): str(b) for (p, _, _), b in zip(listing, every)}
                con.execute(f"CREATE OR REPLACE VIEW {table.name} AS SELECT * EXCLUDE (filename) FROM ({body}) "
                            f"WHERE {dedupe_filter(repeated, names)}")
            else:
                con.execute(f"CREATE OR REPLACE VIEW {table.name} AS {body}")
        return len(new)

    def _unknown(self, listing: Listing, segments: list) -> list[tuple[str, str]]:
        """(path as read, name) of the listed segments this catalog knows nothing about in this version."""
        out = []
        for s, (p, size, stamp) in zip(segments, listing):
            info = self._known.get(self._name(p))
            if info is None or (info.size, info.stamp) != (size, stamp) or not info.schema:
                out.append((str(s), self._name(p)))
        return out

    def _learn(self, table: str, new: list[tuple[str, str]], listing: Listing) -> None:
        """Read the footers of ``new`` segments (path, name): their schema fingerprints and (neuron_stats) key
        statistics."""
        paths = [p for p, _ in new]
        by_path = {p: n for p, n in new}
        sizes = {self._name(p): (size, stamp) for p, size, stamp in listing}
        fields: dict[str, list[str]] = {p: [] for p in paths}
        for file, *rest in self.con.execute(
                "SELECT file_name, name, type, converted_type, logical_type, repetition_type, num_children "
                "FROM parquet_schema(?)", [paths]).fetchall():
            fields.setdefault(str(file), []).append("|".join(map(str, rest)))
        keys: dict[str, list[tuple]] = {}
        if table == "neuron_stats":
            for file, *rest in self.con.execute(LAYER_KEY_STATS, [paths]).fetchall():
                keys.setdefault(str(file), []).append(tuple(rest))
        for p in paths:
            if not fields.get(p):
                raise duckdb.IOException(f"no Parquet schema read from {p}")
            name = by_path[p]
            size, stamp = sizes[name]
            self._known[name] = manifest.SegmentInfo(size, stamp, hashlib.sha256("\n".join(fields[p]).encode())
                                                     .hexdigest()[:16], tuple(keys.get(p, ())))

    def _small_view(self, table: Table, listing: Listing, hive: str) -> int:
        """A small table kept in memory (a few tiny segments per model: no file opens per query), the same rows on
        both databases: only segments not yet held are read (once, by the trusted one) and copied to the other."""
        mem = f"_mem_{table.name}"
        held = self._in_mem.get(table.name, {})
        now = {self._name(p): (size, stamp) for p, size, stamp in listing}
        gone = [n for n, v in held.items() if now.get(n) != v]
        new = [p for p, size, stamp in listing if held.get(self._name(p)) != (size, stamp)]
        rows = None
        if new:
            read = new if self._objects is not None else [Path(p) for p in new]
            cut = len(self._prefix) + 1
            rows = self.con.sql(f"SELECT * REPLACE (substr({manifest.SEGMENT}, {cut}) AS {manifest.SEGMENT}) "
                                f"FROM read_parquet({_sql_list(read)}, union_by_name = true{hive}, "
                                f"filename = '{manifest.SEGMENT}')").to_arrow_table()
        done = False
        if held and self._has(mem):
            try:
                drop = sorted(set(gone) | {self._name(p) for p in new})  # idempotent after a half-done refresh
                for con in (self.con, self._safe):
                    self._replace_rows(con, mem, drop, rows)
                done = True
            except duckdb.Error:  # columns (or types) the table lacks: make it anew below
                pass
        if not done:
            whole = rows
            if held and self._has(mem):  # what is held (less what changed), widened to the new segments' columns
                drop = pa.table({"n": pa.array(sorted(set(gone) | {self._name(p) for p in new}), pa.string())})
                with _registered(self.con, "_negdb_drop", drop):
                    kept = f"SELECT * FROM {mem} WHERE {manifest.SEGMENT} NOT IN (SELECT n FROM _negdb_drop)"
                    if rows is None:
                        whole = self.con.sql(kept).to_arrow_table()
                    else:
                        with _registered(self.con, "_negdb_new", rows):
                            whole = self.con.sql(f"{kept} UNION ALL BY NAME SELECT * FROM _negdb_new").to_arrow_table()
            for con in (self.con, self._safe):
                with _registered(con, "_negdb_whole", whole):
                    con.execute(f"CREATE OR REPLACE TABLE {mem} AS SELECT * FROM _negdb_whole")
        self._in_mem[table.name] = now
        for n, (size, stamp) in now.items():
            info = self._known.get(n)
            if info is None or (info.size, info.stamp) != (size, stamp):
                self._known[n] = manifest.SegmentInfo(size, stamp)
        keys = KEYS.get(table.name)
        cols = [str(r[0]) for r in self.con.execute(f"DESCRIBE {mem}").fetchall() if r[0] != manifest.SEGMENT]
        if keys:  # one row per key (first by the other columns, so always the same one)
            order = ", ".join(quote_ident(c) for c in cols if c not in keys) or "1"
            once = f" QUALIFY row_number() OVER (PARTITION BY {', '.join(keys)} ORDER BY {order}) = 1"
        else:
            once = ""
        for con in (self.con, self._safe):
            con.execute(f"CREATE OR REPLACE VIEW {table.name} AS SELECT * EXCLUDE ({manifest.SEGMENT}) FROM "
                        f"{mem}{once}")
        return len(new)

    @staticmethod
    def _replace_rows(con: duckdb.DuckDBPyConnection, mem: str, gone: list[str], rows: pa.Table | None) -> None:
        """Remove the rows of the ``gone`` segments from ``mem`` and append ``rows`` (by column name)."""
        if gone:
            with _registered(con, "_negdb_gone", pa.table({"n": pa.array(gone, pa.string())})):
                con.execute(f"DELETE FROM {mem} WHERE {manifest.SEGMENT} IN (SELECT n FROM _negdb_gone)")
        if rows is not None:
            with _registered(con, "_negdb_new", rows):
                con.execute(f"INSERT INTO {mem} BY NAME SELECT * FROM _negdb_new")

    def _has(self, table: str) -> bool:
        return bool(self.con.execute("SELECT 1 FROM duckdb_tables() WHERE table_name = ?", [table]).fetchall())

    def location(self, rel: str) -> Path | str:
        """Where a stored object is: its path in a store folder, its URL in an object store (zarr opens both)."""
        return self._objects.uri(rel) if self._objects is not None else self.layout.root / rel

    def view_names(self) -> frozenset[str]:
        """The views user SQL may read."""
        return self._views

    # ------------------------------------------------------------------------------------ trusted SQL

    def sql(self, query: str, params: list[Any] | None = None) -> pl.DataFrame:
        """Run one of negdb's own queries and return a polars DataFrame (not for user SQL: see ``query``)."""
        return pl.from_arrow(self.arrow(query, params))  # type: ignore[return-value]

    def arrow(self, query: str, params: list[Any] | None = None) -> pa.Table:
        """Run one of negdb's own queries and return an Arrow table (not for user SQL: see ``query``)."""
        return self.con.sql(query, params=params or None).to_arrow_table()

    # ------------------------------------------------------------------------------------ user SQL

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        with self._safe_lock:
            return self._safe.cursor()

    def query(self, sql: str, params: list[Any] | dict[str, Any] | None = None, *, max_rows: int | None = None,
              timeout_s: float | None = None, cancel: threading.Event | None = None) -> QueryResult:
        """Run user SQL: one read-only SELECT on the hardened database, within the limits.

        The statement is checked first (:func:`negdb.store.safety.check_statement`); at most
        ``max_rows`` rows are fetched (streamed: a larger result is never materialised) and
        ``truncated`` says whether there were more; after ``timeout_s`` seconds the query is
        interrupted and :class:`QueryTimeout` (a ``NegdbError``) raised; setting ``cancel`` interrupts it
        at once (the service sets it when the client goes away). While it runs its memory is bounded
        (:mod:`negdb.store.bounds`). Safe to call from several threads at once. Nothing in the store
        changes, whatever the statement.
        """
        if max_rows is not None and max_rows < 0:
            raise BadArgument(f"max_rows must be 0 or more (got {max_rows})")
        if timeout_s is not None and not timeout_s > 0:
            raise BadArgument(f"the time limit must be more than 0 s (got {timeout_s})")
        statement = check_statement(sql, views=self._views)
        cur = self._cursor()
        late = (f"query took longer than {timeout_s:g} s and was stopped: add a WHERE/LIMIT or raise --timeout"
                if timeout_s is not None else "")
        try:
            with time_bound(timeout_s, cur.interrupt, late, cancel) as fired:
                try:
                    with memory_bound(self._memory_budget):
                        table, truncated = self._fetch(cur, statement, params, max_rows)
                except MemoryError as err:  # Python's own allocations (the result's batches) past the bound
                    raise QueryTooLarge(self._too_large()) from err
                except (duckdb.Error, pa.ArrowException, OSError) as err:
                    # errors raised while streaming arrive through Arrow (OSError / ArrowInvalid with DuckDB's text)
                    if fired.is_set():
                        raise QueryTimeout(late) from err
                    if isinstance(err, duckdb.InterruptException) or "INTERRUPT Error" in str(err):
                        if cancel is not None and cancel.is_set():
                            raise BadQuery("the query was cancelled: its client went away") from err
                        raise KeyboardInterrupt from err
                    if (isinstance(err, duckdb.OutOfMemoryException) or "Out of Memory Error" in str(err)
                            or "bad allocation" in str(err) or "std::bad_alloc" in str(err)):
                        raise QueryTooLarge(self._too_large()) from err
                    raise BadQuery(f"query failed: {one_line(err)} (`negdb schema` lists the views and "
                                   "columns)") from err
            if fired.is_set() and not truncated:
                # the limit passed while the last rows arrived: they may be incomplete
                raise QueryTimeout(late)
            return QueryResult(table, truncated)
        finally:
            cur.close()

    def _too_large(self) -> str:
        return (f"query needs more memory than its limit of {self._memory_limit}: add a WHERE/LIMIT, select fewer "
                "columns or aggregate, and build no huge strings or lists")

    @staticmethod
    def _fetch(cur: duckdb.DuckDBPyConnection, statement: str, params: list[Any] | dict[str, Any] | None,
               max_rows: int | None) -> tuple[pa.Table, bool]:
        """Run ``statement`` on ``cur`` and stream at most ``max_rows`` rows: (table, truncated)."""
        args = None if not params else params if isinstance(params, dict) else list(params)
        rel = cur.sql(statement, params=args)
        if rel is None:  # pragma: no cover - check_statement lets only SELECT through
            raise BadQuery("the statement returned no rows: run one SELECT statement")
        rel = _offsets_kept(rel)
        reader = rel.to_arrow_reader(FETCH_BATCH_ROWS if max_rows is None
                                     else max(1, min(FETCH_BATCH_ROWS, max_rows + 1)))
        schema = reader.schema
        batches: list[pa.RecordBatch] = []
        n = 0
        truncated = False
        for batch in reader:
            if max_rows is not None and n + batch.num_rows > max_rows:
                batches.append(batch.slice(0, max_rows - n))
                truncated = True
                break
            batches.append(batch)
            n += batch.num_rows
        if truncated:
            cur.interrupt()  # stop the rest of the query (an endless one would otherwise run on)
            with contextlib.suppress(duckdb.Error, pa.ArrowException, OSError):
                reader.close()
        else:
            reader.close()
        return pa.Table.from_batches(batches, schema=schema), truncated

    def expression_type(self, expr: str, *, view: str = "neurons") -> str:
        """DuckDB's type of ``expr`` over ``view`` (binds it on the hardened database; runs nothing).

        For :func:`negdb.store.safety.check_where`, which checks ``expr`` before calling this.
        """
        return expression_type(self._cursor(), expr, view)

    # ------------------------------------------------------------------------------------ schema

    def describe(self) -> list[tuple[str, str, str, str]]:
        """(view, column, DuckDB type, one-line meaning) of every view: ``neurons`` first, then the tables."""
        tables = {t.name: t for t in all_tables()}
        meanings = {name: {c: m for c, _, m in t.columns} for name, t in tables.items()}
        out: list[tuple[str, str, str, str]] = []
        for view in ("neurons", *tables):
            cur = self._cursor()
            try:
                rows = cur.execute(f"DESCRIBE {view}").fetchall()
            finally:
                cur.close()
            for row in rows:
                column = str(row[0])
                meaning = neurons_meaning(column) if view == "neurons" else meanings[view].get(column, "")
                out.append((view, column, str(row[1]), meaning))
        return out

    @staticmethod
    def view_docs() -> dict[str, str]:
        """One line per view: what one row is."""
        return view_docs()

    def close(self) -> None:
        self.con.close()
        self._safe.close()

    def __enter__(self) -> "Catalog":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
