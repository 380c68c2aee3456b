"""The forward dtype of an evaluation: recorded with every result, part of the key when not float32; device and
batch size never are. bfloat16 runs on the CPU here (slow there, but the same code path as on a GPU)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from negdb.ablate.evaluate import Target, evaluate, make_key
from negdb.ablate.experiment import ablation_key
from negdb.ablate.options import AblateSpec
from negdb.query.setspec import SetSpec
from negdb.errors import BadArgument
from negdb.evals.options import Scoring
from negdb.evals import registry
from negdb.evals.run import ScoringRule
from negdb.models.loading import from_model
from negdb.store.layout import StoreLayout
from negdb.store.results import EvalKey
from tests.ablate_helpers import short_wikitext_loader
from tests.tiny_models import tiny_model, tiny_tokenizer

BASE = Target("tiny", "final", None, None, None)


@pytest.fixture(autouse=True)
def short_wikitext(monkeypatch):
    monkeypatch.setattr(registry, "load_items", short_wikitext_loader(registry.load_items))


def _lm(dtype: torch.dtype):
    return from_model(tiny_model("llama", seed=7).to(dtype), tiny_tokenizer())


def test_float32_keys_are_the_keys_from_before_dtypes() -> None:
    key = make_key(BASE, "copa", ScoringRule(), 5, 0)
    assert "dtype" not in dict(key.scoring)
    before = EvalKey("tiny", "final", None, "none", None, "copa", registry.spec_hash("copa"), (("bos", "lm-eval"),),
                     5, 0)
    assert key.result_id == before.result_id
    bf16 = make_key(BASE, "copa", ScoringRule(dtype="bfloat16"), 5, 0)
    assert dict(bf16.scoring)["dtype"] == "bfloat16" and bf16.result_id != key.result_id
    ppl = make_key(BASE, "wikitext2", ScoringRule(dtype="float16"), 100, 0)
    assert ppl.result_id != make_key(BASE, "wikitext2", ScoringRule(), 100, 0).result_id


def test_device_and_batch_size_are_not_in_the_keys() -> None:
    a = Scoring(batch_tokens=512)
    assert a.rule() == Scoring(batch_tokens=65536).rule() and a.key() == Scoring(batch_tokens=65536).key()
    assert "dtype" not in a.key() and a.key() == {"bos": "lm-eval", "window": None}  # ids from before dtypes
    bf16 = Scoring(dtype="bfloat16")
    assert bf16.key()["dtype"] == "bfloat16" and bf16.rule().dtype == "bfloat16"
    spec = AblateSpec(neurons=SetSpec(model="m", top=0.01), evals=["blimp"], scoring=a)
    k32 = ablation_key("m", "final", None, "set", spec, ["blimp"])
    k16 = ablation_key("m", "final", None, "set", replace(spec, scoring=bf16), ["blimp"])
    assert k32 != k16 and k16["scoring"]["dtype"] == "bfloat16"
    with pytest.raises(BadArgument, match="dtype"):
        ScoringRule(dtype="int8")
    with pytest.raises(BadArgument, match="dtype"):
        Scoring(dtype="int8")


def test_bfloat16_result_is_another_result_and_records_its_dtype(tmp_path) -> None:
    layout = StoreLayout(tmp_path / "s").init()
    f32 = evaluate(layout, BASE, "copa", ScoringRule(), get_lm=lambda: _lm(torch.float32), limit=4, progress=False)
    bf16 = evaluate(layout, BASE, "copa", ScoringRule(dtype="bfloat16"), get_lm=lambda: _lm(torch.bfloat16), limit=4,
                    progress=False)
    assert f32.result_id != bf16.result_id
    assert json.loads(f32.row["scoring_json"])["dtype"] == "float32"
    assert json.loads(bf16.row["scoring_json"])["dtype"] == "bfloat16"
    a, b = f32.items()["logprobs"].to_list(), bf16.items()["logprobs"].to_list()
    assert a != b  # bfloat16 rounding moves the scores
    assert max(abs(x - y) for u, v in zip(a, b) for x, y in zip(u, v)) < 1.0


def test_a_model_in_another_dtype_than_the_rule_is_refused(tmp_path) -> None:
    layout = StoreLayout(tmp_path / "s").init()
    with pytest.raises(BadArgument, match="loaded in bfloat16"):
        evaluate(layout, BASE, "copa", ScoringRule(), get_lm=lambda: _lm(torch.bfloat16), limit=2, progress=False)
