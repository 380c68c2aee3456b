"""Shared helpers of the ingest tests: run the CLI in-process or as a subprocess, read a store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
from click.testing import CliRunner

import negdb
from negdb.cli.main import main

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--tokens", "512", "--seq-len", "32", "--md-pairs", "100", "--quiet"]


def cli(store: Path, *args: str, env: dict[str, str] | None = None):
    """Run ``negdb --store STORE ARGS`` in-process; returns the click Result."""
    return CliRunner().invoke(main, ["--store", str(store), *args], env=env, catch_exceptions=False)


def raised(res) -> BaseException | None:
    """The NegdbError behind a CLI result that exited with an error (the CLI exits from inside its handler, so the
    error is the exit's context), else None."""
    err = getattr(res.exception, "__context__", None)
    return err if isinstance(err, negdb.NegdbError) else None


def assert_one_error(res, kind: type[BaseException] | None = None) -> None:
    """A CLI result that failed with exit code 2 and exactly one ``error: ...`` line; with ``kind``, the error
    raised was of that class (``negdb.errors``), so a program calling the same API can catch it."""
    assert res.exit_code == 2, res.output
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    err = raised(res)
    assert err is not None and type(err) is not negdb.NegdbError, \
        f"the error should be of a kind a program can catch (negdb.errors), got {type(err).__name__}: {res.stderr}"
    assert lines[0] == f"error: {err}"
    if kind is not None:
        assert isinstance(err, kind), f"expected {kind.__name__}, got {type(err).__name__}: {res.stderr}"


def ingest_into(factory, model: Path, *args: str) -> Path:
    """A fresh store (from pytest's ``tmp_path_factory``) holding ``model`` ingested with the tiny budget."""
    store = factory.mktemp("store")
    res = cli(store, "ingest", "--model", str(model), *args, *TINY)
    assert res.exit_code == 0, res.output
    return store


def cli_subprocess(store: Path, *args: str, env: dict[str, str] | None = None,
                   wait: bool = True) -> subprocess.Popen | subprocess.CompletedProcess:
    """Run the negdb CLI in a fresh Python process (for kill -9 and concurrency tests)."""
    cmd = [sys.executable, "-m", "negdb.cli", "--store", str(store), *args]
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    if wait:
        return subprocess.run(cmd, capture_output=True, text=True, env=full_env, timeout=600)
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=full_env)


def stats_frame(store: Path) -> pl.DataFrame:
    """neuron_stats without the run id, in key order (for comparing two stores)."""
    with negdb.connect(str(store)) as cat:
        df = cat.sql("SELECT * EXCLUDE (run_id) FROM neuron_stats ORDER BY model_id, revision, layer, neuron")
    return df


def store_files(store: Path) -> list[str]:
    """Every file under ``store`` except lock files (relative paths, sorted)."""
    return sorted(str(p.relative_to(store)) for p in store.rglob("*") if p.is_file() and "locks" not in p.parts)


def work_state(store: Path) -> dict | None:
    """The ``state.json`` of an ingest in progress in ``store`` (its first work folder), or None."""
    for path in (store / "work").glob("*/state.json") if (store / "work").exists() else []:
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None
    return None
