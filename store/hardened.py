"""The hardened DuckDB that runs user SQL: the second wall, after the statement check of :mod:`negdb.store.safety`.

An in-memory DuckDB that can read files only under the store's ``tables/`` folder, installs and loads no
extension, spills nothing to disk, has a memory limit, and whose configuration is locked before any view is
made, so no statement can undo any of it (``tests/test_sql_safety.py`` checks each setting). Every
:class:`~negdb.store.catalog.Catalog` holds one for :meth:`~negdb.store.catalog.Catalog.query`;
:func:`schema_cursor` is a shared one with every view and no data, for type checks without a store.
"""

from __future__ import annotations

import threading
from functools import lru_cache
from pathlib import Path

import duckdb

from negdb.store.tables import NEURONS_VIEW, Table, all_tables

QUERY_MEMORY_FRACTION = 0.25
"""Memory limit of the user-SQL database as a share of physical memory (no spilling to disk)."""


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def default_memory_limit() -> str:
    """``QUERY_MEMORY_FRACTION`` of physical memory, at least 256 MiB, as a DuckDB size."""
    import psutil

    return f"{max(256, int(psutil.virtual_memory().total * QUERY_MEMORY_FRACTION / 2**20))}MiB"


@lru_cache(maxsize=None)
def _duckdb_columns(table: Table) -> tuple[tuple[str, str], ...]:
    """(column, DuckDB type) of a catalog table, as DuckDB reads its Arrow schema."""
    con = duckdb.connect(":memory:")
    try:
        con.register("_t", table.schema.empty_table())
        return tuple((str(r[0]), str(r[1])) for r in con.execute("DESCRIBE _t").fetchall())
    finally:
        con.close()


def empty_select(table: Table) -> str:
    """A SELECT with no rows and the table's columns and types (pure SQL: no registered objects)."""
    cols = ", ".join(f"CAST(NULL AS {typ}) AS {_ident(name)}" for name, typ in _duckdb_columns(table))
    return f"SELECT {cols} WHERE false"


def hardened_connection(tables_dir: Path | None, memory_limit: str | None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB that can read files only under ``tables_dir`` (none if None), locked.

    Settings (each checked by tests/test_sql_safety.py): no extension auto-install/auto-load, no
    community or unsigned extensions, no Python replacement scans (local variables as tables), no
    temporary files (``temp_directory = ''``), a memory limit; then ``allowed_directories`` and
    ``enable_external_access = false`` (DuckDB refuses every other path: read_csv, COPY, ATTACH,
    INSTALL, LOAD, EXPORT, glob, ...), then ``lock_configuration = true`` (SET/RESET/PRAGMA of any
    setting fails from then on).
    """
    con = duckdb.connect(":memory:", config={
        "autoinstall_known_extensions": False,
        "autoload_known_extensions": False,
        "allow_community_extensions": False,
        "allow_unsigned_extensions": False,
        "python_enable_replacements": False,
        "temp_directory": "",
        "memory_limit": memory_limit or default_memory_limit(),
    })
    con.execute("SET GLOBAL parquet_metadata_cache = true")  # Parquet footers parsed once, for every cursor
    if tables_dir is not None:
        # allowed_directories can only be set once the database runs; a trailing '/' keeps siblings out
        con.execute("SET allowed_directories = ?", [[str(tables_dir).rstrip("/") + "/"]])
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    return con


_SCHEMA_LOCK = threading.Lock()
_SCHEMA_CON: duckdb.DuckDBPyConnection | None = None


def schema_cursor() -> duckdb.DuckDBPyConnection:
    """A new cursor of a shared hardened DuckDB that has every catalog view, empty (it can read no file).

    For type checks without a store (:func:`negdb.store.safety.check_where`); close it after use.
    """
    global _SCHEMA_CON
    with _SCHEMA_LOCK:
        if _SCHEMA_CON is None:
            con = hardened_connection(None, "256MiB")
            for table in all_tables():
                con.execute(f"CREATE OR REPLACE VIEW {table.name} AS {empty_select(table)}")
            con.execute(NEURONS_VIEW)
            _SCHEMA_CON = con
        return _SCHEMA_CON.cursor()

