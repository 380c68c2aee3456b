"""Ingest paths of the GPU issue, exercised on the CPU: the torch statistics kernel inside the pipeline (with the
captured values kept on the device), checkpoints overlapping (statistics of one while the next streams), the
forward dtype as part of the statistics' key. tests/test_gpu.py runs the same paths on a CUDA device.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

import negdb
from negdb.errors import BadArgument
from negdb.ingest import device, pipeline
from negdb.ingest.plan import IngestSpec, Resources, StatSpec
from tests.ingest_helpers import TINY, assert_one_error, cli, stats_frame
from tests.tiny_models import save_step_run, save_tiny

KEYS = ["model_id", "revision", "slice_id", "spec_id", "layer", "neuron"]


@pytest.fixture(scope="module")
def steps(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_step_run(tmp_path_factory.mktemp("m"), steps=(0, 1000, 2000))


def _stats(store: Path) -> pl.DataFrame:
    return stats_frame(store).sort(KEYS)


def test_overlapped_checkpoints_equal_serial_bit_for_bit(tmp_path: Path, steps: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Statistics of checkpoint i run in the worker while checkpoint i+1 streams; the stored values are the same."""
    import threading

    names: list[str] = []
    real = pipeline.layer_stats

    def spy(*args, **kwargs):
        names.append(threading.current_thread().name)
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "layer_stats", spy)
    a, b = tmp_path / "serial", tmp_path / "overlap"
    assert cli(a, "ingest", "--model", str(steps), "--checkpoints", "all", "--no-overlap", *TINY).exit_code == 0
    serial_threads = names[:]
    names.clear()
    assert cli(b, "ingest", "--model", str(steps), "--checkpoints", "all", *TINY).exit_code == 0
    overlap_threads = names[:]
    assert not any(t.startswith("negdb-stats") for t in serial_threads)
    per_checkpoint = len(overlap_threads) // 3
    assert len(serial_threads) == len(overlap_threads) == 3 * per_checkpoint  # one call per layer
    assert sum(t.startswith("negdb-stats") for t in overlap_threads) == 2 * per_checkpoint  # all but the last
    sa, sb = _stats(a), _stats(b)
    assert sa.height > 0 and sa.equals(sb)  # bit-identical, NaN included
    with negdb.connect(str(b)) as cat:
        runs = cat.sql("SELECT revision, status FROM runs ORDER BY revision").rows()
    assert runs == [("step0", "done"), ("step1000", "done"), ("step2000", "done")]


def test_overlap_failure_in_the_worker_is_reported_and_resumes(tmp_path: Path, steps: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure in a background statistics job fails the command, marks its run failed, and a re-run resumes."""
    real = pipeline.layer_stats
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # checkpoint step0's second layer, in the worker thread
            raise OSError("disk went away")
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "layer_stats", flaky)
    store = tmp_path / "s"
    with pytest.raises(OSError, match="disk went away"):
        cli(store, "ingest", "--model", str(steps), "--checkpoints", "step0,step1000", *TINY)
    with negdb.connect(str(store)) as cat:
        status = dict(cat.sql("SELECT revision, status FROM runs").rows())
    assert status["step0"] == "failed"
    monkeypatch.setattr(pipeline, "layer_stats", real)
    assert cli(store, "ingest", "--model", str(steps), "--checkpoints", "step0,step1000", *TINY).exit_code == 0
    ref = tmp_path / "ref"
    assert cli(ref, "ingest", "--model", str(steps), "--checkpoints", "step0,step1000", "--no-overlap",
               *TINY).exit_code == 0
    assert _stats(store).equals(_stats(ref))


@pytest.mark.parametrize("store_dtype", ["float16", "float32"])
def test_torch_kernel_in_the_pipeline_equals_numpy(tmp_path: Path, store_dtype: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """--stats-backend torch on the CPU keeps the captured values 'on the device' and computes from them."""
    model = save_tiny(tmp_path / "m", "llama", seed=2)
    used: list[bool] = []
    real = pipeline.layer_stats

    def spy(*args, **kwargs):
        used.append(args[7] is not None)  # resident copy given
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "layer_stats", spy)
    a, b = tmp_path / "numpy", tmp_path / "torch"
    args = ["ingest", "--model", str(model), "--store-dtype", store_dtype, *TINY]
    assert cli(a, *args).exit_code == 0
    assert used and not any(used)
    used.clear()
    assert cli(b, *args, "--stats-backend", "torch").exit_code == 0
    assert used and all(used)
    sa, sb = _stats(a), _stats(b)
    assert sa.select(KEYS).equals(sb.select(KEYS))
    for col in sa.columns:
        if sa[col].dtype == pl.Float64:
            np.testing.assert_allclose(sb[col].to_numpy(), sa[col].to_numpy(), rtol=0, atol=1e-9, equal_nan=True,
                                       err_msg=col)
    # the resident copy holds exactly the stored values: the statistics of the stored array agree too
    with negdb.connect(str(b)) as cat:
        from negdb.query.neuron import activations

        x = activations(cat, str(model), None, layer=1)
    assert x.dtype == np.dtype(store_dtype)
    from negdb.stats.compute import block_stats

    np.testing.assert_allclose(block_stats(x)["w_dist"], sb.filter(pl.col("layer") == 1)["w_dist"].to_numpy(),
                               rtol=0, atol=1e-9)


def test_resident_copies_only_when_they_fit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Over the memory budget the torch kernel reads the stored blocks instead (same values)."""
    model = save_tiny(tmp_path / "m", seed=4)
    used: list[bool] = []
    real = pipeline.layer_stats

    def spy(*args, **kwargs):
        used.append(args[7] is not None)
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "layer_stats", spy)
    monkeypatch.setattr(device, "fits", lambda *a: False)
    assert cli(tmp_path / "s", "ingest", "--model", str(model), "--stats-backend", "torch", *TINY).exit_code == 0
    assert used and not any(used)
    monkeypatch.undo()
    ref = tmp_path / "ref"
    assert cli(ref, "ingest", "--model", str(model), *TINY).exit_code == 0
    np.testing.assert_allclose(_stats(tmp_path / "s")["w_dist"].to_numpy(), _stats(ref)["w_dist"].to_numpy(),
                               rtol=0, atol=1e-9)


