"""negdb.ablate.evaluate: stored, keyed, resumable evaluations on a tiny model and a temporary store."""

from __future__ import annotations

import json
import math

import numpy as np
import polars as pl
import pytest
import torch

import negdb.ablate.evaluate as evmod
from negdb.ablate.evaluate import Target, evaluate, make_key
from negdb.ablate.interventions import apply, make_intervention
from negdb.evals import registry
from negdb.evals.run import ScoringRule, score_items, summarize
from negdb.models.loading import from_model
from negdb.store.layout import StoreLayout
from negdb.store.results import lookup
from tests.ablate_helpers import short_wikitext_loader
from tests.tiny_models import tiny_model, tiny_tokenizer



@pytest.fixture(autouse=True)
def short_wikitext(monkeypatch):
    """WikiText-2 cut to its first characters: tokenizing the whole test file takes seconds per evaluation, and
    every evaluation here reads at most a few hundred tokens of it."""
    load = short_wikitext_loader(registry.load_items)

    monkeypatch.setattr(registry, "load_items", load)


@pytest.fixture(scope="module")
def lm():
    return from_model(tiny_model("llama", seed=7), tiny_tokenizer())  # d_mlp 48, 3 layers, BOS policy "bos"


def _layout(tmp_path, name="store") -> StoreLayout:
    return StoreLayout(tmp_path / name).init()


BASE = Target("tiny", "final", None, None, None)


def _target(iv, set_id="set-a", revision="final"):
    return Target("tiny", revision, None, iv, set_id)


def _never():
    raise AssertionError("the model must not be loaded: the result is stored")


def _eval(layout, lm, target=BASE, bench="copa", rule=ScoringRule(), **kw):
    kw.setdefault("limit", 5)
    return evaluate(layout, target, bench, rule, get_lm=lambda: lm, progress=False, batch_tokens=512, **kw)


def _items(res) -> pl.DataFrame:
    return res.items().drop("result_id")


def test_stores_the_result_and_reads_it_back_without_the_model(lm, tmp_path):
    layout = _layout(tmp_path)
    res = _eval(layout, lm, limit=5)
    items = registry.load_items("copa", limit=5)
    direct = score_items(lm, items, ScoringRule())
    got = res.items().to_dicts()
    assert [r["item"] for r in got] == [it.index for it in items]
    for g, d in zip(got, direct):
        assert g["logprobs"] == pytest.approx(d["logprobs"], abs=1e-4)
        assert g["correct"] == d["correct"] and g["result_id"] == res.result_id
    row = res.row
    assert row["n_items"] == 5 and row["benchmark"] == "copa" and row["mode"] == "none"
    assert row["set_id"] is None and row["n_neurons"] == 0 and row["item_limit"] == 5 and row["sample_seed"] == 0
    assert row["primary_metric"] == "acc"
    assert row["primary_value"] == pytest.approx(np.mean([d["correct"] for d in direct]))
    assert row["seconds"] >= 0
    scoring = json.loads(row["scoring_json"])
    assert scoring["bos_policy"] == "lm-eval" and scoring["bos_token_id"] is None
    metrics = res.metrics()
    assert metrics.height == len(summarize(registry.get("copa"), direct))
    assert not (layout.root / "work" / f"eval-{res.result_id}").exists()  # scratch removed
    for table in ("eval_items", "eval_metrics", "eval_results"):
        assert (layout.table_dir(table) / f"{res.result_id}.parquet").exists()
    # a second call reads the stored result; get_lm is not called
    again = evaluate(layout, BASE, "copa", ScoringRule(), get_lm=_never, limit=5, progress=False)
    assert again.result_id == res.result_id and again.row == res.row
    assert lookup(layout, res.result_id).row == res.row
    # other keys are computed: a different limit needs the model
    with pytest.raises(AssertionError, match="must not be loaded"):
        evaluate(layout, BASE, "copa", ScoringRule(), get_lm=_never, limit=4, progress=False)


