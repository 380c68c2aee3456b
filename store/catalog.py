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
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pyarrow as pa

from negdb.errors import BadArgument, BadQuery, QueryTimeout, QueryTooLarge, StoreError, one_line
from negdb.store.bounds import memory_bound, time_bound
from negdb.store.hardened import (QUERY_MEMORY_HEADROOM_MIB, default_memory_limit, empty_select,
                                  hardened_connection, quote_ident, size_bytes)
from negdb.store.integrity import KEYS, damaged_segment, dedupe_filter, duplicate_layers
from negdb.store.layout import StoreLayout
from negdb.store.safety import check_statement, expression_type
from negdb.store.segments import Listing, segment_listing
from negdb.store.tables import NEURONS_SOURCES, NEURONS_VIEW, Table, all_tables, view_docs

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


class Catalog:
    """Read access to a store's catalog through DuckDB (a consistent snapshot).

    ``sql``/``arrow`` run negdb's own queries on ``con`` (one thread at a time, like any DuckDB
    connection). ``query`` is for user SQL and may be called from several threads at once: each call
    gets its own cursor of the hardened database. ``refresh`` takes a new snapshot for both.
    """

    def __init__(self, root: Path | str, *, query_memory_limit: str | None = None) -> None:
        from negdb.store.objects import FsspecObjects, is_url

        self.url = str(root).rstrip("/") if is_url(root) else None
        self._objects = FsspecObjects(self.url) if self.url else None
        self.layout = StoreLayout(Path(root)) if self.url is None else StoreLayout.at(self.url)
        if self.url is None:
            self.layout.check()
        self.con = duckdb.connect(":memory:")
        self.con.execute("SET GLOBAL parquet_metadata_cache = true")
        fs = None
        if self._objects is not None:
            fs = self._objects.fs
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
        self.refresh()

    # ------------------------------------------------------------------------------------ snapshot

    def refresh(self) -> None:
        """Take a new snapshot: re-read the list of published segments.

        Only the views of tables whose listing (segment paths, sizes and modification times) changed since the
        last refresh are made again, so a refresh after one new segment costs about one table's view. A small
        table kept in memory whose listing only grew gets just the new segments appended (its rows then follow
        publication order; no view promises an order without ORDER BY).
        """
        with self._safe_lock:
            changed = set()
            for table in all_tables():
                listing = self._listing(table.name)
                old = self._listings.get(table.name)
                if listing == old:
                    continue
                self._listings.pop(table.name, None)  # a failure below leaves the table to be made anew
                try:
                    self._view(table, listing, old)
                except duckdb.Error as err:
                    raise (damaged_segment(Path(p) for p, _, _ in listing)
                           or StoreError(f"cannot read the {table.name} segments of {self.layout.location} "
                                         f"({one_line(err)}): run `negdb check`")) from err
                self._listings[table.name] = listing
                changed.add(table.name)
            if changed & set(NEURONS_SOURCES):
                self.con.execute(NEURONS_VIEW)
                self._safe.execute(NEURONS_VIEW)
            self._views = frozenset(self._listings) | {"neurons"}

    def _listing(self, table: str) -> Listing:
        """(path or URL, size, modification stamp) of each published segment of ``table``."""
        if self._objects is None:
            return segment_listing(self.layout.table_dir(table))
        return tuple((self._objects.uri(name), int(info.get("size") or 0), hash(str(info.get("ETag")
                      or info.get("LastModified") or info.get("mtime") or info.get("created"))))
                     for name, info in self._objects.listing(f"tables/{table}"))

    def _view(self, table: Table, listing: Listing, old: Listing | None) -> None:
        """Make ``table``'s view on both databases over the segments of ``listing`` (``old``: the last one)."""
        segments: list = [Path(p) if self._objects is None else p for p, _, _ in listing]
        if not segments:
            self.con.execute(f"DROP VIEW IF EXISTS {table.name}")
            self.con.register(f"_empty_{table.name}", table.schema.empty_table())
            self.con.execute(f"CREATE OR REPLACE VIEW {table.name} AS SELECT * FROM _empty_{table.name}")
            self._safe.execute(f"CREATE OR REPLACE VIEW {table.name} AS {empty_select(table)}")
            return
        folder = self.layout.table_dir(table.name)
        hive = _HIVE if all("/model_id=" in str(p) for p in segments) else ""
        kept = set(old or ())
        added = ([segments[i] for i, e in enumerate(listing) if e not in kept]
                 if old and table.name in SMALL_TABLES and kept <= set(listing) else [])
        def resolved(ps: list) -> list:
            # the hardened database reads the same files by their resolved paths (inside allowed_directories)
            if self._objects is not None:
                return ps
            return [self._tables_dir / p.relative_to(folder.parent) for p in ps]  # type: ignore[operator]

        # a layer held by two neuron_stats segments (an older negdb's resume could write one twice) is shown once
        repeated = duplicate_layers(self.con, list(listing)) if table.name == "neuron_stats" else {}
        for con, every, new in ((self.con, segments, added), (self._safe, resolved(segments), resolved(added))):
            def reader(paths: list[Path], extra: str = "") -> str:
                return f"read_parquet({_sql_list(paths)}, union_by_name = true{hive}{extra})"

            if table.name not in SMALL_TABLES:
                if repeated:
                    names = {str(a): str(b) for a, b in zip(segments, every)}
                    con.execute(f"CREATE OR REPLACE VIEW {table.name} AS SELECT * EXCLUDE (filename) FROM "
                                f"{reader(every, ', filename = true')} WHERE {dedupe_filter(repeated, names)}")
                else:
                    con.execute(f"CREATE OR REPLACE VIEW {table.name} AS SELECT * FROM {reader(every)}")
                continue
            # a few tiny segments per model: kept in memory, no file opens per query
            if new:
                try:
                    con.execute(f"INSERT INTO _mem_{table.name} BY NAME SELECT * FROM {reader(new)}")
                    continue
                except duckdb.Error:  # columns (or types) the table lacks: read every segment again
                    pass
            con.execute(f"CREATE OR REPLACE TABLE _mem_{table.name} AS SELECT * FROM {reader(every)}")
            keys = KEYS.get(table.name)
            if keys:  # one row per key (first by the other columns, so always the same one)
                cols = [str(r[0]) for r in con.execute(f"DESCRIBE _mem_{table.name}").fetchall()]
                order = ", ".join(quote_ident(c) for c in cols if c not in keys) or "1"
                once = f" QUALIFY row_number() OVER (PARTITION BY {', '.join(keys)} ORDER BY {order}) = 1"
            else:
                once = ""
            con.execute(f"CREATE OR REPLACE VIEW {table.name} AS SELECT * FROM _mem_{table.name}{once}")

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
            sources = NEURONS_SOURCES if view == "neurons" else (view,)
            for row in rows:
                column = str(row[0])
                meaning = next((meanings[s][column] for s in sources if column in meanings.get(s, {})), "")
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