def test_forward_dtype_is_part_of_the_spec(tmp_path: Path) -> None:
    """A bfloat16 forward pass gives other statistics (another spec_id); float32 keeps the old spec ids."""
    old = StatSpec("exact", None, 100, 0, "float16")
    assert old.spec_id == StatSpec("exact", None, 100, 0, "float16", "float32").spec_id
    assert old.spec_id != StatSpec("exact", None, 100, 0, "float16", "bfloat16").spec_id
    model = save_tiny(tmp_path / "m", "llama", seed=5)
    store = tmp_path / "s"
    assert cli(store, "ingest", "--model", str(model), *TINY).exit_code == 0
    res = cli(store, "ingest", "--model", str(model), "--dtype", "bfloat16", "--activations", "none", *TINY)
    assert res.exit_code == 0, res.output
    with negdb.connect(str(store)) as cat:
        specs = dict(cat.sql("SELECT forward_dtype, spec_id FROM stat_specs").rows())
        per = cat.sql("SELECT spec_id, avg(w_dist) AS w FROM neuron_stats GROUP BY 1").rows()
        config = [json.loads(c)["dtype"] for c in cat.sql("SELECT config_json FROM runs")["config_json"]]
    assert set(specs) == {"float32", "bfloat16"} and len(set(specs.values())) == 2
    assert len(per) == 2 and per[0][1] != per[1][1]  # bfloat16 rounding moves the statistics
    assert sorted(config) == ["bfloat16", "float32"]


def test_bad_dtype_options(tmp_path: Path) -> None:
    model = save_tiny(tmp_path / "m", seed=6)
    assert_one_error(cli(tmp_path / "s", "ingest", "--model", str(model), "--dtype", "bfloat16", *TINY))
    with pytest.raises(BadArgument, match="stats_backend"):
        Resources(stats_backend="jax")
    with pytest.raises(BadArgument, match="dtype"):
        IngestSpec(model="x", dtype="int8")
    with pytest.raises(BadArgument, match="activations"):
        IngestSpec(model="x", dtype="bfloat16")
    assert IngestSpec(model="x", dtype="bfloat16", activations="none").dtype == "bfloat16"


def test_capture_keeps_the_stored_values_on_the_device() -> None:
    from negdb.models.capture import run_batch
    from negdb.models.loading import from_model
    from tests.tiny_models import tiny_input_ids, tiny_model

    lm = from_model(tiny_model("llama", seed=1))
    ids = tiny_input_ids(2, 8)
    cap = run_batch(lm, ids, [0, 1], out_dtype=torch.float16, keep_on_device=True)
    assert set(cap.device_preacts) == {0, 1}
    for layer in (0, 1):
        assert cap.device_preacts[layer].dtype == torch.float16
        assert torch.equal(cap.device_preacts[layer].cpu(), cap.preacts[layer])
    assert run_batch(lm, ids, [0]).device_preacts == {}
