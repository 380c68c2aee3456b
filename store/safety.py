"""The first wall in front of user SQL: exactly one read-only SELECT over the catalog views.

Everything here uses DuckDB's own parser (``duckdb.extract_statements`` for statement types,
``duckdb.tokenize`` for tokens, ``json_serialize_sql`` for the syntax tree), never regular
expressions over SQL text. The second wall is the hardened connection that runs the statement
(:mod:`negdb.store.hardened`, used by ``Catalog.query``: no file access outside the store's tables, no
extensions, settings locked),
and the third is its time and row limits.

- :func:`check_statement` accepts one SELECT (or WITH ... SELECT, VALUES, FROM-first, DESCRIBE or
  SUMMARIZE of a query) that reads only the catalog views, its own WITH names and a few generator
  table functions (``range``, ``generate_series``, ``unnest``, ...), and calls no function that reads
  files, settings, variables, the environment or the network, or runs SQL from a string.
- :func:`check_where` accepts one boolean expression over a view's columns, to be embedded as
  ``... WHERE (expr)`` (``negdb select --where``, the service's ``where=``).

Both return the text to run and raise :class:`~negdb.errors.BadQuery` (one line: what is allowed,
what to do) for anything else. Neither runs the statement.
"""

from __future__ import annotations

import json
import threading
import unicodedata
from collections.abc import Collection, Iterator
from typing import TYPE_CHECKING, Any

import duckdb

from negdb.errors import BadQuery, one_line

if TYPE_CHECKING:  # pragma: no cover
    from negdb.store.catalog import Catalog

MAX_STATEMENT_CHARS = 100_000
"""Longest statement accepted (characters)."""

MAX_NESTING = 200
"""Deepest nesting of parentheses / brackets / braces accepted (DuckDB itself stops at 1000)."""

CHECK_TIMEOUT_S = 5.0
CHECK_MEMORY_BYTES = 256 * 2**20
"""Time and memory the type check of a --where expression may take (binding folds constant subexpressions)."""

ALLOWED = "one read-only SELECT (or WITH ... SELECT) statement over the catalog views"

TABLE_FUNCTIONS = frozenset({"range", "generate_series", "unnest", "repeat", "repeat_row", "json_each",
                             "json_tree"})
"""Table functions a statement may call: generators over their arguments, none reads anything."""

DENIED_FUNCTIONS = frozenset({
    # files and directories
    "glob", "sniff_csv", "read_csv", "read_csv_auto", "read_json", "read_json_auto", "read_ndjson", "read_text",
    "read_blob", "read_parquet", "parquet_scan", "parquet_metadata", "parquet_schema", "read_duckdb",
    "parquet_file_metadata", "parquet_kv_metadata", "parquet_bloom_probe", "parquet_full_metadata",
    "add_parquet_key", "copy_database", "import_database", "export_database",
    # SQL from a string: would bypass this check
    "query", "query_table", "json_execute_serialized_sql", "json_serialize_plan", "histogram_values",
    # environment, settings, variables, secrets, extensions, logs, profiling
    "getenv", "current_setting", "getvariable", "which_secret", "load_extension", "install_extension",
    "enable_logging", "disable_logging", "truncate_duckdb_logs", "enable_profiling", "disable_profiling",
    "enable_profile", "disable_profile", "checkpoint", "force_checkpoint", "create_external_resource",
    "register_external_resource", "register_external_resource_type", "deregister_external_resource",
    "destroy_external_resource", "test_all_types", "test_vector_types", "sql_auto_complete",
    # network and foreign databases (extensions: cannot load, refused by name all the same)
    "http_get", "http_post", "http_head", "st_read", "read_xlsx", "iceberg_scan", "iceberg_metadata",
    "iceberg_snapshots", "delta_scan", "postgres_query", "postgres_execute", "mysql_query", "mysql_execute",
    "sqlite_attach", "ducklake_snapshots",
})
"""Functions (scalar or table) a statement may not call."""

DENIED_PREFIXES = ("read_", "parquet_", "iceberg_", "delta_", "postgres_", "mysql_", "sqlite_", "duckdb_",
                   "pragma_", "http_", "ducklake_", "json_execute", "st_read", "arrow_scan", "pandas_scan",
                   "python_", "sql_")
