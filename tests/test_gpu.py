"""The CUDA path against the CPU path (marked ``gpu``; skipped, with the reason, where no CUDA device exists).

Run on a GPU machine with ``pytest -m gpu`` (bench/device/run.sh does). What is checked:
- the torch statistics kernel on the GPU equals the numpy kernel on the CPU (to 1e-9; the issue asks 1e-5);
- ``negdb ingest --device cuda`` (statistics from the captured values kept on the GPU) equals ``--device cpu``
  to 1e-5, with float32 stored values, and with float16 ones up to the rounding of the stored values;
- evaluations under an ablation on the GPU and on the CPU: per-item decisions identical, or the differing items
  listed with their margins (all of them near ties);
- ``--dtype bfloat16`` on the GPU: ingest and evaluation run, record their dtype and are other results.

``NEGDB_GPU_TEST_DEVICE=cpu`` runs the same tests with the CPU standing in for the GPU (the rehearsal of
bench/device/run.sh does, so that the GPU run cannot fail on a trivial bug in these tests).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

import negdb
from negdb.ablate.evaluate import Target, evaluate
from negdb.ablate.interventions import make_intervention
from negdb.evals import registry
from negdb.evals.run import ScoringRule
from negdb.models.loading import from_model
from negdb.stats.compute import block_stats
from negdb.stats.mapping import draw_pairs
from negdb.stats.torch_block import block_stats_torch
from negdb.stats.wasserstein import NormalSampler
from negdb.store.layout import StoreLayout
from tests.ablate_helpers import short_wikitext_loader
from tests.ingest_helpers import TINY, cli, stats_frame
from tests.test_stats_torch import assert_same, block
from tests.tiny_models import save_tiny, tiny_model, tiny_tokenizer

DEV = os.environ.get("NEGDB_GPU_TEST_DEVICE", "cuda")
pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(DEV.startswith("cuda") and not torch.cuda.is_available(),
                                 reason="no CUDA device here (torch.cuda.is_available() is False); "
                                        "bench/device/run.sh runs these on a GPU")]
KEYS = ["model_id", "revision", "slice_id", "spec_id", "layer", "neuron"]


@pytest.mark.parametrize("reference", ["exact", "sample"])
def test_kernel_on_the_gpu_equals_numpy_on_the_cpu(reference: str) -> None:
    n = 16384
    x = np.concatenate([block(n, s) for s in range(4)], axis=1).astype(np.float16)
    a, b = draw_pairs(n, 4000, 0)
    d_in = np.random.default_rng(1).random(4000)
    samp = (lambda: NormalSampler(3, 1)) if reference == "sample" else (lambda: None)
    want = block_stats(x, reference=reference, sampler=samp(), pairs=(a, b), d_in=d_in)  # type: ignore[arg-type]
    got = block_stats_torch(torch.from_numpy(x).to(DEV), reference=reference, sampler=samp(),  # type: ignore
                            pairs=(a, b), d_in=d_in, budget_bytes=8 * n * 48)
    assert_same(got, want, atol=1e-9)


def _ingest(store: Path, model: Path, *args: str) -> None:
    res = cli(store, "ingest", "--model", str(model), *TINY, *args)
    assert res.exit_code == 0, res.output


def _compare(cpu: Path, gpu: Path, atol: float) -> None:
    a = stats_frame(cpu).sort(KEYS)
    b = stats_frame(gpu).sort(KEYS)
    assert a.select(KEYS).equals(b.select(KEYS)) and a.height > 0
    for col in ("mean", "std", "skew", "kurtosis", "q50", "frac_neg", "w_dist", "w_dist_neg", "w_dist_pos", "md"):
        np.testing.assert_allclose(b[col].to_numpy(), a[col].to_numpy(), rtol=0, atol=atol, equal_nan=True,
                                   err_msg=col)


@pytest.mark.parametrize("model_type", ["gpt_neox", "llama"])
def test_ingest_on_cuda_equals_cpu(tmp_path: Path, model_type: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from negdb.ingest import pipeline

    model = save_tiny(tmp_path / "m", model_type, seed=11)
    resident: list[bool] = []
    real = pipeline.layer_stats

    def spy(*args, **kwargs):
        resident.append(args[7] is not None and args[7].device.type == torch.device(DEV).type)
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "layer_stats", spy)
    _ingest(tmp_path / "cpu", model, "--device", "cpu", "--store-dtype", "float32")
    resident.clear()
    _ingest(tmp_path / "cuda", model, "--device", DEV, "--stats-backend", "torch", "--store-dtype", "float32")
    assert resident and all(resident)  # statistics from the values kept on the GPU
    _compare(tmp_path / "cpu", tmp_path / "cuda", atol=1e-5)


def test_ingest_on_cuda_from_stored_blocks_and_bfloat16(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the device copies do not fit, the GPU kernel reads the stored blocks; bfloat16 is another spec."""
    from negdb.ingest import device

    model = save_tiny(tmp_path / "m", "llama", seed=12)
    _ingest(tmp_path / "cpu", model, "--device", "cpu")
    monkeypatch.setattr(device, "fits", lambda *a: False)
    _ingest(tmp_path / "cuda", model, "--device", DEV, "--stats-backend", "torch")
    _compare(tmp_path / "cpu", tmp_path / "cuda", atol=2e-3)  # float16 stored values may round apart
    _ingest(tmp_path / "cuda", model, "--device", DEV, "--dtype", "bfloat16", "--activations", "none")
    with negdb.connect(str(tmp_path / "cuda")) as cat:
        assert sorted(cat.sql("SELECT forward_dtype FROM stat_specs")["forward_dtype"].to_list()) == [
            "bfloat16", "float32"]


