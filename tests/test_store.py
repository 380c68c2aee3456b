"""The store's building blocks: atomic segments, locks, the catalog snapshot, layer/activation specs."""

from __future__ import annotations

import errno
import fcntl
import multiprocessing as mp
import os
import time
from pathlib import Path

import pyarrow as pa
import pytest

from negdb.errors import BadArgument, NotEnoughDisk, StoreError
from negdb.ingest.plan import parse_activations, parse_layers
from negdb.store.catalog import Catalog
from negdb.store.layout import StoreLayout, safe_key
from negdb.store.locks import exclusive_lock
from negdb.store.segments import atomic_write_bytes, list_segments, write_segment
from negdb.store.tables import MODELS, all_tables


def test_segment_exclusive_first_writer_wins(tmp_path: Path) -> None:
    path = tmp_path / "t" / "a.parquet"
    assert write_segment(path, pa.table({"x": [1]}))
    assert not write_segment(path, pa.table({"x": [2]}))
    assert Catalog(tmp_path).con.execute(f"SELECT x FROM '{path}'").fetchall() == [(1,)]
    assert write_segment(path, pa.table({"x": [3]}), exclusive=False)
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".partial")]


def test_failed_write_leaves_no_segment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pyarrow.parquet as pq

    def boom(*_a, **_k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pq, "write_table", boom)
    with pytest.raises(NotEnoughDisk, match="disk is full"):
        write_segment(tmp_path / "t" / "a.parquet", pa.table({"x": [1]}))
    assert list((tmp_path / "t").iterdir()) == []


def _segment_columns(table, folder: Path) -> list[tuple[str, str]]:
    """(column, DuckDB type) of a real segment of ``table`` (one all-NULL row), as DuckDB reads the file."""
    import duckdb

    path = folder / f"{table.name}.parquet"
    write_segment(path, table.from_rows([{}]))
    return [(str(r[0]), str(r[1])) for r in duckdb.sql(f"DESCRIBE SELECT * FROM '{path}'").fetchall()]


def _view_columns(con, view: str) -> list[tuple[str, str]]:
    return [(str(r[0]), str(r[1])) for r in con.execute(f"DESCRIBE {view}").fetchall()]


def test_catalog_lists_only_published_segments(tmp_path: Path) -> None:
    layout = StoreLayout(tmp_path / "s").init()
    cat = Catalog(tmp_path / "s")
    (tmp_path / "seg").mkdir()
    for table in all_tables():  # an empty view has the columns and types a published segment will have
        expected = _segment_columns(table, tmp_path / "seg")
        assert _view_columns(cat.con, table.name) == expected, table.name
        assert _view_columns(cat._cursor(), table.name) == expected, table.name  # the user-SQL database
    (layout.table_dir("models")).mkdir(parents=True)
    (layout.table_dir("models") / ".x.parquet.abc.partial").write_bytes(b"garbage")
    write_segment(layout.table_dir("models") / "m.parquet", MODELS.from_rows([{"model_id": "m1", "n_layers": 2}]))
    assert cat.sql("SELECT count(*) AS n FROM models")["n"][0] == 0  # the snapshot predates it
    cat.refresh()
    assert cat.sql("SELECT model_id, n_layers FROM models").rows() == [("m1", 2)]
    assert len(list_segments(layout.table_dir("models"))) == 1


def test_store_marker_rejects_other_format(tmp_path: Path) -> None:
    atomic_write_bytes(tmp_path / "negdb.json", b'{"format": 99}')
    with pytest.raises(StoreError, match="format 99"):
        StoreLayout(tmp_path).init()


def test_safe_key_is_injective_for_unsafe_names() -> None:
    assert safe_key("pythia-70m") == "pythia-70m"
    assert safe_key("/a/b") != safe_key("/a_b")
    assert "/" not in safe_key("EleutherAI/pythia-70m")


def _hold(path: str, seconds: float) -> None:
    with exclusive_lock(Path(path)):
        time.sleep(seconds)


def test_lock_excludes_other_processes_and_dies_with_them(tmp_path: Path) -> None:
    lock = tmp_path / "l.lock"
    proc = mp.get_context("spawn").Process(target=_hold, args=(str(lock), 30))
    proc.start()
    deadline = time.time() + 20
    while time.time() < deadline and not (lock.exists() and lock.read_text().startswith("pid")):
        time.sleep(0.05)
    fd = os.open(lock, os.O_RDWR)
    with pytest.raises(BlockingIOError):  # held by the other process
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.close(fd)
    os.kill(proc.pid, 9)  # killed holder: the OS releases the lock
    proc.join()
    waited: list[str] = []
    with exclusive_lock(lock, on_wait=waited.append):
        pass
    assert waited == []


@pytest.mark.parametrize(("spec", "expected"), [("all", [0, 1, 2, 3]), ("0-1,3", [0, 1, 3]), ("-1", [3]),
                                                ("2", [2])])
def test_parse_layers(spec: str, expected: list[int]) -> None:
    assert parse_layers(spec, 4) == expected


@pytest.mark.parametrize("spec", ["4", "x", "3-1", "", "1,,2"])
def test_parse_layers_rejects(spec: str) -> None:
    with pytest.raises(BadArgument):
        parse_layers(spec, 4)


