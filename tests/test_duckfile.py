"""The store as a DuckDB database (``<store>/negdb.duckdb``), checked with the real ``duckdb`` CLI from PyPI.

The CLI (``duckdb-cli``, the test extra) is an older DuckDB than the Python package, so these tests also check
that the file is storage-compatible with it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

import negdb
from negdb.errors import StoreError
from negdb.store import duckfile
from negdb.store.layout import StoreLayout
from negdb.store.segments import write_segment
from negdb.store.tables import EVAL_RESULTS, NEURON_SETS, all_tables
from tests.ingest_helpers import TINY, assert_one_error, cli
from tests.tiny_models import save_tiny

pytestmark = pytest.mark.timeout(180)


def duckdb_cli() -> str:
    """The ``duckdb`` shell: next to this Python (the venv), else on PATH; skipped (failed under CI) if absent."""
    here = Path(sys.executable).parent / "duckdb"
    found = str(here) if here.is_file() else shutil.which("duckdb")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("the duckdb CLI is missing: `pip install -e .[test]` installs duckdb-cli")
        pytest.skip("no duckdb CLI: `pip install duckdb-cli` (part of the test extra)")
    return found


def shell(store: Path, sql: str, *, cwd: Path | None = None, search_path: bool = True) -> list[dict]:
    """Run ``sql`` in ``duckdb -readonly`` on the store's file; JSON rows of the last statement."""
    args = [duckdb_cli(), "-readonly", "-json"]
    if search_path:
        args += ["-cmd", f"SET file_search_path = '{store}'"]
    path = "negdb.duckdb" if cwd == store and not search_path else str(store / "negdb.duckdb")
    res = subprocess.run([*args, path, "-c", sql], capture_output=True, text=True, cwd=cwd or "/", timeout=60)
    assert res.returncode == 0, res.stderr
    text = res.stdout.strip()
    return json.loads(text) if text else []


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("duckfile")
    model = save_tiny(tmp / "neox", "gpt_neox", seed=3)
    store = tmp / "store"
    res = cli(store, "ingest", "--model", str(model), *TINY)
    assert res.exit_code == 0, res.output
    return store


def test_a_new_store_has_every_view_typed_and_empty(tmp_path: Path) -> None:
    StoreLayout(tmp_path / "s").init()
    store = tmp_path / "s"
    assert (store / "negdb.duckdb").is_file()
    views = {r["view_name"] for r in shell(store, "SELECT view_name FROM duckdb_views() WHERE NOT internal")}
    assert views == {t.name for t in all_tables()} | {"neurons", "negdb_info", "negdb_columns"}
    with negdb.connect(store) as cat:
        expected = {(v, c, t) for v, c, t, _ in cat.describe()}
    for view in ("neurons", "eval_results", "neuron_stats", "runs"):
        rows = shell(store, f"DESCRIBE {view}")
        assert {(view, r["column_name"], r["column_type"]) for r in rows} == {e for e in expected if e[0] == view}
        assert shell(store, f"SELECT count(*) AS n FROM {view}") == [{"n": 0}]
    # the meanings: each view's as its comment (SQL clients show it), each column's in negdb_columns
    comments = shell(store, "SELECT comment FROM duckdb_views() WHERE view_name = 'eval_results'")
    assert "one row per stored evaluation" in comments[0]["comment"]
    meaning = shell(store, "SELECT meaning FROM negdb_columns WHERE view_name = 'eval_results' AND "
                           "column_name = 'set_id'")
    assert "neuron set" in meaning[0]["meaning"]
    # the neurons view too: every one of its columns, with the meaning of the table it comes from
    described = {r["column_name"]: r["meaning"] for r in shell(
        store, "SELECT column_name, meaning FROM negdb_columns WHERE view_name = 'neurons'")}
    assert list(described) == [r["column_name"] for r in shell(store, "DESCRIBE neurons")]
    assert all(described.values()), [c for c, m in described.items() if not m]
    assert described["step"] == shell(store, "SELECT meaning FROM negdb_columns WHERE view_name = 'checkpoints' "
                                             "AND column_name = 'step'")[0]["meaning"]
    assert described["w_dist"] == {c: m for c, _, m in next(
        t for t in all_tables() if t.name == "neuron_stats").columns}["w_dist"]