def test_grouped_benchmark_primary_is_macro(lm, tmp_path):
    layout = _layout(tmp_path)
    res = _eval(layout, lm, bench="blimp", limit=1)
    items = res.items()
    assert items.height == 67 and items["grp"].n_unique() == 67
    # with one item per paradigm the macro accuracy is the plain mean; check against the items directly
    assert res.row["primary_metric"] == "acc_sum"
    assert res.row["primary_value"] == pytest.approx(items["correct"].cast(pl.Float64).mean())
    m = res.metrics()
    macro = m.filter((pl.col("metric") == "acc_sum") & (pl.col("level") == "macro"))["value"][0]
    assert macro == pytest.approx(res.row["primary_value"])


def _text_ids(lm, limit):
    text = "\n".join(it.text for it in registry.load_items("wikitext2"))
    return lm.tokenizer(text, add_special_tokens=False)["input_ids"][:limit]


def _brute_ppl(lm, ids, window, bos):
    """Cut ``ids`` into windows (``window - 1`` text tokens after a BOS, else ``window``), one forward each."""
    step = window - 1 if bos is not None else window
    nll, positions = [], []
    for off in range(0, len(ids), step):
        seq = ([bos] if bos is not None else []) + ids[off:off + step]
        if len(seq) < 2:
            continue
        with torch.no_grad():
            lp = torch.log_softmax(lm.model(torch.tensor([seq])).logits[0].double(), -1)
        nll += [-float(lp[p, seq[p + 1]]) for p in range(len(seq) - 1)]
        positions += list(range(off if bos is not None else off + 1, off + len(seq) - (bos is not None)))
    return np.array(nll), positions


@pytest.mark.parametrize("bos", ["lm-eval", "model"])
def test_perplexity_result_equals_brute_force(lm, tmp_path, bos):
    layout = _layout(tmp_path)
    rule = ScoringRule(bos, window=32)
    res = _eval(layout, lm, bench="wikitext2", rule=rule, limit=150)
    bos_id = 0 if bos == "model" else None
    ids = _text_ids(lm, 150)
    nll, positions = _brute_ppl(lm, ids, 32, bos_id)
    assert res.row["primary_metric"] == "ppl"
    assert res.row["primary_value"] == pytest.approx(math.exp(nll.mean()), rel=1e-5)
    tokens = res.tokens().sort("window", "position")
    assert tokens["position"].to_list() == positions
    assert tokens["token_id"].to_list() == [ids[p] for p in positions]
    np.testing.assert_allclose(tokens["nll"].to_numpy(), nll, atol=1e-4)
    assert res.row["n_items"] == math.ceil(150 / (31 if bos_id is not None else 32))
    assert json.loads(res.row["scoring_json"])["window"] == 32


# ------------------------------------------------------------------------------------------ resume


class Boom(RuntimeError):
    pass


def _flaky(real, fail_on: int | None, calls: list):
    def wrapped(*a, **kw):
        calls.append(1)
        if fail_on is not None and len(calls) == fail_on:
            raise Boom("interrupted")
        return real(*a, **kw)
    return wrapped


def test_resume_reuses_finished_chunks(lm, tmp_path, monkeypatch):
    monkeypatch.setattr(evmod, "CHUNK_REQUESTS", 4)  # copa: 2 requests per item -> 2 items per chunk
    real = evmod.score_items
    layout = _layout(tmp_path)
    calls: list = []
    monkeypatch.setattr(evmod, "score_items", _flaky(real, 2, calls))
    with pytest.raises(Boom):
        _eval(layout, lm, limit=7)  # 4 chunks: 2, 2, 2, 1 items
    rid = make_key(BASE, "copa", ScoringRule(), 7, 0).result_id
    assert lookup(layout, rid) is None  # nothing published
    work = layout.root / "work" / f"eval-{rid}"
    assert len(list(work.glob("chunk-*.parquet"))) == 1  # only the first chunk was finished
    # resume: chunk 0 is read back, chunks 1..3 are computed
    calls.clear()
    monkeypatch.setattr(evmod, "score_items", _flaky(real, None, calls))
    loads = []
    res = evaluate(layout, BASE, "copa", ScoringRule(), get_lm=lambda: loads.append(1) or lm, limit=7,
                   progress=False)
    assert len(calls) == 3 and len(loads) == 1
    assert not work.exists()
    # the same numbers as an uninterrupted run in another store
    calls.clear()
    fresh = _eval(_layout(tmp_path, "other"), lm, limit=7)
    assert len(calls) == 4
    assert fresh.result_id == res.result_id
    a, b = _items(res), _items(fresh)
    assert a["item"].to_list() == b["item"].to_list() == sorted(set(a["item"].to_list()))
    assert a.drop("logprobs").equals(b.drop("logprobs"))
    np.testing.assert_allclose(np.array(a["logprobs"].to_list()), np.array(b["logprobs"].to_list()), atol=1e-6)
    ma, mb = (r.metrics().sort("metric", "level", "grp") for r in (res, fresh))
    assert ma.drop("value").equals(mb.drop("value"))
    np.testing.assert_allclose(ma["value"].to_numpy(), mb["value"].to_numpy(), atol=1e-12)
    assert res.row["primary_value"] == pytest.approx(fresh.row["primary_value"])


