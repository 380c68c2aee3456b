"""The walls agree and hold for every path of user SQL (issue 13, items 1, 4, 5 and 10).

`negdb sql`, `negdb select --where`, `negdb ablate --where` and the service's `where=` share one check (its scoping
is the binder's), one meaning of a condition (a WHERE), one time limit and one memory bound; the CLI survives every
input of the memory class in one line.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

import negdb
from negdb.errors import BadQuery, NegdbError, QueryTimeout, QueryTooLarge
from negdb.query import sets
from negdb.store.catalog import Catalog
from negdb.store.safety import check_statement, check_where
from tests.ingest_helpers import assert_one_error, cli
from tests.test_sql_safety import sql_store, tree_hash

CROSS_JOIN = "(SELECT count(*) FROM range(100000) a, range(100000) b, range(100000) c) > 0"
MEMORY = [
    "SELECT length(repeat('x', 2000000000))",
    "SELECT len(range(500000000))",
    "SELECT len(flatten(list_transform(range(2000), lambda i: range(200000))))",
    "SELECT length(string_agg(repeat('x', 1000000), '')) FROM range(3000)",
    "WITH RECURSIVE t(s, n) AS (SELECT 'x', 0 UNION ALL SELECT s || s, n + 1 FROM t WHERE n < 40) "
    "SELECT max(length(s)) FROM t",
]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sql_store(tmp_path_factory)


@pytest.fixture(scope="module")
def cat(store: Path):
    with Catalog(store, query_memory_limit="512MiB") as c:
        yield c


@pytest.fixture(scope="module")
def model_id(cat: Catalog) -> str:
    return cat.sql("SELECT DISTINCT model_id FROM neurons")["model_id"][0]


# ------------------------------------------------------------------------------------------ one meaning


@pytest.mark.parametrize("expr", ["row_number() OVER () < 10", "count(*) > 1", "sum(w_dist) OVER () > 0"])
def test_window_and_aggregate_conditions_are_refused_everywhere(expr: str, cat: Catalog, model_id: str) -> None:
    """A WHERE refuses them, so the check refuses them for every caller (it used to pass `select` only)."""
    for c in (None, cat):
        with pytest.raises(NegdbError, match="does not work on neurons"):
            check_where(expr, cat=c)
    with pytest.raises(NegdbError, match="does not work on neurons"):
        sets.select(cat, model_id, where=expr)


def test_columns_expression_means_all_of_them(cat: Catalog, model_id: str) -> None:
    """`COLUMNS('w_dist.*') > 0.1` is one condition per matching column, ANDed (DuckDB's WHERE semantics);
    `select` used to fail with KeyError: _pick."""
    assert check_where("COLUMNS('w_dist.*') > 0.1", cat=cat) == "COLUMNS('w_dist.*') > 0.1"
    sel = sets.select(cat, model_id, where="COLUMNS('w_dist.*') > 0.1")
    cols = [c for c in cat.sql("SELECT * FROM neurons LIMIT 0").columns if c.startswith("w_dist")]
    assert len(cols) >= 3
    want = cat.sql(f"SELECT layer, neuron FROM neurons WHERE {' AND '.join(f'{c} > 0.1' for c in cols)} "
                   "ORDER BY layer, neuron")
    assert sel.n_members == want.height > 0
    assert sel.members.sort(["layer", "neuron"]).rows() == want.rows()


def test_cli_columns_where(store: Path, model_id: str) -> None:
    res = cli(store, "select", "--model", model_id, "--where", "COLUMNS('w_dist.*') > 0.1")
    assert res.exit_code == 0, res.output


# ------------------------------------------------------------------------------------------ time


def test_select_where_has_a_time_limit(cat: Catalog, model_id: str) -> None:
    start = time.monotonic()
    with pytest.raises(QueryTimeout):
        sets.select(cat, model_id, where=CROSS_JOIN, timeout_s=1.0)
    assert time.monotonic() - start < 10


def test_cli_select_where_has_a_time_limit(store: Path, model_id: str) -> None:
    start = time.monotonic()
    res = cli(store, "select", "--model", model_id, "--where", CROSS_JOIN, "--timeout", "1")
    assert_one_error(res)
    assert "longer than 1 s" in res.stderr
    assert time.monotonic() - start < 15


def test_ablate_where_has_the_default_time_limit(store: Path, model_id: str) -> None:
    """`ablate --where` selects through the same path: stopped at the default limit, before any model loads."""
    start = time.monotonic()
    res = cli(store, "ablate", "--model", model_id, "--where", CROSS_JOIN, "--controls", "none", "--evals", "blimp")
    assert_one_error(res)
    assert "longer than" in res.stderr
    assert time.monotonic() - start < 40


# ------------------------------------------------------------------------------------------ memory


def test_where_folding_is_bounded(cat: Catalog, model_id: str) -> None:
    """The type check binds the expression (DuckDB folds constants then): bounded, then the query itself is."""
    expr = "length(repeat('x', 2000000000)) > layer"
    start = time.monotonic()
    check_where(expr)  # the schema-only check (the service's) folds within its bound
    check_where(expr, cat=cat)
    with pytest.raises(QueryTooLarge):
        sets.select(cat, model_id, where=expr)
    assert time.monotonic() - start < 30


@pytest.mark.parametrize("sql", MEMORY)
def test_cli_survives_memory_blowups(store: Path, sql: str) -> None:
    """Each input, run by a real `negdb sql` process: one line, exit 2, the store unchanged (not OOM-killed)."""
    before = tree_hash(store)
    proc = subprocess.run([sys.executable, "-m", "negdb.cli", "--store", str(store), "sql", sql, "--timeout", "5"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "more memory than" in lines[0] or "longer than" in lines[0]
    assert tree_hash(store) == before


# ------------------------------------------------------------------------------------------ scoping


@pytest.mark.parametrize("sql", [
    "WITH pg_settings AS (SELECT 42 AS x), a AS (SELECT * FROM pg_settings) SELECT * FROM a",
    "WITH RECURSIVE r AS (SELECT 1 AS n UNION ALL SELECT n + 1 FROM r WHERE n < 3) SELECT * FROM r",
    "WITH a AS (SELECT 1 AS x) SELECT * FROM (SELECT * FROM a) s",
    "WITH a AS (SELECT 1 AS x) SELECT (SELECT count(*) FROM a), * FROM (WITH a AS (SELECT 2 AS x) SELECT * FROM a) s",
    "WITH a AS (SELECT 1 AS x), b AS (SELECT * FROM a) SELECT * FROM b UNION ALL SELECT * FROM a",
    "WITH n AS (SELECT * FROM neurons) SELECT count(*) FROM n",
])
def test_scoped_with_names_still_work(sql: str, cat: Catalog) -> None:
    assert check_statement(sql, views=cat.view_names())
    assert cat.query(sql, max_rows=10).table.num_rows >= 1


def test_system_views_are_shadowed_on_the_hardened_connection(cat: Catalog) -> None:
    """The second wall: even a statement that got past the check reads nothing from the system views."""
    cur = cat._safe.cursor()
    try:
        for name in ("pg_settings", "duckdb_views", "duckdb_tables", "sqlite_master", "duckdb_settings"):
            try:
                rows = cur.execute(f"SELECT * FROM {name}").fetchall()
            except Exception as err:  # noqa: BLE001 - a table function name: not a view to shadow
                assert "does not exist" in str(err) or "Table Function" in str(err), str(err)
                continue
            assert rows == [], name
    finally:
        cur.close()


def test_bad_query_kinds(cat: Catalog) -> None:
    with pytest.raises(BadQuery):
        cat.query("SELECT nope FROM neurons")
    with pytest.raises(BadQuery):
        cat.query("SELECT * FROM (WITH pg_settings AS (SELECT 1) SELECT 1) a, pg_settings")
    assert negdb.BadQuery is BadQuery


# ------------------------------------------------------------------------------------------ the service


@pytest.fixture(scope="module")
def server(store: Path):
    from tests.test_service_limits import start

    proc, client = start(store, "--timeout", "3")
    client.timeout = 120.0
    yield client
    client.close()
    proc.terminate()
    proc.wait(30)


HEALTH_S = 3.0
"""/health must answer within this after a blow-up. The issue's 1 s is what bench/bench_hostile.py measures (see
bench/RESULTS.md); on a loaded shared 2-core test machine an idle server's /health alone takes up to ~1 s, so the
test allows 3 s: starvation (the old failure: minutes) still fails it."""


def _health_within(server, seconds: float = HEALTH_S) -> None:
    start = time.monotonic()
    assert server.get("/health", timeout=seconds + 5).status_code == 200
    assert time.monotonic() - start < seconds


def test_service_where_agrees_with_select(server, cat: Catalog, model_id: str) -> None:
    refused = server.get("/neurons", params={"where": "row_number() OVER () < 10"})
    assert refused.status_code == 400 and "does not work on neurons" in refused.json()["error"]
    res = server.get("/neurons", params={"where": "COLUMNS('w_dist.*') > 0.1", "limit": 1000})
    assert res.status_code == 200, res.text
    assert res.json()["row_count"] == sets.select(cat, model_id, where="COLUMNS('w_dist.*') > 0.1").n_members


@pytest.mark.parametrize("where", ["length(repeat('x', 2000000000)) > layer",
                                   "len(flatten(list_transform(range(2000), lambda i: range(200000)))) > layer"])
def test_service_survives_where_blowups(server, where: str) -> None:
    res = server.get("/neurons", params={"where": where})
    assert res.status_code in (400, 408), res.text
    _health_within(server)


@pytest.mark.parametrize("sql", [m for m in MEMORY if "list_transform" not in m])  # that one: the where test
def test_service_survives_memory_blowups(server, sql: str) -> None:
    res = server.post("/sql", json={"sql": sql})
    assert res.status_code in (400, 408), res.text
    assert "more memory than" in res.json()["error"] or "longer than" in res.json()["error"]
    _health_within(server)