def test_the_cli_sees_what_the_catalog_sees(store: Path) -> None:
    with negdb.connect(store) as cat:
        for table in [t.name for t in all_tables()] + ["neurons"]:
            n = cat.sql(f"SELECT count(*) AS n FROM {table}")["n"][0]
            assert shell(store, f"SELECT count(*) AS n FROM {table}") == [{"n": n}], table
        top = cat.sql("SELECT model_id, revision, layer, neuron, w_dist FROM neurons ORDER BY w_dist DESC, layer, "
                      "neuron LIMIT 5").to_dicts()
    got = shell(store, "SELECT model_id, revision, layer, neuron, w_dist FROM neurons ORDER BY w_dist DESC, layer, "
                       "neuron LIMIT 5")
    assert [(r["layer"], r["neuron"]) for r in got] == [(r["layer"], r["neuron"]) for r in top]
    assert [r["w_dist"] for r in got] == pytest.approx([r["w_dist"] for r in top])
    assert got[0]["model_id"] == top[0]["model_id"]  # hive folder values decoded (the model id is a path)


def test_relative_paths_need_the_search_path_or_the_store_folder(store: Path) -> None:
    # from inside the store, plain `duckdb -readonly negdb.duckdb` works
    assert shell(store, "SELECT count(*) AS n FROM neurons", cwd=store, search_path=False)[0]["n"] == 192
    # elsewhere without file_search_path the globs do not resolve
    res = subprocess.run([duckdb_cli(), "-readonly", str(store / "negdb.duckdb"), "-c", "SELECT count(*) FROM neurons"],
                         capture_output=True, text=True, cwd="/", timeout=60)
    assert res.returncode != 0 and "No files found" in res.stderr + res.stdout
    # the one-liner printed by `negdb duckdb` works from anywhere
    res = cli(store, "duckdb")
    assert res.exit_code == 0, res.output
    line = res.output.strip().splitlines()[-1].strip()
    assert line == duckfile.shell_line(store)
    out = subprocess.run(line.replace("duckdb", duckdb_cli(), 1) + " -csv -c 'SELECT count(*) AS n FROM neurons'",
                         shell=True, capture_output=True, text=True, cwd="/", timeout=60)
    assert out.returncode == 0 and out.stdout.split() == ["n", "192"], out.stderr


def test_python_read_only_connection(store: Path) -> None:
    con = duckdb.connect(str(store / "negdb.duckdb"), read_only=True)
    try:
        con.execute("SET file_search_path = ?", [str(store)])
        assert con.execute("SELECT count(*) FROM neurons").fetchone()[0] == 192
    finally:
        con.close()
    con = duckfile.connect(store)
    try:
        assert con.execute("SELECT count(DISTINCT layer) FROM neurons").fetchone()[0] == 3
        with pytest.raises(duckdb.Error):
            con.execute("CREATE TABLE x AS SELECT 1")  # read only
    finally:
        con.close()


def _set_row(name: str) -> pa.Table:
    return NEURON_SETS.from_rows([{"name": name, "set_id": name * 4, "model_id": "m", "n_members": 0}])


def test_a_segment_published_later_is_visible_without_rewriting(tmp_path: Path) -> None:
    store = tmp_path / "s"
    StoreLayout(store).init()
    f = store / "negdb.duckdb"
    first = f.stat().st_ino
    write_segment(store / "tables" / "neuron_sets" / "a.parquet", _set_row("a"))
    second = f.stat().st_ino
    assert second != first  # the table's first segment: the view changes from empty to the glob (a new file)
    write_segment(store / "tables" / "neuron_sets" / "b.parquet", _set_row("b"))
    assert f.stat().st_ino == second  # not rewritten ...
    assert {r["name"] for r in shell(store, "SELECT name FROM neuron_sets")} == {"a", "b"}  # ... yet b is seen
    assert duckfile.ensure(store) is False


