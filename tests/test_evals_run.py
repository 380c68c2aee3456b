"""negdb.evals.run and negdb.evals.windows: item rows, metric rows and perplexity windows against references
computed here (hand-written aggregation, direct score_continuations, unbatched forward passes)."""

from __future__ import annotations

import json
import math
from collections import defaultdict

import numpy as np
import pytest
import torch

from negdb.errors import BadArgument
from negdb.evals import registry
from negdb.evals import run as runmod
from negdb.evals.registry import BenchmarkSpec, Item
from negdb.evals.run import ScoringRule, primary, score_items, score_windows, summarize
from negdb.evals.scoring import ContinuationScore, perplexity, score_continuations
from negdb.evals.windows import Window, plan_windows, ppl_from, window_nll
from negdb.models.loading import from_model
from tests.tiny_models import SENTENCES, tiny_model, tiny_tokenizer

# ------------------------------------------------------------------------------------------ summarize


def _mp_rows(seed: int = 0):
    """Minimal-pair item rows: three groups of unequal size, two meta fields (one missing on some items)."""
    rng = np.random.default_rng(seed)
    groups = ["g_a"] * 2 + ["g_b"] * 5 + ["g_c"] * 3
    rows = []
    for i, g in enumerate(groups):
        meta = {"uid": g, "field": "syntax" if i % 3 else "morphology"}
        if i % 4:
            meta["term"] = f"t{i % 2}"
        rows.append({"benchmark": "mp", "item": i, "item_id": f"p{i}", "grp": g,
                     "meta_json": json.dumps(meta, sort_keys=True), "correct": bool(rng.random() < 0.5),
                     "correct_alt": bool(rng.random() < 0.5), "logprobs": [-1.0, -2.0], "n_tokens": [3, 4],
                     "greedy": [False, False], "prefix_id": None})
    # make micro != macro for sure
    rows[0]["correct"] = rows[1]["correct"] = True
    for r in rows[2:7]:
        r["correct"] = False
    return rows


MP_SPEC = BenchmarkSpec(name="mp", kind="minimal_pairs", files=("x",), fields={}, metrics=("acc_sum", "acc_mean"),
                        group="uid", meta=("field", "uid", "term"))


def _by_hand(rows, column: str, group: str, meta_keys) -> dict[tuple[str, str | None], tuple[float, int]]:
    """{(level, grp): (value, n)} computed with loops: overall, macro over ``group``, every level's groups."""
    vals = [1.0 if r[column] else 0.0 for r in rows]
    out = {("overall", None): (sum(vals) / len(vals), len(vals))}
    buckets: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r, v in zip(rows, vals):
        buckets[group][r["grp"]].append(v)
        meta = json.loads(r["meta_json"]) if r["meta_json"] else {}
        for k in meta_keys:
            if k != group and k in meta:
                buckets[k][meta[k]].append(v)
    means = [sum(v) / len(v) for v in buckets[group].values()]
    out[("macro", None)] = (sum(means) / len(means), len(vals))
    for level, groups in buckets.items():
        for g, v in groups.items():
            out[(level, g)] = (sum(v) / len(v), len(v))
    return out


def _as_dict(metrics, metric: str):
    got = {}
    for r in metrics:
        if r["metric"] == metric:
            key = (r["level"], r["grp"])
            assert key not in got, f"duplicate metric row {key}"
            got[key] = (r["value"], r["n"])
    return got


def test_summarize_minimal_pairs_every_level_by_hand():
    rows = _mp_rows()
    metrics = summarize(MP_SPEC, rows)
    assert {r["benchmark"] for r in metrics} == {"mp"}
    for metric, column in (("acc_sum", "correct"), ("acc_mean", "correct_alt")):
        got = _as_dict(metrics, metric)
        ref = _by_hand(rows, column, "uid", MP_SPEC.meta)
        assert set(got) == set(ref)
        for key, (value, n) in ref.items():
            assert got[key][0] == pytest.approx(value, abs=1e-12), (metric, key)
            assert got[key][1] == n, (metric, key)
    acc = _as_dict(metrics, "acc_sum")
    assert abs(acc[("macro", None)][0] - acc[("overall", None)][0]) > 0.05  # macro and micro really differ here
    assert ("term", "t1") in acc and acc[("term", "t1")][1] < len(rows)  # items without the key are left out
    # the primary metric is the first of the spec, at the macro level
    assert primary(MP_SPEC, metrics) == ("acc_sum", pytest.approx(acc[("macro", None)][0]))


