"""``negdb sql`` and ``negdb schema``: formats round-trip, limits are reported, errors are one line."""

from __future__ import annotations

import io
import json
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import negdb
from negdb.cli.main import main
from negdb.errors import BadArgument, BadQuery, NotFound, QueryTimeout
from tests.ingest_helpers import assert_one_error
from tests.test_sql_safety import sql_store, tree_hash

QUERY = ("SELECT layer, neuron, w_dist, model_id, step FROM neurons WHERE layer < 2 "
         "ORDER BY layer, neuron")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sql_store(tmp_path_factory)


@pytest.fixture(scope="module")
def expected(store: Path) -> pl.DataFrame:
    with negdb.connect(str(store)) as cat:
        return cat.sql(QUERY)


def run(store: Path, *args: str, stdin: str | None = None):
    return CliRunner().invoke(main, ["--store", str(store), *args], input=stdin, catch_exceptions=False)


def test_csv_round_trip(store: Path, expected: pl.DataFrame) -> None:
    res = run(store, "sql", QUERY, "--format", "csv")
    assert res.exit_code == 0, res.output
    got = pl.read_csv(io.StringIO(res.stdout), schema=expected.schema)
    assert got.equals(expected)
    assert res.stderr == ""


def test_json_round_trip(store: Path, expected: pl.DataFrame) -> None:
    res = run(store, "sql", QUERY, "--format", "json")
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)
    assert rows == expected.to_dicts()


def test_parquet_and_out_files(store: Path, expected: pl.DataFrame, tmp_path: Path) -> None:
    before = tree_hash(store)
    out = tmp_path / "result.parquet"
    res = run(store, "sql", QUERY, "--format", "parquet", "--out", str(out))
    assert res.exit_code == 0, res.output
    assert pl.from_arrow(pq.read_table(out)).equals(expected)
    for fmt in ("csv", "json", "table"):
        path = tmp_path / f"result.{fmt}"
        res = run(store, "sql", QUERY, "--format", fmt, "--out", str(path))
        assert res.exit_code == 0 and res.stdout == "", res.output
        assert path.read_text() == run(store, "sql", QUERY, "--format", fmt).stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.csv", "result.json", "result.parquet",
                                                         "result.table"]
    assert tree_hash(store) == before


def test_table_format_is_aligned_text(store: Path) -> None:
    res = run(store, "sql", "SELECT layer, count(*) AS n FROM neurons GROUP BY layer ORDER BY layer")
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert "layer" in lines[1] and "n" in lines[1]
    assert len({len(line) for line in lines}) == 1  # every line of the box has the same width
    assert [line.split()[1] for line in lines if line.split()[1:2] and line.split()[1].isdigit()] == ["0", "1", "2"]


def test_truncation_note_on_stderr(store: Path) -> None:
    res = run(store, "sql", "SELECT neuron FROM neurons ORDER BY layer, neuron", "--max-rows", "5",
              "--format", "csv")
    assert res.exit_code == 0
    assert res.stdout.splitlines() == ["neuron", "0", "1", "2", "3", "4"]
    assert "more than 5 rows" in res.stderr and "--max-rows" in res.stderr


def test_query_from_stdin(store: Path) -> None:
    res = run(store, "sql", "-", "--format", "csv", stdin="SELECT count(*) AS n FROM neurons;\n")
    assert res.exit_code == 0, res.output
    assert res.stdout.splitlines() == ["n", "192"]


@pytest.mark.parametrize(("args", "message", "kind"), [
    (["SELECT 1; DROP VIEW neurons"], "2 statements", BadQuery),
    (["COPY neurons TO '/tmp/negdb-never.csv'"], "COPY statements are not allowed", BadQuery),
    (["SELECT * FROM read_csv('/etc/passwd')"], "read_csv", BadQuery),
    (["SELECT nope FROM neurons"], "nope", BadQuery),
    (["SELECT 1", "--format", "parquet"], "--out", BadArgument),
    (["WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r) SELECT count(*) FROM r",
      "--timeout", "0.5"], "longer than 0.5 s", QueryTimeout),
])
def test_errors_are_one_line_and_exit_2(store: Path, args: list[str], message: str, kind: type) -> None:
    res = run(store, "sql", *args)
    assert_one_error(res, kind)
    assert res.stdout == ""
    assert message in res.stderr
    assert not Path("/tmp/negdb-never.csv").exists()


def test_out_inside_the_store_is_refused(store: Path) -> None:
    before = tree_hash(store)
    res = run(store, "sql", "SELECT 1 AS a", "--format", "csv", "--out", str(store / "tables" / "x.csv"))
    assert_one_error(res, BadArgument)
    assert "inside the store" in res.stderr
    assert tree_hash(store) == before


def test_schema_lists_every_view_and_column(store: Path) -> None:
    res = run(store, "schema")
    assert res.exit_code == 0, res.output
    with negdb.connect(str(store)) as cat:
        rows = cat.describe()
    text = res.stdout
    for view, column, typ, meaning in rows:
        assert any(line.split()[:2] == [column, typ.split()[0]] and line.endswith(meaning)
                   for line in text.splitlines() if line.startswith("  ")), (view, column)
    headers = [line.split(":")[0] for line in text.splitlines() if line and not line.startswith(" ")]
    assert headers[0] == "neurons" and set(headers) == {r[0] for r in rows}
    one = run(store, "schema", "models")
    assert one.exit_code == 0 and one.stdout.startswith("models: ") and "neurons:" not in one.stdout
    bad = run(store, "schema", "nope")
    assert_one_error(bad, NotFound)
    assert "unknown view" in bad.stderr