DENIED_SUFFIXES = ("_scan", "_attach", "_execute", "_query")

_SCHEMAS = frozenset({"", "main"})
_CATALOGS = frozenset({"", "memory"})
_WHERE_ALIAS = "__negdb_where__"
_OPEN, _CLOSE = "([{", ")]}"


def _refuse(what: str) -> BadQuery:
    return BadQuery(what)


def default_views() -> frozenset[str]:
    """The catalog's view names: every table of ``negdb.store.tables`` and ``neurons``."""
    from negdb.store.tables import all_tables

    return frozenset({t.name for t in all_tables()} | {"neurons"})


# ------------------------------------------------------------------------------------------ text checks

def _check_characters(sql: str, what: str) -> None:
    """Refuse invisible, control and compatibility (full-width) characters: they hide what the text says."""
    for i, ch in enumerate(sql):
        if ch in "\t\n\r":
            continue
        cat = unicodedata.category(ch)
        if cat in ("Cc", "Cf", "Co", "Cs", "Cn", "Zl", "Zp"):
            raise _refuse(f"{what} contains the invisible or control character U+{ord(ch):04X} at position {i}: "
                          "remove it (write it with chr() inside a string if you need it)")
        if ord(ch) > 127:
            folded = unicodedata.normalize("NFKC", ch)
            if folded != ch and folded.isascii() and not folded.isalnum():
                raise _refuse(f"{what} contains the full-width or compatibility character {ch!r} "
                              f"(U+{ord(ch):04X}) at position {i}: type the ASCII {folded!r} instead")


def _tokens(sql: str, what: str, todo: str) -> list[tuple[str, str]]:
    """(text, type) of each token, from DuckDB's tokenizer."""
    try:
        raw = duckdb.tokenize(sql)
    except Exception as err:  # noqa: BLE001 - the tokenizer reports malformed text
        raise _refuse(f"{what} is not valid SQL ({one_line(err)}): {todo}") from err
    data = sql.encode("utf-8")  # the tokenizer's positions are byte offsets into the UTF-8 text
    out = []
    for k, (pos, typ) in enumerate(raw):
        end = raw[k + 1][0] if k + 1 < len(raw) else len(data)
        out.append((data[pos:end].decode("utf-8", errors="replace").strip(), str(typ).rsplit(".", 1)[-1]))
    return out


def _brackets(tokens: list[tuple[str, str]]) -> tuple[int, bool]:
    """(deepest nesting, balanced) of the brackets outside strings and comments."""
    depth = deepest = 0
    balanced = True
    for text, typ in tokens:
        if typ != "operator":
            continue
        for ch in text:
            if ch in _OPEN:
                depth += 1
                deepest = max(deepest, depth)
            elif ch in _CLOSE:
                depth -= 1
                balanced = balanced and depth >= 0
    return deepest, balanced and depth == 0


def _check_length(sql: str, what: str) -> None:
    if len(sql) > MAX_STATEMENT_CHARS:
        raise _refuse(f"{what} is {len(sql):,} characters long, more than the limit of {MAX_STATEMENT_CHARS:,}: "
                      "shorten it (e.g. join against a smaller table instead of a long IN list)")


# ------------------------------------------------------------------------------------------ syntax tree

_local = threading.local()


def _parser() -> duckdb.DuckDBPyConnection:
    """A per-thread private DuckDB used only to parse (``json_serialize_sql``); it reads nothing."""
    con = getattr(_local, "con", None)
    if con is None:
        con = duckdb.connect(":memory:", config={"autoinstall_known_extensions": False,
                                                 "autoload_known_extensions": False})
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
        _local.con = con
    return con