def test_resume_recomputes_an_incomplete_chunk(lm, tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    monkeypatch.setattr(evmod, "CHUNK_REQUESTS", 4)
    real = evmod.score_items
    layout = _layout(tmp_path)
    calls: list = []
    monkeypatch.setattr(evmod, "score_items", _flaky(real, 3, calls))
    with pytest.raises(Boom):
        _eval(layout, lm, limit=6)
    rid = make_key(BASE, "copa", ScoringRule(), 6, 0).result_id
    chunks = sorted((layout.root / "work" / f"eval-{rid}").glob("chunk-*.parquet"))
    assert len(chunks) == 2
    chunk = chunks[1]
    pq.write_table(pq.read_table(chunk).slice(0, 1), chunk)  # a damaged chunk: one row of two
    calls.clear()
    monkeypatch.setattr(evmod, "score_items", _flaky(real, None, calls))
    res = _eval(layout, lm, limit=6)
    assert len(calls) == 2  # chunk 1 again, and chunk 2
    assert res.items()["item"].to_list() == [it.index for it in registry.load_items("copa", limit=6)]


def test_perplexity_resume_reuses_windows_and_tokens(lm, tmp_path, monkeypatch):
    monkeypatch.setattr(evmod, "CHUNK_WINDOWS", 2)
    real = evmod.score_windows
    rule = ScoringRule(window=16)
    layout = _layout(tmp_path)
    calls: list = []
    monkeypatch.setattr(evmod, "score_windows", _flaky(real, 3, calls))
    with pytest.raises(Boom):
        _eval(layout, lm, bench="wikitext2", rule=rule, limit=100)  # 7 windows -> 4 chunks
    calls.clear()
    monkeypatch.setattr(evmod, "score_windows", _flaky(real, None, calls))
    res = _eval(layout, lm, bench="wikitext2", rule=rule, limit=100)
    assert len(calls) == 2
    fresh = _eval(_layout(tmp_path, "other"), lm, bench="wikitext2", rule=rule, limit=100)
    assert res.row["primary_value"] == pytest.approx(fresh.row["primary_value"], rel=1e-9)
    ta, tb = res.tokens().sort("position"), fresh.tokens().sort("position")
    assert ta.drop("nll").equals(tb.drop("nll"))
    np.testing.assert_allclose(ta["nll"].to_numpy(), tb["nll"].to_numpy(), atol=1e-9)
    assert ta.height == 100 - 7  # no BOS: the first token of each of the 7 windows is not predicted
    assert res.items()["item"].to_list() == list(range(7))


def test_resume_after_a_chunk_size_change_keeps_the_right_items(lm, tmp_path, monkeypatch):
    real = evmod.score_items
    layout = _layout(tmp_path)
    calls: list = []
    monkeypatch.setattr(evmod, "CHUNK_REQUESTS", 4)  # 2 items per chunk: (0, 2), (2, 4), (4, 6)
    monkeypatch.setattr(evmod, "score_items", _flaky(real, 3, calls))
    with pytest.raises(Boom):
        _eval(layout, lm, limit=6)  # chunk-00000 = items 0-1, chunk-00001 = items 2-3 are left in work/
    monkeypatch.setattr(evmod, "CHUNK_REQUESTS", 8)  # 4 items per chunk: (0, 4), (4, 6)
    monkeypatch.setattr(evmod, "score_items", real)
    res = _eval(layout, lm, limit=6)
    expect = [it.index for it in registry.load_items("copa", limit=6)]
    assert res.items()["item"].to_list() == expect


# ------------------------------------------------------------------------------------------ keys


def test_every_part_of_the_key_changes_the_result_id():
    iv = make_intervention("neg", {0: [1]})
    rule = ScoringRule()
    base = make_key(BASE, "copa", rule, 5, 0).result_id
    variants = {
        "mode": make_key(_target(make_intervention("pos", {0: [1]})), "copa", rule, 5, 0),
        "set": make_key(_target(iv, "set-b"), "copa", rule, 5, 0),
        "neg": make_key(_target(iv), "copa", rule, 5, 0),
        "limit": make_key(BASE, "copa", rule, 6, 0),
        "no-limit": make_key(BASE, "copa", rule, None, 0),
        "seed": make_key(BASE, "copa", rule, 5, 1),
        "bos": make_key(BASE, "copa", ScoringRule("model"), 5, 0),
        "bench": make_key(BASE, "boolq", rule, 5, 0),
        "revision": make_key(Target("tiny", "step1", None, None, None), "copa", rule, 5, 0),
        "commit": make_key(Target("tiny", "final", "abc", None, None), "copa", rule, 5, 0),
        "model": make_key(Target("other", "final", None, None, None), "copa", rule, 5, 0),
    }
    ids = [base] + [k.result_id for k in variants.values()]
    assert len(set(ids)) == len(ids)
    # the key holds the mode and the set, not the intervention object: same set and mode -> same id
    assert make_key(_target(make_intervention("neg", {0: [1]})), "copa", rule, 5, 0).result_id == variants["neg"].result_id
    # an intervention without a set id is the baseline
    assert make_key(Target("tiny", "final", None, iv, None), "copa", rule, 5, 0).result_id == base
    # the sample seed only matters with a limit; the window only for perplexity
    assert make_key(BASE, "copa", rule, None, 0).result_id == make_key(BASE, "copa", rule, None, 3).result_id
    assert make_key(BASE, "copa", rule, 5, 0).result_id == make_key(BASE, "copa", ScoringRule(window=8), 5, 0).result_id
    assert (make_key(BASE, "wikitext2", rule, 100, 0).result_id
            != make_key(BASE, "wikitext2", ScoringRule(window=8), 100, 0).result_id)


def test_different_keys_are_stored_apart(lm, tmp_path):
    layout = _layout(tmp_path)
    a = _eval(layout, lm, limit=3, seed=0)
    b = _eval(layout, lm, limit=3, seed=1)
    c = _eval(layout, lm, limit=3, seed=0, rule=ScoringRule("model"))
    assert len({a.result_id, b.result_id, c.result_id}) == 3
    assert a.items()["item"].to_list() == [it.index for it in registry.load_items("copa", limit=3, seed=0)]
    assert b.items()["item"].to_list() == [it.index for it in registry.load_items("copa", limit=3, seed=1)]
    assert a.items()["item"].to_list() != b.items()["item"].to_list()
    # BOS policy "model" prefixes BOS (id 0) on the llama tiny model: other scores, recorded in the row
    assert c.items()["item"].to_list() == a.items()["item"].to_list()
    assert not np.allclose(np.array(c.items()["logprobs"].to_list()), np.array(a.items()["logprobs"].to_list()))
    assert json.loads(c.row["scoring_json"])["bos_token_id"] == 0 and set(c.items()["prefix_id"]) == {0}
    assert len(list(layout.table_dir("eval_results").glob("*.parquet"))) == 3


# ------------------------------------------------------------------------------------------ interventions


def test_empty_set_is_numerically_the_baseline(lm, tmp_path):
    layout = _layout(tmp_path)
    base = _eval(layout, lm, limit=4)
    empty = _eval(layout, lm, target=_target(make_intervention("neg", {}), "empty-set"), limit=4)
    assert empty.result_id != base.result_id and empty.row["mode"] == "neg" and empty.row["n_neurons"] == 0
    assert empty.row["set_id"] == "empty-set"
    assert _items(empty).equals(_items(base))
    assert empty.row["primary_value"] == base.row["primary_value"]


@pytest.mark.parametrize("mode", ["both", "signflip"])
def test_intervention_is_applied_during_scoring_and_removed_after(lm, tmp_path, mode):
    layout = _layout(tmp_path)
    iv = make_intervention(mode, {0: list(range(0, 48, 2)), 2: list(range(30))})
    base = _eval(layout, lm, limit=4)
    res = _eval(layout, lm, target=_target(iv, f"set-{mode}"), limit=4)
    items = registry.load_items("copa", limit=4)
    with apply(lm, iv):
        direct = score_items(lm, items, ScoringRule())
    got = np.array(res.items()["logprobs"].to_list())
    np.testing.assert_allclose(got, np.array([d["logprobs"] for d in direct]), atol=1e-4)
    assert not np.allclose(got, np.array(base.items()["logprobs"].to_list()), atol=1e-3)
    assert res.row["n_neurons"] == iv.size == 24 + 30 and res.row["mode"] == mode
    # no hook left behind: the baseline scores are unchanged afterwards
    after = score_items(lm, items, ScoringRule())
    np.testing.assert_allclose(np.array([d["logprobs"] for d in after]),
                               np.array(base.items()["logprobs"].to_list()), atol=1e-4)


def test_hooks_are_removed_when_scoring_fails(lm, tmp_path, monkeypatch):
    layout = _layout(tmp_path)
    n0 = sum(len(m._forward_hooks) for m in lm.model.modules())
    monkeypatch.setattr(evmod, "score_items", _flaky(evmod.score_items, 1, []))
    with pytest.raises(Boom):
        _eval(layout, lm, target=_target(make_intervention("neg", {1: [0, 1, 2]}), "s"), limit=2)
    assert sum(len(m._forward_hooks) for m in lm.model.modules()) == n0


# ------------------------------------------------------------------------------------------ concurrency


def test_concurrent_callers_compute_once(lm, tmp_path):
    """The per-result lock: a second caller waits for the first and reads its result (no second model load)."""
    import threading
    import time

    layout = _layout(tmp_path)
    loads: list = []
    inside = threading.Event()

    def slow_lm():
        loads.append(threading.current_thread().name)
        inside.set()
        time.sleep(0.5)  # holding the lock, before anything is stored
        return lm

    got = {}

    def worker(name):
        got[name] = evaluate(layout, BASE, "copa", ScoringRule(), get_lm=slow_lm, limit=3, progress=False)

    first = threading.Thread(target=worker, args=("a",), name="a")
    first.start()
    assert inside.wait(30)
    second = threading.Thread(target=worker, args=("b",), name="b")
    second.start()
    first.join(60)
    second.join(60)
    assert loads == ["a"]
    assert got["a"].result_id == got["b"].result_id and got["a"].row == got["b"].row


# ------------------------------------------------------------------------------------------ real model


@pytest.mark.slow
def test_smollm2_stored_perplexity_and_ablation(smollm2, tmp_path):
    layout = _layout(tmp_path)
    rule = ScoringRule("lm-eval", window=128)
    target = Target("smollm2-135m", "final", smollm2.commit, None, None)
    base = evaluate(layout, target, "wikitext2", rule, get_lm=lambda: smollm2, limit=384, progress=False)
    ids = _text_ids(smollm2, 384)
    nll, _ = _brute_ppl(smollm2, ids, 128, None)
    assert base.row["primary_value"] == pytest.approx(math.exp(nll.mean()), rel=1e-4)
    assert 5 < base.row["primary_value"] < 200  # a trained model on English text
    # zeroing every pre-activation of layer 0 hurts; the stored result says so
    iv = make_intervention("both", {0: range(smollm2.d_mlp)})
    hurt = evaluate(layout, _target(iv, "all-of-layer-0"), "wikitext2", rule, get_lm=lambda: smollm2, limit=384,
                    progress=False)
    assert hurt.row["primary_value"] > 1.2 * base.row["primary_value"]
    assert hurt.row["n_neurons"] == smollm2.d_mlp
