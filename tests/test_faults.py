"""Fault injection: an ingest killed at every named crash point resumes to the uninterrupted store.

Each crash is a real ``SIGKILL`` of a subprocess at a point named by ``NEGDB_CRASH_AT`` (negdb.store.faults),
not a random moment, so every step of streaming and publishing is covered. After the resume the store must hold
exactly the uninterrupted run's rows and arrays: 0 rows lost, 0 duplicated, 0 arrays silently changed.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import duckdb
import pytest

import negdb
from negdb.store import faults
from negdb.store.arrays import read_array
from negdb.store.faults import POINTS
from tests.ingest_helpers import cli, cli_subprocess, store_files
from tests.tiny_models import save_tiny

# 4 batches of 128 tokens, 3 layers
ARGS = ["--tokens", "512", "--seq-len", "32", "--batch-tokens", "128", "--md-pairs", "100", "--quiet"]

CRASHES = [
    "vector.after_create", "vector.after_create@2", "vector.before_rename@4",
    "stream.before_state@2", "stream.after_batch@2", "stats.after_layer@2",
    "publish.after_metadata", "publish.after_arrays", "publish.after_activations", "publish.after_stats",
    "publish.after_done",
    "segment.before_link@1",  # the run's first record
    "segment.before_link@6",  # the activations segment (after runs, models, checkpoints, slices, stat_specs)
    "segment.before_link@7",  # the neuron_stats segment
]


def test_every_crash_point_is_exercised() -> None:
    assert {c.split("@")[0] for c in CRASHES} == set(POINTS)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny(tmp_path_factory.mktemp("m") / "neox", "gpt_neox", seed=11)


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory, model: Path) -> dict:
    store = tmp_path_factory.mktemp("clean") / "store"
    assert cli(store, "ingest", "--model", str(model), *ARGS).exit_code == 0
    return snapshot(store)


def _raw_rows(store: Path, table: str) -> int:
    files = sorted(str(p) for p in (store / "tables" / table).rglob("*.parquet") if not p.name.startswith("."))
    return duckdb.sql(f"SELECT count(*) FROM read_parquet({files!r}, union_by_name = true)").fetchall()[0][0]


def snapshot(store: Path) -> dict:
    """Everything an ingest publishes, keyed so two stores compare equal when they hold the same data."""
    with negdb.connect(str(store)) as cat:
        stats = cat.sql("SELECT * EXCLUDE (run_id) FROM neuron_stats ORDER BY layer, neuron")
        acts = cat.sql("SELECT * EXCLUDE (run_id) FROM activations ORDER BY layer").rows()
        runs = cat.sql("SELECT status FROM runs")["status"].to_list()
    arrays = {}
    for meta in sorted((store / "acts").rglob("zarr.json")):
        if json.loads(meta.read_text()).get("node_type") == "array":
            values = read_array(meta.parent)
            arrays[str(meta.parent.relative_to(store))] = hashlib.sha256(values.tobytes()).hexdigest()
    return {"stats": stats, "acts": acts, "arrays": arrays, "runs": runs,
            "raw_stats": _raw_rows(store, "neuron_stats"), "raw_acts": _raw_rows(store, "activations")}


def assert_same(got: dict, want: dict) -> None:
    assert got["raw_stats"] == want["raw_stats"] == want["stats"].height  # nothing duplicated on disk
    assert got["raw_acts"] == want["raw_acts"] == len(want["acts"])
    assert got["stats"].equals(want["stats"])  # nothing lost, nothing changed
    assert got["acts"] == want["acts"]
    assert got["arrays"] == want["arrays"]  # every stored array bit for bit (no zeros from a crash window)
    assert set(got["runs"]) == {"done"}


def crash(store: Path, model: Path, point: str, *args: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run the ingest in this process until it raises at ``point`` (the files on disk are what a kill leaves;
    only the run record says 'failed' instead of 'running')."""
    faults.reset()
    monkeypatch.setenv(faults.ENV, f"{point}:raise")
    with pytest.raises(faults.SimulatedCrash):
        cli(store, "ingest", "--model", str(model), *ARGS, *args)
    monkeypatch.delenv(faults.ENV)


def kill(store: Path, model: Path, point: str) -> None:
    """Run the ingest in a subprocess that is killed with SIGKILL at ``point``."""
    proc = cli_subprocess(store, "ingest", "--model", str(model), *ARGS, env={faults.ENV: point})
    assert proc.returncode == -9, f"not killed at {point}: {proc.stderr}"


