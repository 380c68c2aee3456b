"""One encoding of query results: `negdb sql --format json` and `POST /sql` answer every DuckDB type alike.

The expected values are written out by hand (ISO 8601 texts, exact integers, base64), not computed by the
encoder; every query runs through both the CLI and the service.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from negdb.query.encode import iso_duration
from negdb.service.app import create_app
from negdb.store.layout import StoreLayout
from tests.ingest_helpers import cli

# (SQL expression, the JSON value both must answer)
CASES = [
    ("42::TINYINT", 42),
    ("18446744073709551615::UBIGINT", 18446744073709551615),
    ("170141183460469231731687303715884105727::HUGEINT", 2**127 - 1),
    ("-170141183460469231731687303715884105727::HUGEINT", -(2**127 - 1)),
    ("12345678901234567890::UHUGEINT", 12345678901234567890),
    ("1.25::DECIMAL(10, 2)", 1.25),
    ("3.00::DECIMAL(10, 2)", 3),
    ("1.234567890123456789::DECIMAL(38, 18)", "1.234567890123456789"),
    ("0.1::DOUBLE", 0.1),
    ("'nan'::DOUBLE", None),
    ("'-inf'::FLOAT", None),
    ("'héllo'", "héllo"),
    ("true", True),
    ("NULL", None),
    ("'2024-01-31'::DATE", "2024-01-31"),
    ("'2024-01-31 12:00:00.5'::TIMESTAMP", "2024-01-31T12:00:00.500000"),
    ("'2024-01-31 12:00:00+02'::TIMESTAMPTZ", "2024-01-31T10:00:00+00:00"),
    ("'12:30:00'::TIME", "12:30:00"),
    ("'12:30:00+05:30'::TIMETZ", "12:30:00+05:30"),
    ("'infinity'::TIMESTAMP", "infinity"),
    ("'-infinity'::TIMESTAMP", "-infinity"),
    ("'infinity'::TIMESTAMPTZ", "infinity"),
    ("'infinity'::DATE", "infinity"),
    ("'infinity'::TIMESTAMP_NS", "infinity"),
    ("'290000-01-01 10:00:00'::TIMESTAMP", "290000-01-01T10:00:00"),
    ("INTERVAL '1 year 2 months 3 days 04:05:06.5'", "P1Y2M3DT4H5M6.5S"),
    ("INTERVAL '-1 day'", "P-1D"),
    ("INTERVAL '0 seconds'", "PT0S"),
    ("TIMESTAMP '2024-01-02' - TIMESTAMP '2024-01-01 12:00'", "PT12H"),
    ("'ab'::BLOB", base64.b64encode(b"ab").decode()),
    ("UUID '123e4567-e89b-12d3-a456-426614174000'", "123e4567-e89b-12d3-a456-426614174000"),
    ("'x'::ENUM('x', 'y')", "x"),
    ("[1, NULL, 3]", [1, None, 3]),
    ("['infinity'::TIMESTAMP, NULL, '2024-01-31'::TIMESTAMP]", ["infinity", None, "2024-01-31T00:00:00"]),
    ("{'a': 1.5::DECIMAL(3, 1), 'b': [INTERVAL 1 HOUR]}", {"a": 1.5, "b": ["PT1H"]}),
    ("MAP([1, 2], ['a', 'b'])", [[1, "a"], [2, "b"]]),
    ("array_value(1.5, 2.5)", [1.5, 2.5]),
    ("[['a'], NULL, []]", [["a"], None, []]),
]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("store")
    StoreLayout(root).init()
    return root


@pytest.fixture(scope="module")
def client(store: Path):
    with TestClient(create_app(store)) as c:
        yield c


def _cli_rows(store: Path, sql: str) -> list[dict]:
    res = cli(store, "sql", sql, "--format", "json")
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


@pytest.mark.parametrize(("expr", "expected"), CASES, ids=[c[0] for c in CASES])
def test_cli_and_service_answer_alike(store: Path, client: TestClient, expr: str, expected: object) -> None:
    sql = f"SELECT {expr} AS v"
    res = client.post("/sql", json={"sql": sql})
    assert res.status_code == 200, res.text
    assert res.json()["rows"] == [[expected]]
    assert _cli_rows(store, sql) == [{"v": expected}]


def test_all_cases_in_one_result_alike(store: Path, client: TestClient) -> None:
    """Many columns (and two named alike) in one answer: the CLI numbers the repeated name, the values agree."""
    sql = "SELECT " + ", ".join(f"{e} AS c{i}" for i, (e, _) in enumerate(CASES)) + ", 1 AS c0"
    body = client.post("/sql", json={"sql": sql}).json()
    expected = [e for _, e in CASES] + [1]
    assert body["rows"] == [expected]
    assert body["columns"][-1] == "c0"
    (row,) = _cli_rows(store, sql)
    assert list(row.values()) == expected
    assert list(row)[-1] == "c0_1"


def test_timetz_keeps_its_offset_in_arrow_and_csv(store: Path, client: TestClient) -> None:
    import pyarrow as pa

    sql = "SELECT '12:30:00+05:30'::TIMETZ AS t, '23:00:00-01'::TIMETZ AS t"
    res = client.post("/sql", json={"sql": sql}, params={"format": "arrow"})
    table = pa.ipc.open_stream(res.content).read_all()
    assert table.column_names == ["t", "t"]
    assert table.column(0).to_pylist() == ["12:30:00+05:30"]
    assert table.column(1).to_pylist() == ["23:00:00-01"]
    out = cli(store, "sql", sql, "--format", "csv")
    assert out.exit_code == 0, out.output
    assert out.stdout.splitlines() == ["t,t_1", "12:30:00+05:30,23:00:00-01"]


def test_infinite_and_far_times_print_as_a_table_and_csv(store: Path) -> None:
    sql = ("SELECT 'infinity'::TIMESTAMP AS a, '-infinity'::DATE AS b, '290000-01-01'::TIMESTAMP AS c, "
           "TIMESTAMP '2024-01-31 12:00' AS d")
    res = cli(store, "sql", sql, "--format", "csv")
    assert res.exit_code == 0, res.output
    assert res.stdout.splitlines() == ["a,b,c,d", "infinity,-infinity,290000-01-01T00:00:00,2024-01-31T12:00:00.000000"]
    res = cli(store, "sql", sql)
    assert res.exit_code == 0, res.output
    assert "infinity" in res.stdout and "-infinity" in res.stdout


def test_service_answers_infinite_times_in_arrow(client: TestClient) -> None:
    import pyarrow as pa

    res = client.post("/sql", json={"sql": "SELECT 'infinity'::TIMESTAMP AS t"}, params={"format": "arrow"})
    assert res.status_code == 200
    raw = pa.ipc.open_stream(res.content).read_all().column(0).cast(pa.int64()).to_pylist()
    assert raw == [2**63 - 1]  # DuckDB's infinity, passed on as it is


@pytest.mark.parametrize(("parts", "text"), [
    ((0, 0, 0), "PT0S"),
    ((14, 3, 4 * 3600 * 10**9 + 5 * 60 * 10**9 + 6_500_000_000), "P1Y2M3DT4H5M6.5S"),
    ((-14, 0, 0), "P-1Y-2M"),
    ((0, 0, -1), "PT-0.000000001S"),
    ((0, -2, -90 * 10**9), "P-2DT-1M-30S"),
    ((12, 0, 3600 * 10**9), "P1YT1H"),
])
def test_iso_duration(parts: tuple[int, int, int], text: str) -> None:
    assert iso_duration(*parts) == text
