"""The store as a DuckDB database: ``<store>/negdb.duckdb``, a views-only file for the ``duckdb`` shell and friends.

Every catalog table and the ``neurons`` view are views in the file. A view reads its table's segments **by glob**
(``read_parquet('tables/<table>/*.parquet', union_by_name = true)``), so a segment published later is seen by the
next query without touching the file. Paths are relative to the store: DuckDB resolves them against
``file_search_path``, so open the file with that set to the store (or from inside the store folder)::

    duckdb -readonly -cmd "SET file_search_path = 'negdb-store'" negdb-store/negdb.duckdb
    duckdb.connect("negdb-store/negdb.duckdb", read_only=True).execute("SET file_search_path = 'negdb-store'")

(:func:`connect` does the second). The file is written with ``storage_compatibility_version`` set to
:data:`STORAGE_VERSION`, so every DuckDB from 1.0 on opens it (the CLI on PyPI is older than the Python package).

**When the file changes.** DuckDB fails a glob that matches no file ("No files found"), and a view is bound
when it is made. So a table without segments is a typed empty view (its columns from :mod:`negdb.store.tables`),
and the views depend on which *shapes* of segment each table has: none, flat (``tables/<t>/*.parquet``) or
hive-partitioned (``tables/neuron_stats/model_id=*/revision=*/*.parquet``, read with hive partitioning so a
query on one checkpoint opens only its files). The file is rewritten only when that spec changes (a table gets
its first segment, a new shape, or a new negdb adds views or changes their SQL): the first segment of a table
triggers it from :func:`negdb.store.segments.write_segment` (through :func:`segment_published`).

**Writers never hold it open.** A new file is written under a temporary name in the store folder, closed,
flushed and renamed over the old one. A reader that has the old file open keeps reading it; the next open sees
the new one. Two writers that race both check the spec again after their rename and write once more if a table
changed meanwhile, so the last file renamed into place always has every table published before it.

**Small tables.** The catalog (:class:`negdb.store.catalog.Catalog`) copies the small tables into memory at
each refresh; the file cannot (it holds no data), so its views read those few small files on every query.
"""

from __future__ import annotations

import hashlib
import os
import threading
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path

import duckdb

from negdb.errors import StoreError
from negdb.store.files import fsync_dir, list_segments
from negdb.store.hardened import empty_select, schema_cursor
from negdb.store.tables import NEURONS_VIEW, Table, all_tables, neurons_meaning, view_docs

FILE_NAME = "negdb.duckdb"
"""The views file, at the root of the store."""

STORAGE_VERSION = "v1.0.0"
"""DuckDB storage written: readable by every DuckDB release from 1.0 on (the PyPI ``duckdb`` CLI included)."""

FORMAT = 1
"""Version of the file's view definitions (``negdb_info.format``); bump when their meaning changes."""

HIVE_OPTIONS = "hive_partitioning = true, hive_types = {'model_id': VARCHAR, 'revision': VARCHAR}"

_KNOWN: dict[Path, frozenset[tuple[str, str]]] = {}
"""Per store root: the (table, shape) pairs this process knows to be in the file (no check needed)."""
_KNOWN_LOCK = threading.Lock()


def file_path(root: Path | str) -> Path:
    """``<root>/negdb.duckdb``."""
    return Path(root) / FILE_NAME


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


# ------------------------------------------------------------------------------------------ the spec


def _shape(rel_parts: tuple[str, ...]) -> str | None:
    """``flat`` for ``<t>/<seg>.parquet``, ``hive`` for ``<t>/<k>=<v>/<k>=<v>/<seg>.parquet``, else None."""
    if len(rel_parts) == 2:
        return "flat"
    if len(rel_parts) == 4 and all("=" in p for p in rel_parts[1:3]):
        return "hive"
    return None


def table_shapes(root: Path) -> dict[str, tuple[str, ...]]:
    """Per catalog table, the shapes of its published segments (sorted; empty when it has none)."""
    tables = Path(root) / "tables"
    out: dict[str, tuple[str, ...]] = {}
    for table in all_tables():
        shapes: set[str] = set()
        for seg in list_segments(tables / table.name):
            shape = _shape(seg.relative_to(tables).parts)
            if shape is not None:
                shapes.add(shape)
            if len(shapes) == 2:
                break
        out[table.name] = tuple(sorted(shapes))
    return out


def _glob(table: Table, shape: str) -> str:
    if shape == "flat":
        return f"read_parquet('tables/{table.name}/*.parquet', union_by_name = true)"
    return f"read_parquet('tables/{table.name}/*/*/*.parquet', union_by_name = true, {HIVE_OPTIONS})"


