"""Interrupted, concurrent and refused ingests: nothing half-written is ever visible."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

import negdb
from negdb.errors import NotEnoughDisk
from negdb.ingest import ingest
from tests.ingest_helpers import cli, cli_subprocess, stats_frame, store_files, work_state
from tests.tiny_models import make_hub_cache, save_step_run, save_tiny

SLOW = ["--tokens", "4096", "--seq-len", "32", "--batch-tokens", "64", "--md-pairs", "500", "--quiet"]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny(tmp_path_factory.mktemp("m") / "neox", "gpt_neox", seed=5)


def _kill_when(proc, store: Path, ready, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        state = work_state(store)
        if state is not None and ready(state):
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            return
        if proc.poll() is not None:
            pytest.fail(f"ingest ended before it could be killed: {proc.stderr.read()}")
        time.sleep(0.01)
    proc.kill()
    pytest.fail("ingest never reached the kill point")


@pytest.mark.parametrize("phase", ["stream", "stats"])
def test_kill_9_then_resume_equals_uninterrupted(tmp_path: Path, tiny_dir: Path, phase: str) -> None:
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    assert cli(clean, "ingest", "--model", str(tiny_dir), *SLOW).exit_code == 0
    proc = cli_subprocess(killed, "ingest", "--model", str(tiny_dir), *SLOW, wait=False)
    if phase == "stream":
        _kill_when(proc, killed, lambda s: 3 <= s["batches_done"] < 60)
    else:
        _kill_when(proc, killed, lambda s: len(s["stats_done"]) >= 1)
    with negdb.connect(str(killed)) as cat:  # nothing half-done is visible
        assert cat.sql("SELECT count(*) AS n FROM neuron_stats")["n"][0] == 0
        assert cat.sql("SELECT status FROM runs")["status"].to_list() == ["running"]
    res = cli(killed, "ingest", "--model", str(tiny_dir), *SLOW)
    assert res.exit_code == 0 and "resuming run" in res.output, res.output
    assert stats_frame(killed).equals(stats_frame(clean))
    with negdb.connect(str(killed)) as cat:
        run = cat.sql("SELECT status, resumes FROM runs").row(0)
    assert run == ("done", 1)
    assert [f for f in store_files(killed) if f.startswith("work/") or f.endswith(".partial")] == []


def test_concurrent_ingests_of_different_checkpoints(tmp_path: Path) -> None:
    run = save_step_run(tmp_path, steps=(0, 1000, 2000))
    store = tmp_path / "store"
    procs = [cli_subprocess(store, "ingest", "--model", str(run), "--checkpoints", ck, *SLOW, wait=False)
             for ck in ("step0", "step1000,step2000")]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    with negdb.connect(str(store)) as cat:
        per = cat.sql("SELECT revision, count(*) AS n FROM neuron_stats GROUP BY 1 ORDER BY 1")
        steps = cat.sql("SELECT revision, step FROM checkpoints ORDER BY step").rows()
    assert per["n"].to_list() == [192, 192, 192]
    assert steps == [("step0", 0), ("step1000", 1000), ("step2000", 2000)]


def test_hub_cache_checkpoints_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache, commits = make_hub_cache(tmp_path, "EleutherAI/pythia-70m", ("step0", "step1000"))
    import huggingface_hub.constants as hfc

    monkeypatch.setattr(hfc, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    store = tmp_path / "store"
    res = cli(store, "ingest", "--model", "pythia-70m", "--checkpoints", "step0,step1000", "--activations", "none",
              "--tokens", "256", "--seq-len", "32", "--md-pairs", "50", "--quiet")
    assert res.exit_code == 0, res.output
    with negdb.connect(str(store)) as cat:
        rows = cat.sql("SELECT revision, step, tokens_seen, commit FROM checkpoints ORDER BY step").rows()
        w = cat.sql("SELECT revision, sum(w_dist) AS s FROM neuron_stats GROUP BY 1 ORDER BY 1")["s"].to_list()
    assert rows == [("step0", 0, 0, commits["step0"]), ("step1000", 1000, 1000 * 2_097_152, commits["step1000"])]
    assert w[0] != w[1]  # each revision's own weights were loaded


def test_local_step_folders_all(tmp_path: Path) -> None:
    run = save_step_run(tmp_path, steps=(0, 500))
    res = cli(tmp_path / "s", "ingest", "--model", str(run), "--checkpoints", "all", "--activations", "none",
              "--tokens", "256", "--seq-len", "32", "--md-pairs", "50", "--quiet")
    assert res.exit_code == 0, res.output
    with negdb.connect(str(tmp_path / "s")) as cat:
        assert cat.sql("SELECT revision FROM checkpoints ORDER BY step")["revision"].to_list() == ["step0", "step500"]


@pytest.mark.parametrize(("args", "message"), [
    (["--model", "no-such-model"], "unknown model"),
    (["--checkpoints", "every:0"], ""),
    (["--checkpoints", "step77"], ""),
    (["--dataset", "/no/such/corpus.txt"], ""),
    (["--layers", "9"], "out of range"),
    (["--tokens", "8", "--seq-len", "32"], ""),
])
def test_bad_input_is_one_line_and_stores_nothing(tmp_path: Path, tiny_dir: Path, args: list[str],
                                                  message: str) -> None:
    base = ["--model", str(tiny_dir), "--tokens", "256", "--seq-len", "32", "--quiet"]
    proc = cli_subprocess(tmp_path / "store", "ingest", *base, *args)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], proc.stderr
    assert not (tmp_path / "store").exists()


def test_full_disk_is_refused_before_writing(tmp_path: Path, tiny_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda _p: usage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(NotEnoughDisk, match="not enough disk space"):
        ingest(model=str(tiny_dir), tokens=256, seq_len=32, store=tmp_path / "store", progress=False)
    assert not (tmp_path / "store").exists()