def differing_items(a, b) -> list[tuple[int, float, float]]:
    """(item, margin on the CPU, margin on the GPU) of every item whose decision differs."""
    out = []
    for x, y in zip(a.items().iter_rows(named=True), b.items().iter_rows(named=True)):
        if x["correct"] != y["correct"]:
            out.append((x["item"], float(np.diff(x["logprobs"][:2])[0]), float(np.diff(y["logprobs"][:2])[0])))
    return out


@pytest.mark.parametrize("bench", ["blimp", "copa", "wikitext2"])
def test_evaluation_on_cuda_equals_cpu(tmp_path: Path, bench: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "load_items", short_wikitext_loader(registry.load_items))
    model = tiny_model("llama", seed=7)
    cpu = from_model(model, tiny_tokenizer())
    gpu = from_model(tiny_model("llama", seed=7).to(DEV), tiny_tokenizer())
    iv = make_intervention("neg", {0: [1, 5, 9], 2: [3]})
    for target in (Target("tiny", "final", None, None, None), Target("tiny", "final", None, iv, "s")):
        a = evaluate(StoreLayout(tmp_path / "cpu").init(), target, bench, ScoringRule(), get_lm=lambda: cpu,
                     limit=3 if bench != "wikitext2" else 300, progress=False)
        b = evaluate(StoreLayout(tmp_path / "gpu").init(), target, bench, ScoringRule(), get_lm=lambda: gpu,
                     limit=3 if bench != "wikitext2" else 300, progress=False)
        assert a.result_id == b.result_id  # the device is not part of the key
        if bench == "wikitext2":
            assert b.row["primary_value"] == pytest.approx(a.row["primary_value"], rel=1e-4)
            continue
        diff = differing_items(a, b)
        assert all(min(abs(m1), abs(m2)) < 1e-3 for _, m1, m2 in diff), diff  # only near ties may flip
        lp_a = np.concatenate([np.asarray(v) for v in a.items()["logprobs"].to_list()])
        lp_b = np.concatenate([np.asarray(v) for v in b.items()["logprobs"].to_list()])
        np.testing.assert_allclose(lp_b, lp_a, rtol=0, atol=1e-3)


@pytest.mark.slow
def test_smollm2_on_cuda(tmp_path: Path) -> None:
    """SmolLM2-135M: ingest on the GPU equals the CPU (float32 stored values), BLiMP decisions agree, and a bfloat16
    evaluation is stored apart with its dtype (its differing decisions are reported with their margins)."""
    from negdb.ablate.conditions import Loader

    store_c, store_g = tmp_path / "cpu", tmp_path / "gpu"
    args = ["--tokens", "2048", "--seq-len", "512", "--md-pairs", "500", "--layers", "0,15,29", "--quiet",
            "--store-dtype", "float32", "--activations", "none"]
    for store, dev in ((store_c, "cpu"), (store_g, DEV)):
        res = cli(store, "ingest", "--model", "smollm2-135m", "--device", dev, *args)
        assert res.exit_code == 0, res.output
    _compare(store_c, store_g, atol=1e-5)
    cpu = Loader("smollm2-135m", "final", "cpu", print)()
    gpu = Loader("smollm2-135m", "final", DEV, print)()
    bf16 = Loader("smollm2-135m", "final", DEV, print, "bfloat16")()
    base = Target("smollm2-135m", "final", None, None, None)
    res = {name: evaluate(StoreLayout(tmp_path / name).init(), base, "blimp", ScoringRule(dtype=dt),
                          get_lm=lambda lm=lm: lm, limit=5, progress=False)
           for name, lm, dt in (("c", cpu, "float32"), ("g", gpu, "float32"), ("b", bf16, "bfloat16"))}
    diff = differing_items(res["c"], res["g"])
    assert all(min(abs(m1), abs(m2)) < 1e-2 for _, m1, m2 in diff), diff
    assert json.loads(res["b"].row["scoring_json"])["dtype"] == "bfloat16"
    assert res["b"].result_id != res["c"].result_id
    flipped = differing_items(res["c"], res["b"])
    print(f"bfloat16 vs float32: {len(flipped)} of {res['c'].row['n_items']} BLiMP decisions differ "
          f"(item, margin float32, margin bfloat16): {flipped}")