def test_summarize_real_blimp_and_tse_specs():
    rows = _mp_rows(3)
    blimp = registry.get("blimp")  # group UID, meta field, linguistics_term, UID
    for r in rows:
        m = json.loads(r["meta_json"])
        r["meta_json"] = json.dumps({"UID": m["uid"], "field": m["field"], "linguistics_term": m.get("term", "x")})
    got = _as_dict(summarize(blimp, rows), "acc_sum")
    ref = _by_hand(rows, "correct", "UID", blimp.meta)
    assert {lvl for lvl, _ in got} == {"overall", "macro", "UID", "field", "linguistics_term"}
    assert set(got) == set(ref)
    for key, (value, n) in ref.items():
        assert got[key][0] == pytest.approx(value, abs=1e-12) and got[key][1] == n, key
    tse = registry.get("tse")  # acc_mean (correct_alt) is its primary metric
    name, value = primary(tse, summarize(tse, rows))
    assert name == "acc_mean"
    assert value == pytest.approx(_by_hand(rows, "correct_alt", "phenomenon", ())[("macro", None)][0])


@pytest.mark.parametrize("bench", ["arc_easy", "copa", "winogrande"])
def test_summarize_choices_overall_only(bench):
    spec = registry.get(bench)
    rng = np.random.default_rng(1)
    rows = [{"benchmark": bench, "item": i, "item_id": str(i), "grp": None, "meta_json": None,
             "correct": bool(rng.random() < 0.4), "correct_alt": bool(rng.random() < 0.6),
             "logprobs": [-1.0, -2.0], "n_tokens": [1, 1], "greedy": [False, False], "prefix_id": None}
            for i in range(17)]
    metrics = summarize(spec, rows)
    assert [(r["metric"], r["level"]) for r in metrics] == [(m, "overall") for m in spec.metrics]
    for r in metrics:
        col = "correct" if r["metric"] == "acc" else "correct_alt"
        assert r["value"] == pytest.approx(sum(x[col] for x in rows) / 17) and r["n"] == 17
    assert primary(spec, metrics)[0] == spec.metrics[0]


def test_summarize_perplexity_and_lambada():
    nll, n = [30.0, 41.5, 5.25], [10, 13, 2]
    rows = [{"benchmark": "wikitext2", "item": i, "logprobs": [-v], "n_tokens": [k], "correct": None,
             "correct_alt": None, "grp": None, "meta_json": None} for i, (v, k) in enumerate(zip(nll, n))]
    got = {r["metric"]: r for r in summarize(registry.get("wikitext2"), rows)}
    assert got["ppl"]["value"] == pytest.approx(math.exp(sum(nll) / sum(n)))
    assert got["ppl"]["n"] == sum(n)
    assert got["nll"]["value"] == pytest.approx(sum(nll) / sum(n))
    assert primary(registry.get("wikitext2"), list(got.values())) == ("ppl", pytest.approx(got["ppl"]["value"]))
    # LAMBADA: acc = greedy share; ppl = exp(-mean over items of the last word's log-prob), whatever its tokens
    lrows = [{"benchmark": "lambada_openai", "item": i, "logprobs": [-v], "n_tokens": [k], "correct": i != 1,
              "correct_alt": None, "grp": None, "meta_json": None} for i, (v, k) in enumerate(zip(nll, n))]
    got = {r["metric"]: r for r in summarize(registry.get("lambada_openai"), lrows)}
    assert got["acc"]["value"] == pytest.approx(2 / 3)
    assert got["ppl"]["value"] == pytest.approx(math.exp(sum(nll) / 3)) and got["ppl"]["n"] == 3


def test_summarize_refuses_no_items():
    with pytest.raises(BadArgument):
        summarize(registry.get("copa"), [])


def test_ppl_from():
    assert ppl_from(6.0, 3) == pytest.approx(math.exp(2.0))
    assert math.isnan(ppl_from(1.0, 0))


# ------------------------------------------------------------------------------------------ score_items


@pytest.fixture(scope="module")
def lm():
    # llama: its family BOS policy is "bos" (id 0), so the two ScoringRules differ
    return from_model(tiny_model("llama", seed=4), tiny_tokenizer())


@pytest.fixture(scope="module")
def items():
    out = registry.load_items("blimp", limit=1)[:6]
    for name in ("copa", "arc_easy", "winogrande", "lambada_openai"):
        out += registry.load_items(name, limit=3, seed=2)
    return out


def _first_argmax(xs) -> int:
    best = 0
    for i, x in enumerate(xs):
        if x > xs[best]:
            best = i
    return best


def _decisions(item: Item, scores: list[ContinuationScore]) -> tuple[bool, bool | None]:
    lp = [s.logprob_sum for s in scores]
    if item.kind == "minimal_pairs":  # ties count as wrong
        return lp[0] > lp[1], lp[0] / scores[0].n_tokens > lp[1] / scores[1].n_tokens
    if item.kind == "multiple_choice":
        return (_first_argmax(lp) == item.gold,
                _first_argmax([v / len(c) for v, c in zip(lp, item.choices)]) == item.gold)
    if item.kind == "partial":
        return _first_argmax(lp) == item.gold, None
    assert item.kind == "last_word"
    return scores[0].is_greedy, None