def _syntax_tree(sql: str, what: str, todo: str) -> list[dict[str, Any]]:
    """The statements of ``sql`` as DuckDB's JSON syntax tree (parsing only, nothing is bound or run)."""
    try:
        text = _parser().execute("SELECT json_serialize_sql(?::VARCHAR)", [sql]).fetchone()[0]
    except duckdb.Error as err:
        raise _refuse(f"{what} could not be parsed ({one_line(err)}): {todo}") from err
    try:
        tree = json.loads(text)
    except RecursionError as err:
        raise _refuse(f"{what} is nested too deeply to check: simplify it") from err
    if tree.get("error"):
        raise _refuse(f"{what} could not be parsed ({tree.get('error_message', 'unknown error')}): {todo}")
    return tree["statements"]


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    """Every dict in the tree (iteratively: deep trees do not hit Python's recursion limit)."""
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            yield item
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _scoped(node: Any) -> Iterator[tuple[dict[str, Any], frozenset[str]]]:
    """Every dict in the tree with the WITH names visible at it, scoped as DuckDB's binder scopes them.

    A query node's WITH names are visible in that node only (its select list, FROM, WHERE, ... and the subqueries
    inside them), not in the query around it; a WITH entry's body sees the entries before it (no forward
    references) and the names of the queries around it; a recursive CTE sees itself in its recursive part only.
    So ``SELECT * FROM (WITH pg_settings AS (SELECT 1) SELECT 1) a, pg_settings`` reads the outer
    ``pg_settings`` as the binder does: not a WITH name.
    """
    stack: list[tuple[Any, frozenset[str]]] = [(node, frozenset())]
    while stack:
        item, scope = stack.pop()
        if isinstance(item, list):
            stack.extend((x, scope) for x in item)
            continue
        if not isinstance(item, dict):
            continue
        yield item, scope
        inner = scope
        cte_map = item.get("cte_map")
        entries = cte_map.get("map") if isinstance(cte_map, dict) else None
        if isinstance(entries, list) and entries:
            visible = set(scope)
            for entry in entries:
                if not isinstance(entry, dict):
                    continue
                stack.append((entry.get("value"), frozenset(visible)))
                if isinstance(entry.get("key"), str):
                    visible.add(entry["key"].lower())
            inner = frozenset(visible)
        recursive = item.get("type") == "RECURSIVE_CTE_NODE" and isinstance(item.get("cte_name"), str)
        for key, value in item.items():
            if key == "cte_map":
                continue
            if recursive and key == "right":
                stack.append((value, inner | {item["cte_name"].lower()}))
            else:
                stack.append((value, inner))


def _function_denied(name: str) -> bool:
    name = name.lower()
    return (name in DENIED_FUNCTIONS or name.startswith(DENIED_PREFIXES) or name.endswith(DENIED_SUFFIXES))


def _check_tree(tree: Any, views: Collection[str], what: str) -> None:
    """Refuse references to anything but the views / WITH names, and functions that reach outside."""
    allowed_views = {v.lower() for v in views}
    shown = ", ".join(sorted(views))
    for d, scope in _scoped(tree):
        typ = d.get("type")
        if typ == "BASE_TABLE":
            name = str(d.get("table_name", ""))
            schema, catalog = str(d.get("schema_name", "")).lower(), str(d.get("catalog_name", "")).lower()
            if (schema not in _SCHEMAS or catalog not in _CATALOGS
                    or (name.lower() not in allowed_views and name.lower() not in scope)):
                full = ".".join(p for p in (catalog, schema, name) if p)
                raise _refuse(f"{what} reads {full!r}, which is not a catalog view: query the views "
                              f"({shown}) or WITH names defined before it; `negdb schema` lists them")
        elif typ == "TABLE_FUNCTION":
            fn = d.get("function") or {}
            name = str(fn.get("function_name", "")).lower() if isinstance(fn, dict) else ""
            if name not in TABLE_FUNCTIONS:
                raise _refuse(f"{what} calls the table function {name}(), which is not allowed: query the "
                              f"catalog views ({shown}); allowed table functions: "
                              f"{', '.join(sorted(TABLE_FUNCTIONS))}")
        elif typ == "SHOW_REF" and d.get("query") is None:
            raise _refuse(f"{what} is a SHOW statement: use `negdb schema` to list the views and columns, "
                          "or DESCRIBE/SUMMARIZE a SELECT")
        name = d.get("function_name")  # scalar, aggregate, window and table-function calls alike
        if isinstance(name, str):
            if _function_denied(name):
                raise _refuse(f"{what} calls {name}(), which is not allowed (it reads files, settings, the "
                              "environment or the network, or runs SQL from a string): read the catalog views "
                              "instead (`negdb schema` lists them)")


