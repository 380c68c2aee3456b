"""Loading checkpoints: the offline hub cache, local folders, step runs, GGUF conversion, errors."""

from __future__ import annotations

import hashlib
import json
import time

import huggingface_hub.constants
import pytest
import torch

from negdb.config import cache_dir
from negdb.errors import ModelLoadError, UnknownModel
from negdb.models import loading
from negdb.models.capture import run_batch
from negdb.models.checkpoints import select
from negdb.models.loading import LoadedModel, convert_gguf, load, resolve_device
from negdb.models.registry import ModelSource, resolve
from tiny_models import make_hub_cache, save_step_run, save_tiny, tiny_input_ids, tiny_model


def _w(lm: LoadedModel) -> torch.Tensor:
    return lm.model.gpt_neox.layers[0].mlp.dense_h_to_4h.weight


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """A hand-built hub cache with EleutherAI/pythia-70m at step0 and step1000 (tiny GPT-NeoX weights)."""
    cache, commits = make_hub_cache(tmp_path, "EleutherAI/pythia-70m", ["step0", "step1000"])
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return commits


def test_hub_revisions_load_offline_with_their_commits(hub_cache):
    src = resolve("pythia-70m")
    loaded = {ck.revision: load(src, ck) for ck in select(src, "step0,step1000")}
    for i, (rev, lm) in enumerate(loaded.items()):
        assert lm.commit == hub_cache[rev]
        assert lm.checkpoint.revision == rev and lm.source is src
        # the revision was honoured: the weights are those saved for it (seed 1000 + position)
        assert torch.equal(_w(lm), tiny_model("gpt_neox", seed=1000 + i).gpt_neox.layers[0].mlp.dense_h_to_4h.weight)
        assert lm.family.name == "gpt_neox" and (lm.n_layers, lm.d_mlp, lm.d_model) == (3, 64, 32)
        assert not lm.model.training and not any(p.requires_grad for p in lm.model.parameters())
        assert lm.device == torch.device("cpu") and next(lm.model.parameters()).dtype == torch.float32
        assert lm.tokenizer.pad_token == lm.tokenizer.eos_token and lm.pad_from_eos
        assert lm.bos == "none" and lm.bos_token_id is None
    assert not torch.equal(_w(loaded["step0"]), _w(loaded["step1000"]))
    assert loaded["step1000"].checkpoint.tokens_seen == 1000 * 2_097_152


def test_arbitrary_hub_id_final_is_main(tmp_path, monkeypatch):
    cache, commits = make_hub_cache(tmp_path, "someorg/tiny", ["v1", "v2"], model_type="llama")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    src = resolve("someorg/tiny")
    lm = load(src, select(src, "final")[0])
    assert lm.commit == commits["v2"] and lm.family.name == "llama"
    assert lm.bos == "bos" and lm.bos_token_id == 0
    assert load(src, select(src, "v1")[0]).commit == commits["v1"]


def test_missing_from_cache_offline_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    src = resolve("pythia-70m")
    t0 = time.perf_counter()
    with pytest.raises(UnknownModel) as err:
        load(src, select(src, "step1000")[0])
    msg = str(err.value)
    assert "EleutherAI/pythia-70m" in msg and "step1000" in msg
    assert "not in the local Hugging Face cache" in msg and "--model" in msg and "HF_HOME" in msg
    assert "\n" not in msg
    assert time.perf_counter() - t0 < 10  # no network retries


def test_online_fallback_only_when_not_offline(monkeypatch):
    import transformers

    calls = []

    def fake_config(location, **kw):
        calls.append(kw.get("local_files_only", False))
        raise OSError("nope")

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", fake_config)
    monkeypatch.setattr(loading, "_offline", lambda: False)
    monkeypatch.setattr(loading, "hub_reachable", lambda timeout=2.0: True)
    src = resolve("pythia-70m")
    with pytest.raises(UnknownModel, match="hub is unreachable"):
        load(src, select(src, "final")[0])
    assert calls == [True, False]  # local cache first, then the hub
    calls.clear()
    monkeypatch.setattr(loading, "hub_reachable", lambda timeout=2.0: False)
    with pytest.raises(UnknownModel, match="hub is unreachable"):
        load(src, select(src, "final")[0])
    assert calls == [True]  # no answer from the hub: no online attempt (and none of its retries)
    calls.clear()
    monkeypatch.setattr(loading, "_offline", lambda: True)
    with pytest.raises(UnknownModel, match="not in the local Hugging Face cache"):
        load(src, select(src, "final")[0])
    assert calls == [True]