@pytest.mark.parametrize("bos", ["lm-eval", "model"])
def test_score_items_equals_direct_scores_and_hand_decisions(lm, items, bos):
    rule = ScoringRule(bos)
    prefix = None if bos == "lm-eval" else 0
    assert rule.bos_id(lm) == prefix
    rows = score_items(lm, items, rule, batch_tokens=256)
    assert len(rows) == len(items)
    for it, row in zip(items, rows):
        ref = score_continuations(lm, list(it.requests), bos=prefix)
        correct, alt = _decisions(it, ref)
        assert row["benchmark"] == it.benchmark and row["item"] == it.index and row["item_id"] == it.id
        assert row["grp"] == it.group
        assert row["meta_json"] == (json.dumps(it.meta, sort_keys=True) if it.meta else None)
        assert row["logprobs"] == pytest.approx([s.logprob_sum for s in ref], abs=1e-4)
        assert row["n_tokens"] == [s.n_tokens for s in ref]
        assert row["greedy"] == [s.is_greedy for s in ref]
        assert row["prefix_id"] == ref[0].prefix_id
        assert row["correct"] == correct and row["correct_alt"] == alt, it
    # blimp has an empty context: lm-eval prefixes the tokenizer's BOS (0) there
    assert rows[0]["prefix_id"] == 0


def test_score_items_is_batch_and_order_invariant(lm, items):
    rule = ScoringRule()
    a = score_items(lm, items, rule, batch_tokens=1)
    b = score_items(lm, items, rule, batch_tokens=100_000)
    rev = score_items(lm, items[::-1], rule, batch_tokens=64)[::-1]
    for x, y, z in zip(a, b, rev):
        assert y["logprobs"] == pytest.approx(x["logprobs"], abs=1e-4)
        assert z["logprobs"] == pytest.approx(x["logprobs"], abs=1e-4)
        assert x["item"] == y["item"] == z["item"]


def test_decision_rules_on_crafted_scores(monkeypatch):
    """Ties: wrong for pairs, to the first choice for choices; acc_norm divides by characters, not tokens."""
    def item(kind, n_req, choices=(), gold=0):
        return Item("x", kind, 0, "0", None, {}, tuple(("c", f" r{i}") for i in range(n_req)), tuple(choices), gold)

    cases = [
        (item("minimal_pairs", 2, ("a", "b")), [(-5.0, 2), (-5.0, 2)], (False, False)),  # tie: wrong
        (item("minimal_pairs", 2, ("a", "b")), [(-6.0, 3), (-5.0, 2)], (False, True)),  # sum vs mean disagree
        # a tie goes to the first choice: choice 0 wins, gold 1 is wrong (normalised: -2 vs -4 vs -2.25)
        (item("multiple_choice", 3, ("aa", "b", "cccc"), gold=1), [(-4.0, 1), (-4.0, 1), (-9.0, 1)], (False, False)),
        # acc_norm: -4/2 = -2 vs -4/1 = -4 vs -6/4 = -1.5 -> choice 2 (the longest) wins when normalised
        (item("multiple_choice", 3, ("aa", "b", "cccc"), gold=2), [(-4.0, 9), (-4.0, 1), (-6.0, 1)], (False, True)),
        (item("partial", 2, ("x", "y"), gold=1), [(-3.0, 1), (-2.0, 1)], (True, None)),
        (item("last_word", 1, ("w",)), [(-1.0, 2)], (False, None)),
    ]
    for it, scores, (correct, alt) in cases:
        fake = [ContinuationScore(lp, n, False) for lp, n in scores]
        monkeypatch.setattr(runmod, "score_continuations", lambda lm_, reqs, bos, batch_tokens, _f=fake: _f)
        (row,) = score_items(object(), [it], ScoringRule())
        assert (row["correct"], row["correct_alt"]) == (correct, alt), it.kind


# ------------------------------------------------------------------------------------------ windows

TEXT = " ".join(SENTENCES * 4)


def _ids(lm) -> list[int]:
    return lm.tokenizer(TEXT, add_special_tokens=False)["input_ids"]


def _brute(lm, windows, bos):
    """Per window: one unpadded forward of [bos] + ids, log_softmax in float64, NLL of every next token."""
    out = []
    for w in windows:
        seq = ([bos] if bos is not None else []) + list(w.ids)
        with torch.no_grad():
            logits = lm.model(torch.tensor([seq])).logits[0].double()
        lp = torch.log_softmax(logits, -1)
        out.append(np.array([-float(lp[p, seq[p + 1]]) for p in range(len(seq) - 1)]))
    return out