def test_parse_activations() -> None:
    assert parse_activations("none", [0, 1], 4) == []
    assert parse_activations("layers=1", [0, 1], 4) == [1]
    with pytest.raises(BadArgument, match="does not ingest"):
        parse_activations("layers=3", [0, 1], 4)
    with pytest.raises(BadArgument):
        parse_activations("some", [0, 1], 4)


def _rows(cat: Catalog, view: str) -> list[tuple]:
    return sorted(cat.con.execute(f"SELECT * FROM {view}").fetchall(), key=repr)


def _files(paths: list[Path]) -> list[tuple]:
    """The rows of ``paths`` read with pyarrow (the reference), as the catalog's column order gives them."""
    import pyarrow.parquet as pq

    tables = [pq.read_table(p) for p in paths]
    return sorted((tuple(r.values()) for t in tables for r in t.to_pylist()), key=repr)


def test_refresh_remakes_only_changed_views_and_sees_what_a_fresh_catalog_sees(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from negdb.store.tables import EVAL_METRICS, EVAL_RESULTS, RUNS

    layout = StoreLayout(tmp_path).init()
    res, met, runs = (layout.table_dir(t) for t in ("eval_results", "eval_metrics", "runs"))

    def result(i: int, **extra: object) -> pa.Table:
        return EVAL_RESULTS.from_rows([{"result_id": f"r{i}", "benchmark": "blimp", "n_items": i, **extra}])

    write_segment(res / "r1.parquet", result(1))
    write_segment(met / "r1.parquet", EVAL_METRICS.from_rows([{"result_id": "r1", "metric": "acc", "value": 0.5}]))
    write_segment(runs / "job.parquet", RUNS.from_rows([{"run_id": "job", "status": "running"}]), exclusive=False)
    cat = Catalog(tmp_path)
    made: list[str] = []
    real = Catalog._view
    monkeypatch.setattr(Catalog, "_view", lambda self, table, *a: (made.append(table.name), real(self, table, *a))[1])

    cat.refresh()  # nothing changed: no view is made again
    assert made == []
    write_segment(res / "r2.parquet", result(2))  # eval_results is kept in memory: the new segment is appended
    write_segment(met / "r2.parquet", EVAL_METRICS.from_rows([{"result_id": "r2", "metric": "acc", "value": 0.7}]))
    cat.refresh()
    assert sorted(made) == ["eval_metrics", "eval_results"]
    assert _rows(cat, "eval_results") == _files([res / "r1.parquet", res / "r2.parquet"])
    assert _rows(cat, "eval_metrics") == _files([met / "r1.parquet", met / "r2.parquet"])
    user = cat.query("SELECT result_id FROM eval_results ORDER BY result_id").table.column(0).to_pylist()
    assert user == ["r1", "r2"]  # the hardened database got the same segment

    made.clear()  # a record replaced in place (same path, new size and time) is read again
    write_segment(runs / "job.parquet", RUNS.from_rows([{"run_id": "job", "status": "done", "message": "x" * 50}]),
                  exclusive=False)
    cat.refresh()
    assert made == ["runs"]
    assert cat.sql("SELECT status FROM runs")["status"].to_list() == ["done"]

    made.clear()  # a removed segment and one with a column the table lacks: every segment read again
    (res / "r1.parquet").unlink()
    cat.refresh()
    assert made == ["eval_results"] and _rows(cat, "eval_results") == _files([res / "r2.parquet"])
    write_segment(res / "r3.parquet", result(3).append_column("extra", pa.array(["e"])))
    cat.refresh()
    fresh = Catalog(tmp_path)
    for view in ("eval_results", "eval_metrics", "runs", "neurons"):
        assert _rows(cat, view) == _rows(fresh, view), view
    assert cat.sql("SELECT extra FROM eval_results WHERE result_id = 'r3'")["extra"].to_list() == ["e"]
    assert cat.view_names() == fresh.view_names()

    (res / "r2.parquet").unlink()
    (res / "r3.parquet").unlink()
    cat.refresh()  # no segment left: the empty view with the table's columns
    assert cat.sql("SELECT count(*) AS n FROM eval_results")["n"][0] == 0
    (tmp_path / "seg").mkdir()
    assert _view_columns(cat.con, "eval_results") == _segment_columns(EVAL_RESULTS, tmp_path / "seg")


def test_refresh_after_a_failed_view_reads_the_table_anew(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from negdb.store.tables import EVAL_RESULTS

    layout = StoreLayout(tmp_path).init()
    res = layout.table_dir("eval_results")
    write_segment(res / "r1.parquet", EVAL_RESULTS.from_rows([{"result_id": "r1"}]))
    cat = Catalog(tmp_path)
    write_segment(res / "r2.parquet", EVAL_RESULTS.from_rows([{"result_id": "r2"}]))
    real = cat._safe

    class Boom:  # the append on the first database works, the one on the hardened database fails
        def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
            def fail(*a: object) -> None:
                raise RuntimeError("boom")
            return fail

    cat._safe = Boom()  # type: ignore[assignment]
    with pytest.raises(RuntimeError):
        cat.refresh()
    cat._safe = real
    cat.refresh()  # not appended twice: the table is read again from every segment
    assert sorted(cat.sql("SELECT result_id FROM eval_results")["result_id"].to_list()) == ["r1", "r2"]
    assert sorted(cat.query("SELECT result_id FROM eval_results").table.column(0).to_pylist()) == ["r1", "r2"]