def test_a_reader_keeps_its_open_file_while_writers_replace_it(tmp_path: Path) -> None:
    store = tmp_path / "s"
    StoreLayout(store).init()
    held = duckdb.connect(str(store / "negdb.duckdb"), read_only=True)
    try:
        held.execute("SET file_search_path = ?", [str(store)])
        assert held.execute("SELECT count(*) FROM eval_results").fetchone()[0] == 0
        write_segment(store / "tables" / "eval_results" / "r1.parquet",
                      EVAL_RESULTS.from_rows([{"result_id": "r1", "benchmark": "blimp"}]))
        # the held (old) file still answers: its view of the then-empty table
        assert held.execute("SELECT count(*) FROM eval_results").fetchone()[0] == 0
        assert shell(store, "SELECT result_id FROM eval_results") == [{"result_id": "r1"}]
    finally:
        held.close()
    assert not [p for p in store.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_a_store_without_the_file_gets_it(tmp_path: Path) -> None:
    store = tmp_path / "s"
    StoreLayout(store).init()
    write_segment(store / "tables" / "neuron_sets" / "a.parquet", _set_row("a"))
    (store / "negdb.duckdb").unlink()
    res = cli(store, "duckdb")
    assert res.exit_code == 0 and "written" in res.output
    assert shell(store, "SELECT name FROM neuron_sets") == [{"name": "a"}]
    (store / "negdb.duckdb").unlink()
    StoreLayout(store).init()  # any writer opening the store writes it again
    assert (store / "negdb.duckdb").is_file()
    assert_one_error(cli(tmp_path / "nothing", "duckdb"), StoreError)


def test_flat_and_hive_neuron_stats_segments_are_both_read(store: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(store, copy)
    hive = next((copy / "tables" / "neuron_stats").rglob("*.parquet"))
    flat = copy / "tables" / "neuron_stats" / "flat.parquet"
    import pyarrow.parquet as pq

    t = pq.read_table(hive)
    t = t.set_column(t.schema.get_field_index("revision"), "revision", pa.array(["other"] * t.num_rows))
    write_segment(flat, t)  # the layout of older stores and of bench/synthetic_catalog.py
    assert duckfile.table_shapes(copy)["neuron_stats"] == ("flat", "hive")
    rows = shell(copy, "SELECT revision, count(*) AS n FROM neuron_stats GROUP BY 1 ORDER BY 1")
    with negdb.connect(copy) as cat:
        expected = cat.sql("SELECT revision, count(*) AS n FROM neuron_stats GROUP BY 1 ORDER BY 1").to_dicts()
    assert rows == expected and len(rows) == 2


_PUBLISH_FIRST = """
import sys, time
from pathlib import Path
from negdb.store.segments import write_segment
from negdb.store.tables import all_tables
store, table, go = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
t = next(x for x in all_tables() if x.name == table)
while not go.exists():
    time.sleep(0.005)
write_segment(store / "tables" / table / "x.parquet", t.from_rows([{}]))
"""


def test_racing_writers_leave_every_table_in_the_file(tmp_path: Path) -> None:
    """Processes that publish the first segment of different tables at once: the final file reads them all."""
    store = tmp_path / "s"
    StoreLayout(store).init()
    go = tmp_path / "go"
    names = ["eval_results", "eval_metrics", "ablations", "analyses", "neg_share", "diff_pairs"]
    procs = [subprocess.Popen([sys.executable, "-c", _PUBLISH_FIRST, str(store), n, str(go)]) for n in names]
    go.touch()
    assert [p.wait(timeout=120) for p in procs] == [0] * len(names)
    for name in names:
        assert shell(store, f"SELECT count(*) AS n FROM {name}") == [{"n": 1}], name
    assert duckfile.current_digest(store) == duckfile.spec_for(duckfile.table_shapes(store)).digest


def test_check_reports_and_repair_removes_a_rewrite_cut_short(tmp_path: Path) -> None:
    """A rewrite of the views file killed before its rename leaves `.negdb.duckdb.<id>.partial` (and its .wal) at the
    store's root: `negdb check` reports it (a leftover: the store is fine) and `negdb repair` removes it."""
    store = tmp_path / "s"
    StoreLayout(store).init()
    script = (f"import os, duckdb\nfrom negdb.store import duckfile\n"
              f"real = duckdb.connect\n"
              f"def connect(path, *a, **k):\n"
              f"    con = real(path, *a, **k)\n"
              f"    if str(path).endswith('.partial'):\n"
              f"        con.execute('CREATE TABLE x AS SELECT 1 AS a'); con.execute('CHECKPOINT'); os._exit(9)\n"
              f"    return con\n"
              f"duckdb.connect = connect\n"
              f"duckfile.ensure({str(store)!r}, force=True)\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 9, proc.stderr
    left = duckfile.partial_files(store)
    assert left and all(p.name.startswith(".negdb.duckdb.") for p in left)
    assert (store / "negdb.duckdb").is_file()  # the old file stays in place
    check = cli(store, "check")
    assert check.exit_code == 0, check.output  # a leftover harms nothing
    assert "leftover" in check.output and left[0].name in check.output
    rep = cli(store, "repair")
    assert rep.exit_code == 0 and f"removed {left[0].name}" in rep.output, rep.output
    assert duckfile.partial_files(store) == []
    assert "leftover" not in cli(store, "check").output
    assert shell(store, "SELECT count(*) AS n FROM neurons") == [{"n": 0}]