@pytest.mark.parametrize("bos", [None, 0])
@pytest.mark.parametrize("window", [16, 29])
def test_window_nll_equals_perplexity_and_brute_force(lm, bos, window):
    ids = _ids(lm)
    windows = plan_windows(ids, window=window, bos_id=bos)
    nll = window_nll(lm, windows, bos_id=bos, batch_tokens=70)
    ref = _brute(lm, windows, bos)
    for got, want in zip(nll, ref, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
    res = perplexity(lm, TEXT, bos=bos, window=window)
    total = sum(float(x.sum()) for x in nll)
    n = sum(x.size for x in nll)
    assert n == res.n_predicted
    assert total == pytest.approx(res.nll_sum, abs=1e-3)
    per_token = np.full(len(ids), np.nan)
    for w, x in zip(windows, nll):
        first = w.offset if bos is not None else w.offset + 1
        per_token[first:first + x.size] = x
    np.testing.assert_allclose(per_token, res.per_token_nll, atol=1e-4, equal_nan=True)


@pytest.mark.parametrize("bos", [None, 0])
def test_windows_cover_the_text_once(bos):
    ids = list(range(1, 50))  # 49 tokens
    window = 8
    ws = plan_windows(ids, window=window, bos_id=bos)
    step = window - 1 if bos is not None else window
    assert [w.offset for w in ws] == list(range(0, 49, step))[:len(ws)]
    assert [w.index for w in ws] == list(range(len(ws)))
    assert all(len(w.ids) + (bos is not None) <= window for w in ws)
    assert [t for w in ws for t in w.ids] == ids[: sum(len(w.ids) for w in ws)]
    if bos is None:  # 49 = 6*8 + 1: the one-token tail has nothing to predict and is dropped
        assert sum(len(w.ids) for w in ws) == 48
    else:  # 49 = 7*7: all kept
        assert sum(len(w.ids) for w in ws) == 49
    # a token budget keeps only the first tokens
    cut = plan_windows(ids, window=window, bos_id=bos, max_tokens=20)
    assert [t for w in cut for t in w.ids] == ids[:20]
    with pytest.raises(BadArgument):
        plan_windows(ids, window=1, bos_id=None)


@pytest.mark.parametrize("bos", ["lm-eval", "model"])
def test_score_windows_rows(lm, bos):
    rule = ScoringRule(bos, window=16)
    bos_id = rule.bos_id(lm)
    ids = _ids(lm)
    windows = plan_windows(ids, window=rule.window_for(lm), bos_id=bos_id, max_tokens=90)
    items, tokens = score_windows(lm, "wikitext2", windows, rule, batch_tokens=40)
    ref = _brute(lm, windows, bos_id)
    assert [it["item"] for it in items] == [w.index for w in windows]
    assert [it["item_id"] for it in items] == [str(w.offset) for w in windows]
    for it, r in zip(items, ref):
        assert it["logprobs"] == pytest.approx([-r.sum()], abs=1e-3)
        assert it["n_tokens"] == [r.size] and it["prefix_id"] == bos_id
    # token rows: every predicted position once, the right token, its loss
    positions = [t["position"] for t in tokens]
    skip = 0 if bos_id is not None else 1  # without a BOS a window's first token is not predicted
    expect = [p for w in windows for p in range(w.offset + skip, w.offset + len(w.ids))]
    assert positions == expect
    assert len(set(positions)) == len(positions)
    assert all(t["token_id"] == ids[t["position"]] for t in tokens)
    np.testing.assert_allclose([t["nll"] for t in tokens], np.concatenate(ref), atol=1e-4)
    assert sum(it["n_tokens"][0] for it in items) == len(tokens)
    assert max(positions) == 89


def test_window_nll_batch_invariance(lm):
    windows = plan_windows(_ids(lm), window=23, bos_id=None)
    runs = [window_nll(lm, windows, bos_id=None, batch_tokens=b) for b in (1, 23, 50, 100_000)]
    for other in runs[1:]:
        for x, y in zip(runs[0], other, strict=True):
            np.testing.assert_allclose(y, x, atol=1e-4, rtol=0)


def test_scoring_rule():
    gpt = from_model(tiny_model("gpt_neox"), tiny_tokenizer())  # family BOS policy: none
    assert ScoringRule("model").bos_id(gpt) is None
    assert ScoringRule().window_for(gpt) == 128 and ScoringRule(window=9).window_for(gpt) == 9
    with pytest.raises(BadArgument):
        ScoringRule("always")
    with pytest.raises(BadArgument):
        ScoringRule(window=1)


def test_score_windows_single_window_matches_window_class(lm):
    # a hand-made Window, offset in the middle of a text: positions are text positions
    w = Window(0, 40, tuple(_ids(lm)[40:52]))
    items, tokens = score_windows(lm, "wikitext2", [w], ScoringRule())
    assert [t["position"] for t in tokens] == list(range(41, 52))
    assert items[0]["n_tokens"] == [11]