# ------------------------------------------------------------------------------------------ public checks

def check_statement(sql: str, *, views: Collection[str] | None = None) -> str:
    """``sql`` if it is exactly one read-only SELECT (or WITH ... SELECT) statement, else ``BadQuery``.

    ``views`` are the table names it may read (default: the catalog views); its own WITH names are
    always allowed. Returns the statement without surrounding whitespace and its closing ``;``.
    """
    return _check_statement(sql, default_views() if views is None else views, "the query", f"run {ALLOWED}")


def _check_statement(sql: str, views: Collection[str], what: str, todo: str) -> str:
    if not isinstance(sql, str):
        raise _refuse(f"{what} must be text: {todo}")
    _check_length(sql, what)
    text = sql.strip()
    if not text:
        raise _refuse(f"{what} is empty: {todo}, e.g. SELECT * FROM neurons LIMIT 10")
    _check_characters(text, what)
    tokens = _tokens(text, what, todo)
    deepest = _brackets(tokens)[0]
    if deepest > MAX_NESTING:
        raise _refuse(f"{what} nests brackets {deepest} levels deep, more than {MAX_NESTING}: simplify it")
    semis = [i for i, (tok, typ) in enumerate(tokens) if typ == "operator" and ";" in tok]
    try:
        statements = duckdb.extract_statements(text)
    except duckdb.Error as err:
        raise _refuse(f"{what} has a syntax error ({one_line(err)}): {todo}") from err
    if not statements:
        raise _refuse(f"{what} holds no statement: {todo}, e.g. SELECT * FROM neurons LIMIT 10")
    if len(statements) > 1:
        raise _refuse(f"{what} holds {len(statements)} statements: {todo}, one at a time")
    if semis and (len(semis) > 1 or semis[0] != len(tokens) - 1 or tokens[semis[0]][0] != ";"):
        raise _refuse(f"text after the closing ';' is not allowed (comments included): {todo}, "
                      "with nothing after it")
    kind = statements[0].type
    if kind == duckdb.StatementType.MULTI:  # a PIVOT without IN (...) first creates an ENUM type
        raise _refuse(f"{what} needs several statements (a PIVOT without a list of values): name the values, "
                      "e.g. PIVOT neurons ON layer IN (0, 1, 2) USING count(*)")
    if kind != duckdb.StatementType.SELECT:
        # name it as written (INSTALL, PRAGMA, USE, ...); DuckDB's type groups several of them
        first = next((tok.upper() for tok, typ in tokens if typ != "comment"), "")
        name = (first if first.isalpha() and first not in ("WITH", "FROM", "FORCE")
                else str(kind).rsplit(".", 1)[-1].replace("_", " "))
        raise _refuse(f"{name} statements are not allowed: {todo}; negdb changes nothing")
    trees = _syntax_tree(text, what, todo)
    if len(trees) != 1:
        raise _refuse(f"{what} holds {len(trees)} statements: {todo}, one at a time")
    _check_tree(trees[0], views, what)
    if semis:
        text = text[: text.rstrip().rfind(";")].rstrip()
    return text


def _plain_select(node: dict[str, Any], view: str) -> bool:
    """A bare ``SELECT ... FROM view [WHERE ...]``: no WITH, set operation, grouping, ordering or limit."""
    ft = node.get("from_table") or {}
    return (node.get("type") == "SELECT_NODE" and not node.get("modifiers")
            and not (node.get("cte_map") or {}).get("map") and not node.get("group_expressions")
            and not node.get("group_sets") and node.get("having") is None and node.get("qualify") is None
            and node.get("sample") is None and ft.get("type") == "BASE_TABLE"
            and str(ft.get("table_name", "")).lower() == view.lower() and not ft.get("schema_name")
            and not ft.get("catalog_name") and ft.get("sample") is None)