def resume_and_compare(store: Path, model: Path, clean: dict) -> None:
    if (store / "tables").exists():
        with negdb.connect(str(store)) as cat:  # a stopped job's rows are all visible or none is
            n = cat.sql("SELECT count(*) AS n FROM neuron_stats")["n"][0]
        assert n in (0, clean["stats"].height)
    res = cli(store, "ingest", "--model", str(model), *ARGS)
    assert res.exit_code == 0, res.output
    assert_same(snapshot(store), clean)
    left = [f for f in store_files(store) if f.startswith("work/") or f.endswith(".partial")]
    # only temporary segment files of a killed write are left (hidden: never read; `negdb repair` removes them)
    assert all(Path(f).name.startswith(".") and f.startswith("tables/") for f in left), left


@pytest.mark.parametrize("point", CRASHES)
def test_crash_point_then_resume(tmp_path: Path, model: Path, clean: dict, point: str,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    store = tmp_path / "store"
    crash(store, model, point, monkeypatch=monkeypatch)
    resume_and_compare(store, model, clean)


@pytest.mark.parametrize("point", ["vector.after_create", "publish.after_activations", "segment.before_link@7"])
def test_kill_9_at_crash_point_then_resume(tmp_path: Path, model: Path, clean: dict, point: str) -> None:
    store = tmp_path / "store"
    kill(store, model, point)
    with negdb.connect(str(store)) as cat:
        assert "running" in cat.sql("SELECT status FROM runs")["status"].to_list()
    resume_and_compare(store, model, clean)


def test_kill_then_overlapping_ingest_never_duplicates(tmp_path: Path, model: Path, clean: dict) -> None:
    """The audit's case: kill an all-layer ingest at batch 2, ingest layers 0-1, run the first command again."""
    store = tmp_path / "store"
    kill(store, model, "stream.after_batch@2")
    assert cli(store, "ingest", "--model", str(model), *ARGS, "--layers", "0-1").exit_code == 0
    res = cli(store, "ingest", "--model", str(model), *ARGS)
    assert res.exit_code == 0 and "resuming run" in res.output, res.output
    assert_same(snapshot(store), clean)
    top = cli(store, "top", "--k", "2")
    assert top.exit_code == 0
    lines = [ln for ln in top.output.splitlines() if ln.strip()]
    assert len(lines) == len(set(lines))  # no neuron listed twice


@pytest.mark.parametrize("point", ["stats.after_layer", "publish.after_activations"])
def test_overlap_after_later_crash(tmp_path: Path, model: Path, clean: dict, point: str,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Stopped in its statistics or publish, then another job ingests layer 2: the resumed job publishes only
    what is still missing."""
    store = tmp_path / "store"
    crash(store, model, point, monkeypatch=monkeypatch)
    assert cli(store, "ingest", "--model", str(model), *ARGS, "--layers", "2").exit_code == 0
    assert cli(store, "ingest", "--model", str(model), *ARGS).exit_code == 0
    assert_same(snapshot(store), clean)


def test_view_shows_a_repeated_layer_once_and_repair_removes_it(tmp_path: Path, model: Path, clean: dict) -> None:
    """A store written by an older negdb may hold a layer in two segments: the views show it once, `negdb check`
    reports it and `negdb repair` rewrites the later segment without it."""
    store = tmp_path / "store"
    assert cli(store, "ingest", "--model", str(model), *ARGS).exit_code == 0
    (seg,) = [p for p in (store / "tables" / "neuron_stats").rglob("*.parquet")]
    shutil.copy(seg, seg.with_name("older-negdb-resume.parquet"))
    assert _raw_rows(store, "neuron_stats") == 2 * clean["stats"].height
    got = snapshot(store)
    assert got["stats"].equals(clean["stats"])
    with negdb.connect(str(store)) as cat:
        dup = cat.query("SELECT layer, neuron, count(*) AS n FROM neurons GROUP BY ALL HAVING n > 1").table
    assert dup.num_rows == 0
    check = cli(store, "check")
    assert check.exit_code == 1 and "duplicate-layers" in check.output, check.output
    rep = cli(store, "repair")
    assert rep.exit_code == 0, rep.output
    assert _raw_rows(store, "neuron_stats") == clean["stats"].height
    assert cli(store, "check").exit_code == 0
    assert snapshot(store)["stats"].equals(clean["stats"])
