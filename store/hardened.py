"""The hardened DuckDB that runs user SQL: the second wall, after the statement check of :mod:`negdb.store.safety`.

An in-memory DuckDB that can read files only under the store's ``tables/`` folder, installs and loads no
extension, spills nothing to disk, has a memory limit, and whose configuration is locked before any view is
made, so no statement can undo any of it (``tests/test_sql_safety.py`` checks each setting). Every
:class:`~negdb.store.catalog.Catalog` holds one for :meth:`~negdb.store.catalog.Catalog.query`;
:func:`schema_cursor` is a shared one with every view and no data, for type checks without a store.
"""

from __future__ import annotations

import os
import re
import threading
from functools import lru_cache
from pathlib import Path
from typing import Any

import duckdb

from negdb.errors import BadArgument
from negdb.store.tables import NEURONS_VIEW, Table, all_tables

QUERY_MEMORY_FRACTION = 0.25
"""Memory limit of the user-SQL database as a share of physical memory (no spilling to disk) ..."""
QUERY_MEMORY_MAX_MIB = 1024
"""... and at most this much (MiB): one query, however hostile, stays within it (plus the headroom below)."""
QUERY_MEMORY_HEADROOM_MIB = 256
"""Memory a user query may allocate outside DuckDB's buffer manager (strings, lists, results) beyond the limit;
see :mod:`negdb.store.bounds`."""


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def default_memory_limit() -> str:
    """``$NEGDB_QUERY_MEMORY`` if set, else ``QUERY_MEMORY_FRACTION`` of physical memory, between 256 MiB and
    ``QUERY_MEMORY_MAX_MIB``, as a DuckDB size."""
    import psutil

    if os.environ.get("NEGDB_QUERY_MEMORY"):
        size = os.environ["NEGDB_QUERY_MEMORY"].strip()
        size_bytes(size)  # refuse a malformed value here, in one line
        return size

    share = int(psutil.virtual_memory().total * QUERY_MEMORY_FRACTION / 2**20)
    return f"{max(256, min(QUERY_MEMORY_MAX_MIB, share))}MiB"


_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "KIB": 2**10, "MIB": 2**20,
          "GIB": 2**30, "TIB": 2**40}


def size_bytes(size: str) -> int:
    """A DuckDB size such as ``1GiB``, ``512MB`` or ``300 MiB`` in bytes."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", size)
    unit = match[2].upper() if match else None
    if match is None or unit not in _UNITS:
        raise BadArgument(f"bad memory size {size!r}: write e.g. 1GiB or 512MB")
    return int(float(match[1]) * _UNITS[unit])


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
    cols = ", ".join(f"CAST(NULL AS {typ}) AS {quote_ident(name)}" for name, typ in _duckdb_columns(table))
    return f"SELECT {cols} WHERE false"


def hardened_connection(tables_dir: Path | str | None, memory_limit: str | None,
                        filesystem: Any = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB that can read files only under ``tables_dir`` (none if None), locked.

    ``filesystem``: an fsspec filesystem registered on the connection (an object-store store: ``tables_dir`` is
    then its ``s3://bucket/prefix/tables`` URL, and ``allowed_directories`` fences it the same way).

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
    if filesystem is not None:
        con.register_filesystem(filesystem)
    if tables_dir is not None:
        # allowed_directories can only be set once the database runs; a trailing '/' keeps siblings out
        con.execute("SET allowed_directories = ?", [[str(tables_dir).rstrip("/") + "/"]])
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    _shadow_system_views(con)
    return con


def _shadow_system_views(con: duckdb.DuckDBPyConnection) -> None:
    """Put an empty view in front of every built-in view a statement could name without a schema (``pg_settings``,
    ``duckdb_views``, ``sqlite_master``, ...): names resolve to the main schema first, so even a statement that
    got past the check (it refuses them) would read nothing of the database's settings, paths or catalog."""
    names = {str(r[0]) for r in con.execute(
        "SELECT view_name FROM duckdb_views() WHERE internal AND schema_name IN ('main', 'pg_catalog')").fetchall()}
    for name in sorted(names):
        con.execute(f"CREATE OR REPLACE VIEW main.{quote_ident(name)} AS SELECT NULL AS shadowed WHERE false")


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