def _view_sql(table: Table, shapes: tuple[str, ...]) -> str:
    if not shapes:
        body = empty_select(table)
    else:
        body = " UNION ALL BY NAME ".join(f"SELECT * FROM {_glob(table, s)}" for s in shapes)
    return f"CREATE VIEW {_ident(table.name)} AS {body}"


@dataclass(frozen=True)
class Spec:
    """The file's view statements for one set of table shapes, and their hash."""

    shapes: tuple[tuple[str, tuple[str, ...]], ...]
    statements: tuple[str, ...]
    digest: str

    @property
    def known(self) -> frozenset[tuple[str, str]]:
        """(table, shape) pairs the views read."""
        return frozenset((t, s) for t, shapes in self.shapes for s in shapes)


def spec_for(shapes: dict[str, tuple[str, ...]]) -> Spec:
    """The statements of the views file for ``shapes`` (:func:`table_shapes`)."""
    tables = all_tables()
    statements = [_view_sql(t, shapes.get(t.name, ())) for t in tables]
    statements.append(NEURONS_VIEW.strip().replace("CREATE OR REPLACE VIEW", "CREATE VIEW", 1))
    digest = hashlib.sha256(repr((FORMAT, statements, _documentation())).encode()).hexdigest()
    return Spec(tuple(sorted(shapes.items())), tuple(statements), digest)


def _documentation() -> list[str]:
    """Each view's meaning as its comment (``duckdb_views()``, shown by SQL clients), and a view ``negdb_columns``
    of every column's meaning (one statement: a comment per column would cost a catalog change each)."""
    out = [f"COMMENT ON VIEW {_ident(v)} IS {_literal(doc)}" for v, doc in view_docs().items()]
    described = [("neurons", c, neurons_meaning(c)) for c in neurons_columns()]
    described += [(t.name, c, m) for t in all_tables() for c, _, m in t.columns]
    rows = ", ".join(f"({_literal(v)}, {_literal(c)}, {_literal(m)})" for v, c, m in described)
    out.append(f"CREATE VIEW negdb_columns AS SELECT * FROM (VALUES {rows}) AS c(view_name, column_name, meaning)")
    out.append("COMMENT ON VIEW negdb_columns IS 'the meaning of every column of the neurons view and of every "
               "table view'")
    out.append("COMMENT ON VIEW negdb_info IS 'the negdb views file: format, hash of the view definitions, writer'")
    return out


def neurons_columns() -> list[str]:
    """The ``neurons`` view's columns, in order (bound on the empty schema database: no store needed)."""
    cur = schema_cursor()
    try:
        return [str(r[0]) for r in cur.execute("DESCRIBE neurons").fetchall()]
    finally:
        cur.close()


# ------------------------------------------------------------------------------------------ read / write


_DIGESTS: dict[tuple[int, int, int, int], str] = {}
"""(device, inode, size, mtime) of a views file -> its digest: a file is never changed in place, only replaced."""