def check_where(expr: str, *, view: str = "neurons", cat: "Catalog | None" = None) -> str:
    """``expr`` (stripped) if it is one boolean expression over ``view``'s columns, else ``BadQuery``.

    The caller embeds it as ``SELECT ... FROM view WHERE (expr)`` (possibly ``AND``-ed with its own
    conditions): its brackets must balance on their own, it holds no statement, comment, ``;`` or
    parameter, reads nothing but the catalog views, and DuckDB types it as BOOLEAN. The type is
    checked against ``cat``'s views when given, else against the catalog schema (an empty store).
    """
    what = "the --where expression"
    todo = (f"write one boolean expression over the columns of {view} (`negdb schema` lists them), "
            "e.g. w_dist > 0.9 AND layer < 3")
    if not isinstance(expr, str) or not expr.strip():
        raise _refuse(f"{what} is empty: {todo}")
    _check_length(expr, what)
    text = expr.strip()
    _check_characters(text, what)
    tokens = _tokens(text, what, todo)
    for tok, typ in tokens:
        if typ == "comment":
            raise _refuse(f"{what} contains a comment ({tok[:20]!r}): remove it; {todo}")
        if typ == "operator" and ";" in tok:
            raise _refuse(f"{what} contains ';': {todo}")
    if not _brackets(tokens)[1]:
        raise _refuse(f"{what} has unbalanced brackets (it would break out of WHERE (...)): {todo}")
    views = default_views() if cat is None else cat.view_names()
    if view not in views:
        raise _refuse(f"unknown view {view!r}: use one of {', '.join(sorted(views))}")
    as_where = _check_statement(f"SELECT * FROM {view} WHERE ({text})", views, what, todo)
    as_column = _check_statement(f"SELECT ({text}) AS {_WHERE_ALIAS} FROM {view}", views, what, todo)
    tree_where = _syntax_tree(as_where, what, todo)[0]["node"]
    tree_column = _syntax_tree(as_column, what, todo)[0]["node"]
    select_list = tree_column.get("select_list") or []
    if not (_plain_select(tree_where, view) and tree_where.get("where_clause") is not None
            and len(tree_where.get("select_list") or []) == 1
            and _plain_select(tree_column, view) and tree_column.get("where_clause") is None
            and len(select_list) == 1 and select_list[0].get("alias") == _WHERE_ALIAS):
        raise _refuse(f"{what} is not a single expression (it changes the query around it): {todo}")
    if any(d.get("class") == "PARAMETER" for d in _walk(tree_column)):
        raise _refuse(f"{what} contains a parameter (? or $name): write the value itself; {todo}")
    if cat is not None:
        typ = cat.expression_type(text, view=view)
    else:
        from negdb.store.hardened import schema_cursor

        typ = expression_type(schema_cursor(), text, view)
    if typ != "BOOLEAN":
        raise _refuse(f"{what} is of type {typ}, not a condition: {todo}")
    return text


def expression_type(cur: duckdb.DuckDBPyConnection, expr: str, view: str) -> str:
    """DuckDB's type of ``expr`` used as a WHERE condition over ``view`` (binding only: DESCRIBE runs nothing);
    closes ``cur``.

    The expression is bound both as a column and as the WHERE clause, so what a WHERE refuses (window functions,
    aggregates) is refused here too, for every caller alike (``negdb select --where``, the service's ``where=``).
    ``COLUMNS(...)`` expands to several conditions (DuckDB ANDs them in a WHERE): each must be BOOLEAN.
    """
    from negdb.store.bounds import memory_bound, time_bound

    late = (f"the --where expression took longer than {CHECK_TIMEOUT_S:g} s to check (DuckDB computes its "
            "constant parts): simplify it")
    try:  # binding folds constant subexpressions: it may compute, so it is bounded like a query
        with time_bound(CHECK_TIMEOUT_S, cur.interrupt, late) as fired, memory_bound(CHECK_MEMORY_BYTES):
            rows = cur.execute(f"DESCRIBE SELECT ({expr}) AS {_WHERE_ALIAS} FROM {view} WHERE ({expr})").fetchall()
    except (duckdb.Error, MemoryError) as err:
        if fired.is_set():
            raise _refuse(late) from err
        raise _refuse(f"the --where expression does not work on {view} ({one_line(err)}): write one boolean "
                      f"expression over its columns (see `negdb schema`), e.g. w_dist > 0.9 AND layer < 3") from err
    finally:
        cur.close()
    types = [str(r[1]) for r in rows]
    return next((t for t in types if t != "BOOLEAN"), "BOOLEAN") if types else "unknown"
