"""User SQL: the statement check, the hardened connection and the limits of ``Catalog.query``.

Every entry of ``tests/hostile_sql.txt`` is refused or bounded within seconds, the store stays
byte-identical and no file appears outside it; legitimate queries give the same answers as negdb's own
(trusted) connection.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from negdb.errors import BadArgument, BadQuery, NegdbError
from negdb.store.safety import MAX_STATEMENT_CHARS, check_statement, check_where
from negdb.store.catalog import Catalog, QueryTimeout

HOSTILE = Path(__file__).with_name("hostile_sql.txt")
TIMEOUT_S = 1.0
MAX_ROWS = 100
BUDGET_S = 10.0  # wall-clock bound per hostile input (time limit + slack for a busy 2-core machine)
SLOW_BUDGET_S = 60.0  # for inputs flagged "slow": one row's value DuckDB computes without an interrupt check


# ------------------------------------------------------------------------------------------ the store

def sql_store(factory: pytest.TempPathFactory) -> Path:
    """A store made by the real ingest of a tiny GPT-NeoX (3 layers x 64 neurons), built once per session.

    Shared with tests/test_sql_cli.py through the session's temporary folder (a marker file says it is
    complete), so whichever module runs first builds it.
    """
    base = factory.getbasetemp() / "sql-store"
    store, done = base / "store", base / "done"
    if not done.exists():
        from tests.ingest_helpers import TINY, cli
        from tests.tiny_models import save_tiny

        base.mkdir(exist_ok=True)
        folder = save_tiny(base / "model" / "neox", "gpt_neox", seed=3)
        res = cli(store, "ingest", "--model", str(folder), *TINY)
        assert res.exit_code == 0, res.output
        done.write_text("ok")
    return store


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sql_store(tmp_path_factory)


@pytest.fixture(scope="module")
def cat(store: Path):
    with Catalog(store, query_memory_limit="256MiB") as c:
        yield c


@pytest.fixture(scope="module")
def outside(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A folder that must stay empty (COPY/EXPORT/ATTACH targets) and a Parquet file outside the store."""
    root = tmp_path_factory.mktemp("outside")
    target = root / "target"
    target.mkdir()
    secret = root / "outside" / "secret.parquet"
    secret.parent.mkdir()
    pq.write_table(pa.table({"secret": ["do not read"]}), secret)
    cwd = root / "cwd"
    cwd.mkdir()
    return {"tmp": target, "parquet": secret, "cwd": cwd}