def _stat_key(path: Path) -> tuple[int, int, int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def current_digest(root: Path | str) -> str | None:
    """The ``views_hash`` recorded in the store's file, or None when there is none or it cannot be read."""
    path = file_path(root)
    key = _stat_key(path)
    if key is None:
        return None
    with _KNOWN_LOCK:
        if key in _DIGESTS:
            return _DIGESTS[key]
    digest = _read_digest(path)
    if digest is not None:
        with _KNOWN_LOCK:
            _DIGESTS[key] = digest
    return digest


def _read_digest(path: Path) -> str | None:
    try:
        con = duckdb.connect(str(path), read_only=True)
    except duckdb.Error:  # another version's file, damaged, or locked by a writable session
        return None
    try:
        row = con.execute("SELECT views_hash FROM negdb_info").fetchone()
        return str(row[0]) if row else None
    except duckdb.Error:
        return None
    finally:
        con.close()


def partial_files(root: Path | str) -> list[Path]:
    """Temporary files of views-file rewrites at the store's root (``.negdb.duckdb.<id>.partial`` and its
    ``.wal``): a rewrite removes its own, so those found are left by one that was killed (``negdb check`` reports
    them, ``negdb repair`` removes them)."""
    root = Path(root)
    return sorted(p for p in root.glob(f".{FILE_NAME}.*.partial*")
                  if p.name.endswith((".partial", ".partial.wal")) and p.is_file())


def _write(root: Path, spec: Spec) -> None:
    """Write the views of ``spec`` to a temporary file, then rename it over ``negdb.duckdb``."""
    import negdb

    final = file_path(root)
    tmp = root / f".{FILE_NAME}.{uuid.uuid4().hex}.partial"
    try:
        con = duckdb.connect(str(tmp), config={"storage_compatibility_version": STORAGE_VERSION,
                                               "autoinstall_known_extensions": False,
                                               "autoload_known_extensions": False})
        try:
            # views are bound when made: their relative globs must resolve against the store
            con.execute("SET file_search_path = ?", [str(root.resolve())])
            con.execute("BEGIN TRANSACTION")  # one commit (one write to disk) for every view and comment
            for statement in spec.statements:
                con.execute(statement)
            con.execute(f"CREATE VIEW negdb_info AS SELECT {FORMAT} AS format, {_literal(spec.digest)} AS "
                        f"views_hash, {_literal(negdb.__version__)} AS negdb_version")
            for statement in _documentation():
                con.execute(statement)
            con.execute("COMMIT")
            con.execute("CHECKPOINT")
        finally:
            con.close()
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        key = _stat_key(tmp)
        os.replace(tmp, final)
        fsync_dir(root)
        if key is not None:
            with _KNOWN_LOCK:
                _DIGESTS[key] = spec.digest
    finally:
        tmp.unlink(missing_ok=True)
        tmp.with_name(tmp.name + ".wal").unlink(missing_ok=True)


def ensure(root: Path | str, *, force: bool = False) -> bool:
    """Make ``<root>/negdb.duckdb`` current: rewrite it if its views differ from the store's. True if written.

    Safe to call from several processes at once (see the module docstring); never holds the file open.
    """
    root = Path(root)
    if not (root / "negdb.json").is_file():
        raise StoreError(f"{root} is not a negdb store (no negdb.json)")
    spec = spec_for(table_shapes(root))
    if not force and current_digest(root) == spec.digest:
        _remember(root, spec)
        return False
    for _ in range(8):
        try:
            _write(root, spec)
        except duckdb.Error as err:
            raise StoreError(f"could not write {file_path(root)}: {err}".splitlines()[0]) from err
        after = spec_for(table_shapes(root))  # a table that got its first segment while we wrote
        if after.digest == spec.digest:
            break
        spec = after
    _remember(root, spec)
    return True


def _remember(root: Path, spec: Spec) -> None:
    with _KNOWN_LOCK:
        _KNOWN[root.resolve()] = spec.known


def segment_published(path: Path) -> None:
    """Called after a segment is published at ``path``: refresh the views file if its table or shape is new.

    Only segments under ``<store>/tables/`` count. A failure is a warning, never an error: the segment is
    stored, and ``negdb duckdb`` (or the next publication) writes the file.
    """
    parts = path.parts
    try:
        i = len(parts) - 1 - parts[::-1].index("tables")
    except ValueError:
        return
    root = Path(*parts[:i])
    shape = _shape(parts[i + 1:])
    if shape is None or not (root / "negdb.json").is_file():
        return
    key = (parts[i + 1], shape)
    with _KNOWN_LOCK:
        if key in _KNOWN.get(root.resolve(), frozenset()):
            return
    try:
        ensure(root)
    except (StoreError, OSError, duckdb.Error) as err:
        warnings.warn(f"negdb: {file_path(root)} not refreshed ({err}); `negdb duckdb` writes it", stacklevel=2)


def connect(root: Path | str, *, refresh: bool = True) -> duckdb.DuckDBPyConnection:
    """A read-only DuckDB connection to the store's views file with ``file_search_path`` set to the store.

    With ``refresh`` the file is made current first (written if missing or stale).
    """
    root = Path(root).expanduser()
    if refresh:
        ensure(root)
    path = file_path(root)
    if not path.is_file():
        raise StoreError(f"{path} does not exist: run `negdb --store {root} duckdb` to write it")
    con = duckdb.connect(str(path), read_only=True)
    con.execute("SET file_search_path = ?", [str(root.resolve())])
    return con


def shell_command(root: Path | str, binary: str = "duckdb") -> list[str]:
    """The ``duckdb`` shell command (argv) that opens the store read-only, from any working folder."""
    root = Path(root)
    return [binary, "-readonly", "-cmd", f"SET file_search_path = {_literal(str(root))}", str(file_path(root))]


def shell_line(root: Path | str) -> str:
    """:func:`shell_command` as one line to paste into a POSIX shell."""
    import shlex

    argv = shell_command(root)
    plain = all(c not in argv[3] for c in '"$`\\!')
    cmd = f'"{argv[3]}"' if plain else shlex.quote(argv[3])
    return f"{argv[0]} {argv[1]} {argv[2]} {cmd} {shlex.quote(argv[4])}"