def test_unsupported_architecture_is_refused_before_the_weights(tmp_path, monkeypatch):
    from transformers import BertConfig

    folder = tmp_path / "bert"
    BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8).save_pretrained(folder)
    monkeypatch.setattr(loading, "_pretrained", lambda *a, **k: pytest.fail("weights were read"))
    src = resolve(str(folder))
    with pytest.raises(ModelLoadError, match="unsupported model type 'bert'"):
        load(src, select(src, "final")[0])


def test_local_folder(tmp_path):
    folder = save_tiny(tmp_path / "m", "opt", seed=7)
    src = resolve(str(folder))
    lm = load(src, select(src, "final")[0], device="auto" if not torch.cuda.is_available() else "cpu")
    assert src.kind == "local" and lm.commit is None and lm.family.name == "opt"
    assert lm.bos == "bos" and lm.bos_token_id == 0
    assert torch.equal(lm.model.model.decoder.layers[0].fc1.weight, tiny_model("opt", seed=7).model.decoder.layers[0].fc1.weight)
    cap = run_batch(lm, tiny_input_ids(), [2])
    assert cap.preacts[2].shape == (16, 64)


def test_step_run_folders(tmp_path):
    run = save_step_run(tmp_path, steps=[0, 1000])
    src = resolve(str(run))
    assert src.kind == "steps"
    cks = select(src, "all")
    assert [c.revision for c in cks] == ["step0", "step1000"]
    lms = [load(src, ck) for ck in cks]
    for ck, lm in zip(cks, lms):
        ref = tiny_model("gpt_neox", seed=ck.step).gpt_neox.layers[0].mlp.dense_h_to_4h.weight
        assert torch.equal(_w(lm), ref) and lm.commit is None
    assert not torch.equal(_w(lms[0]), _w(lms[1]))


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_gguf_cache_is_reused_and_a_failed_conversion_leaves_no_trace(tmp_path, monkeypatch):
    gguf = tmp_path / "x.gguf"
    gguf.write_bytes(b"not really gguf")
    src = ModelSource(model_id="x", kind="gguf", location=str(gguf))
    folder = tmp_path / "cache" / "models" / "x"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "negdb-gguf.json").write_text(json.dumps(loading._gguf_stamp(gguf)))
    assert convert_gguf(src, tmp_path / "cache") == folder  # fresh: no conversion attempted
    meta = {**loading._gguf_stamp(gguf), "gguf": "/elsewhere/x.gguf", "mtime_ns": 1,
            "sha256": hashlib.sha256(gguf.read_bytes()).hexdigest()}
    (folder / "negdb-gguf.json").write_text(json.dumps(meta))
    assert convert_gguf(src, tmp_path / "cache") == folder  # the same bytes installed elsewhere: still fresh

    import transformers

    def boom(*a, **k):
        raise RuntimeError("killed mid-conversion")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", boom)
    gguf.write_bytes(b"changed contents")  # stale now: size changed
    with pytest.raises(RuntimeError, match="killed"):
        convert_gguf(src, tmp_path / "cache")
    assert sorted(p.name for p in folder.parent.iterdir()) == ["x"]  # old cache intact, no partial folder
    assert (folder / "config.json").is_file()


@pytest.mark.slow
def test_smollm2_real_model(smollm2):
    lm = smollm2
    assert lm.source.model_id == "smollm2-135m" and lm.source.kind == "gguf"
    assert lm.family.name == "llama" and lm.config.model_type == "llama"
    assert (lm.n_layers, lm.d_mlp, lm.d_model) == (30, 1536, 576)
    assert lm.commit is None and lm.bos == "none" and lm.bos_token_id is None
    assert next(lm.model.parameters()).dtype == torch.float32
    assert lm.tokenizer.pad_token is not None and lm.tokenizer.eos_token == "<|im_end|>"
    meta = json.loads((loading._gguf_cache_folder(lm.source, cache_dir()) / "negdb-gguf.json").read_text())
    assert len(meta["sha256"]) == 64
    ids = lm.tokenizer(["The cat sat on the mat and looked at the dog."], return_tensors="pt").input_ids
    fired = []
    handle = lm.model.lm_head.register_forward_hook(lambda *a: fired.append(1))
    try:
        cap = run_batch(lm, ids, [0, 29], input_rows=torch.tensor([0, 1]))
    finally:
        handle.remove()
    assert not fired
    n = ids.shape[1]
    assert cap.preacts[29].shape == (n, 1536) and cap.preacts[29].dtype == torch.float16
    assert cap.inputs[0].shape == (2, 576)
    assert torch.isfinite(cap.preacts[29].float()).all()