def tree_hash(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under ``folder`` (relative path -> digest), empty folders included."""
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = str(p.relative_to(folder))
        out[rel] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
    return out


# ------------------------------------------------------------------------------------------ the corpus

@dataclass(frozen=True)
class Hostile:
    name: str
    expect: str  # refused | bounded
    body: str
    escaped: bool
    slow: bool = False

    def render(self, store: Path, tmp: Path, outside_parquet: Path) -> str:
        text = self.body
        if self.escaped:
            text = re.sub(r"\\u([0-9a-fA-F]{4})|\\x([0-9a-fA-F]{2})",
                          lambda m: chr(int(m.group(1) or m.group(2), 16)), text)
        text = re.sub(r"\{REPEAT (\d+)\}(.*?)\{/REPEAT\}", lambda m: m.group(2) * int(m.group(1)), text,
                      flags=re.S)
        segment = sorted((store / "tables" / "neuron_stats").rglob("*.parquet"))[0]
        tables = store.resolve() / "tables"
        traversal = str(tables) + "/.." * (len(tables.parts) - 1) + str(outside_parquet.resolve())
        return (text.replace("{TMP}", str(tmp)).replace("{TABLES}", str(tables))
                .replace("{TRAVERSAL}", traversal)
                .replace("{SEGMENT}", str(segment)).replace("{OUTSIDE_PARQUET}", str(outside_parquet)))


def load_hostile() -> list[Hostile]:
    cases: list[Hostile] = []
    head: list[str] | None = None
    lines: list[str] = []

    def flush() -> None:
        if head is not None:
            cases.append(Hostile(head[0], head[1], "\n".join(lines), "escaped" in head[2:], "slow" in head[2:]))

    for line in HOSTILE.read_text(encoding="utf-8").split("\n"):
        if line.startswith("### "):
            flush()
            head, lines = line[4:].split(), []
            assert head[1] in ("refused", "bounded"), line
        elif head is not None:
            lines.append(line)
    flush()
    # the file ends with a newline: the last body's trailing empty line is not part of it
    if cases and cases[-1].body.endswith("\n"):
        last = cases[-1]
        cases[-1] = Hostile(last.name, last.expect, last.body.rstrip("\n"), last.escaped, last.slow)
    return cases


CASES = load_hostile()


def test_corpus_is_large_and_named_uniquely() -> None:
    names = [c.name for c in CASES]
    assert len(CASES) >= 40 and len(set(names)) == len(names)
    assert {c.expect for c in CASES} == {"refused", "bounded"}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_input_is_refused_or_bounded(case: Hostile, cat: Catalog, store: Path,
                                             outside: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(outside["cwd"])  # DuckDB would spill to ./.tmp: it must not
    before = tree_hash(store)
    sql = case.render(store, outside["tmp"], outside["parquet"])
    start = time.monotonic()
    try:
        res = cat.query(sql, max_rows=MAX_ROWS, timeout_s=TIMEOUT_S)
        outcome = "truncated" if res.truncated else f"ran ({res.table.num_rows} rows)"
        assert res.table.num_rows <= MAX_ROWS
    except QueryTimeout as err:
        outcome, message = "timeout", str(err)
        assert f"longer than {TIMEOUT_S:g} s" in message
    except NegdbError as err:
        message = str(err)
        outcome = "memory" if "more memory than" in message else "refused"
        assert "\n" not in message and len(message) < 1000, message
    elapsed = time.monotonic() - start
    assert elapsed < (SLOW_BUDGET_S if case.slow else BUDGET_S), f"{case.name} took {elapsed:.1f} s"
    if case.expect == "refused":
        assert outcome == "refused", f"{case.name}: {outcome}"
    else:
        assert outcome in ("truncated", "timeout", "memory"), f"{case.name}: {outcome}"
    assert tree_hash(store) == before
    assert list(outside["tmp"].iterdir()) == []
    assert list(outside["cwd"].iterdir()) == []


def test_every_refused_statement_fails_the_check_alone(store: Path, outside: dict[str, Path]) -> None:
    """The refusals come from check_statement itself (the first wall), before DuckDB binds anything."""
    leaked = []
    for case in CASES:
        if case.expect != "refused":
            continue
        sql = case.render(store, outside["tmp"], outside["parquet"])
        try:
            check_statement(sql)
        except NegdbError:
            continue
        leaked.append(case.name)
    assert leaked == [], leaked


# ------------------------------------------------------------------------------------------ the second wall

def raw(cat: Catalog, sql: str) -> list[tuple]:
    """Run a statement on the hardened database *without* the statement check."""
    cur = cat._safe.cursor()
    try:
        return cur.execute(sql).fetchall()
    finally:
        cur.close()


def test_hardened_settings(cat: Catalog, store: Path) -> None:
    settings = dict(raw(cat, "SELECT name, value FROM duckdb_settings()"))
    assert settings["enable_external_access"] == "false"
    assert settings["lock_configuration"] == "true"
    assert settings["autoinstall_known_extensions"] == "false"
    assert settings["autoload_known_extensions"] == "false"
    assert settings["allow_community_extensions"] == "false"
    assert settings["python_enable_replacements"] == "false"
    assert settings["temp_directory"] == ""
    assert settings["allowed_directories"] == f"[{store.resolve() / 'tables'}/]"


@pytest.mark.parametrize("sql", [
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM read_text('/etc/hostname')",
    "SELECT * FROM glob('/*')",
    "SELECT * FROM read_parquet('{OUTSIDE_PARQUET}')",
    "SELECT * FROM '{OUTSIDE_PARQUET}'",
    "SELECT * FROM read_parquet('{TRAVERSAL}')",
    "COPY (SELECT 1) TO '{TMP}/x.csv'",
    "EXPORT DATABASE '{TMP}/dump'",
    "ATTACH '{TMP}/x.db' AS x",
    "INSTALL httpfs",
    "LOAD httpfs",
    "LOAD '{TMP}/x.duckdb_extension'",
    "SET threads = 1",
    "SET enable_external_access = true",
    "SET allowed_directories = ['/']",
    "SET temp_directory = '{TMP}'",
    "SET memory_limit = '100GB'",
    "RESET lock_configuration",
    "PRAGMA enable_profiling",
])
def test_hardened_connection_refuses_without_the_check(sql: str, cat: Catalog, store: Path,
                                                       outside: dict[str, Path]) -> None:
    """The second wall: DuckDB itself refuses these even when the statement check is bypassed."""
    sql = Hostile("raw", "refused", sql, False).render(store, outside["tmp"], outside["parquet"])
    before = tree_hash(store)
    with pytest.raises(duckdb.Error) as err:
        raw(cat, sql)
    assert any(why in str(err.value) for why in (
        "Permission Error", "the configuration has been locked", "does not exist")), str(err.value)
    assert tree_hash(store) == before
    assert list(outside["tmp"].iterdir()) == []


def test_no_python_replacement_scans(cat: Catalog) -> None:
    """A plain DuckDB connection reads a local Python variable as a table; the hardened one does not."""
    local_table = pa.table({"x": [1]})  # noqa: F841 - found by name from the calling frame
    plain = duckdb.connect(":memory:")
    assert plain.execute("SELECT x FROM local_table").fetchall() == [(1,)]
    plain.close()
    cur = cat._safe.cursor()
    with pytest.raises(duckdb.CatalogException):
        cur.execute("SELECT x FROM local_table").fetchall()
    cur.close()


def test_views_still_work_after_hostile_input(cat: Catalog) -> None:
    assert cat.query("SELECT count(*) AS n FROM neurons").table.to_pylist() == [{"n": 192}]
    cat.refresh()  # views are made again on the locked connection
    assert cat.query("SELECT count(*) AS n FROM neurons").table.to_pylist() == [{"n": 192}]


# ------------------------------------------------------------------------------------------ legitimate SQL

def test_neurons_query_matches_trusted_connection(cat: Catalog) -> None:
    sql = ("SELECT layer, count(*) AS n, avg(w_dist) AS w, max(md) AS md FROM neurons "
           "GROUP BY layer ORDER BY layer")
    res = cat.query(sql, max_rows=10, timeout_s=10)
    assert not res.truncated
    assert res.table.equals(cat.arrow(sql))
    assert res.table.column("n").to_pylist() == [64, 64, 64]


def test_cte_and_window_function(cat: Catalog) -> None:
    sql = """
    WITH ranked AS (
        SELECT layer, neuron, w_dist,
               row_number() OVER (PARTITION BY layer ORDER BY w_dist DESC, neuron) AS r
        FROM neurons)
    SELECT layer, neuron, w_dist FROM ranked WHERE r <= 2 ORDER BY layer, r;
    """
    got = pl.from_arrow(cat.query(sql, max_rows=100).table)
    stats = cat.sql("SELECT layer, neuron, w_dist FROM neuron_stats")
    want = (stats.sort(["layer", "w_dist", "neuron"], descending=[False, True, False])
            .group_by("layer", maintain_order=True).head(2))
    assert got.to_dicts() == want.to_dicts()


def test_join_of_catalog_tables(cat: Catalog) -> None:
    sql = """
    SELECT m.family, m.d_mlp, a.n_tokens, c.revision, count(*) AS n
    FROM neurons n
    JOIN models m USING (model_id)
    JOIN activations a ON a.model_id = n.model_id AND a.revision = n.revision AND a.layer = n.layer
    JOIN checkpoints c ON c.model_id = n.model_id AND c.revision = n.revision
    JOIN runs r ON r.run_id = n.run_id
    WHERE r.status = 'done'
    GROUP BY ALL
    """
    assert cat.query(sql).table.to_pylist() == [
        {"family": "gpt_neox", "d_mlp": 64, "n_tokens": 512, "revision": "final", "n": 192}]


def test_parameters_and_strings_that_look_hostile(cat: Catalog) -> None:
    assert cat.query("SELECT count(*) AS n FROM neurons WHERE layer = ? AND w_dist > ?", [1, -1.0]) \
        .table.to_pylist() == [{"n": 64}]
    assert cat.query("SELECT 'x; DROP VIEW neurons -- /*' AS s;").table.to_pylist() == \
        [{"s": "x; DROP VIEW neurons -- /*"}]
    assert cat.query("FROM neurons SELECT count(*) AS n -- a comment before the end\n").table.num_rows == 1
    assert cat.query("SELECT 'ünïcödé; (' AS s, '日本語' AS t;").table.to_pylist() == \
        [{"s": "ünïcödé; (", "t": "日本語"}]  # tokenizer offsets are bytes: non-ASCII text must not shift them
    assert cat.query("SELECT $n::INTEGER + 1 AS x", {"n": 41}).table.to_pylist() == [{"x": 42}]
    pivot = cat.query("PIVOT neurons ON layer IN (0, 1, 2) USING count(*) GROUP BY model_id").table
    assert pivot.select(["0", "1", "2"]).to_pylist() == [{"0": 64, "1": 64, "2": 64}]
    assert cat.query("SUMMARIZE SELECT w_dist FROM neurons").table.num_rows == 1
    assert cat.query("SELECT w_dist FROM neurons USING SAMPLE 10 ROWS").table.num_rows == 10


def test_row_limit_is_exact(cat: Catalog) -> None:
    full = cat.query("SELECT * FROM range(100)", max_rows=100)
    assert (full.table.num_rows, full.truncated) == (100, False)
    cut = cat.query("SELECT * FROM range(100)", max_rows=99)
    assert (cut.table.num_rows, cut.truncated) == (99, True)
    assert cut.table.column(0).to_pylist() == list(range(99))
    none = cat.query("SELECT * FROM neurons", max_rows=0)
    assert (none.table.num_rows, none.truncated) == (0, True)
    assert "w_dist" in none.table.column_names
    big = cat.query("SELECT * FROM range(50000)")  # no limit: every row, across several batches
    assert (big.table.num_rows, big.truncated) == (50000, False)


def test_user_errors_are_one_line(cat: Catalog) -> None:
    with pytest.raises(BadQuery, match="no_such_column") as err:
        cat.query("SELECT no_such_column FROM neurons")
    assert "\n" not in str(err.value) and "negdb schema" in str(err.value)
    with pytest.raises(BadArgument, match="more than 0 s"):
        cat.query("SELECT 1", timeout_s=0)
    with pytest.raises(BadQuery, match="characters long"):
        cat.query("SELECT 1" + " " * MAX_STATEMENT_CHARS)


def test_concurrent_queries_from_threads(cat: Catalog) -> None:
    """Each call has its own cursor: parallel queries and a timed-out one do not disturb each other."""
    def run(i: int) -> object:
        if i % 4 == 3:
            try:
                cat.query("WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r) SELECT count(*) "
                          "FROM r", timeout_s=0.5)
            except QueryTimeout:
                return "timeout"
            return "ran"
        return cat.query("SELECT count(*) AS n FROM neurons WHERE layer = ?", [i % 3]).table.to_pylist()

    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(run, range(16)))
    for i, r in enumerate(got):
        assert r == ("timeout" if i % 4 == 3 else [{"n": 64}])
    assert threading.active_count() < 50


def test_empty_store(tmp_path: Path) -> None:
    with Catalog(tmp_path / "nothing-yet", query_memory_limit="256MiB") as empty:
        res = empty.query("SELECT * FROM neurons")
        assert res.table.num_rows == 0 and "w_dist" in res.table.column_names
        assert empty.query("SELECT count(*) AS n FROM runs").table.to_pylist() == [{"n": 0}]
        assert {r[0] for r in empty.describe()} >= {"neurons", "neuron_stats", "models", "runs"}
    assert not (tmp_path / "nothing-yet").exists()


def test_refresh_sees_new_segments_after_the_lock(store: Path, tmp_path: Path) -> None:
    """Views over new segments are made on the already locked connection, inside allowed_directories."""
    import shutil

    root = tmp_path / "later"
    with Catalog(root, query_memory_limit="256MiB") as later:
        assert later.query("SELECT count(*) AS n FROM neurons").table.to_pylist() == [{"n": 0}]
        shutil.copytree(store / "tables", root / "tables")
        later.refresh()
        assert later.query("SELECT count(*) AS n FROM neurons").table.to_pylist() == [{"n": 192}]
        assert later.query("SELECT count(*) AS n FROM runs WHERE status = 'done'").table.to_pylist() == [{"n": 1}]


def test_describe_covers_every_view_and_column(cat: Catalog) -> None:
    rows = cat.describe()
    by_view: dict[str, list[tuple[str, str, str, str]]] = {}
    for r in rows:
        by_view.setdefault(r[0], []).append(r)
    assert list(by_view)[0] == "neurons"
    for view in cat.view_names():
        names = [c[1] for c in by_view[view]]
        assert names == cat.query(f"SELECT * FROM {view}", max_rows=0).table.column_names
        assert all(meaning for _, _, _, meaning in by_view[view]), view
    types = {c[1]: c[2] for c in by_view["neurons"]}
    assert types["layer"] == "INTEGER" and types["model_id"] == "VARCHAR" and types["step"] == "BIGINT"


# ------------------------------------------------------------------------------------------ check_where

@pytest.mark.parametrize("expr", [
    "w_dist > 0.9 AND layer < 3",
    "(layer < 3) AND (neuron < 4)",
    "NOT (layer = 0) OR frac_neg BETWEEN 0.1 AND 0.5",
    "layer IN (SELECT layer FROM neurons WHERE md > 1)",
    "dataset = 'wikitext-2:valid' AND model_id LIKE '%neox%'",
    "model_id <> 'ünïcödé (' OR layer = 1",
    "w_dist IS NOT NULL",
])
def test_check_where_accepts_boolean_expressions(expr: str, cat: Catalog) -> None:
    assert check_where(expr) == expr
    assert check_where(f"  {expr}\n", cat=cat) == expr


@pytest.mark.parametrize("expr", [
    "1=1) UNION SELECT * FROM neurons --",
    "1=1) UNION SELECT * FROM neurons WHERE (1=1",
    "true) OR (true",
    "layer < 3) OR (1=1",
    "1=1) ORDER BY (1",
    "1=1) LIMIT (1",
    "1=1) GROUP BY (layer",
    "1=1); DROP VIEW neurons; SELECT (1",
    "w_dist > 0.9; DROP VIEW neurons",
    "w_dist > 0.9 -- and a comment",
    "w_dist > 0.9 /* c */",
    "w_dist > 0.9) AND (layer < 3",
    "layer < 3 ORDER BY 1",
    "layer",
    "w_dist",
    "'x'",
    "NULL",
    "w_dist > ?",
    "no_such_column > 1",
    "read_text('/etc/hostname') IS NOT NULL",
    "layer IN (SELECT 1 FROM read_csv('/etc/passwd'))",
    "EXISTS (SELECT * FROM '/etc/passwd')",
    "getenv('HOME') = '/root'",
    "w_dist > 0.9\u200b",
    "",
    "   ",
])
def test_check_where_rejects(expr: str, cat: Catalog) -> None:
    for kwargs in ({}, {"cat": cat}):
        with pytest.raises(BadQuery) as err:
            check_where(expr, **kwargs)
        assert "\n" not in str(err.value)
        msg = str(err.value)
        assert any(hint in msg for hint in ("w_dist > 0.9 AND layer < 3", "not allowed", "negdb schema",
                                            "remove it")), msg


def test_where_result_matches_polars(cat: Catalog) -> None:
    expr = check_where("w_dist > 0.15 AND layer < 2", cat=cat)
    got = cat.query(f"SELECT layer, neuron FROM neurons WHERE ({expr}) ORDER BY layer, neuron").table
    stats = cat.sql("SELECT layer, neuron, w_dist FROM neuron_stats")
    want = stats.filter((pl.col("w_dist") > 0.15) & (pl.col("layer") < 2)).sort("layer", "neuron")
    assert got.to_pylist() == want.select("layer", "neuron").to_dicts()
    assert 0 < got.num_rows < 128
