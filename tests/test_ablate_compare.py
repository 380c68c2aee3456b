"""negdb.ablate.compare on synthetic stored results: deltas and CIs against hand computations and brute-force
bootstraps (tests/ablate_helpers.py), seed averaging, summary rows, and the three renderings."""

from __future__ import annotations

import csv
import io
import json
import math

import numpy as np
import pytest

from negdb.ablate.compare import Condition, compare
from negdb.errors import BadArgument
from negdb.store.layout import StoreLayout
from tests.ablate_helpers import (choice_items, ci, ppl_reference, publish_synthetic, stratified_reference,
                                  window_items)

N_BOOT, SEED = 150, 7
BLIMP_GROUPS = ["g1"] * 4 + ["g2"] * 9 + ["g3"] * 3
TSE_GROUPS = ["p1"] * 6 + ["p2"] * 5
SUITE = {"copa": 12, "boolq": 9, "piqa": 10}
N_WIN, N_LAMBADA = 8, 10


def _bits(rng, n, p):
    return [bool(x) for x in rng.random(n) < p]


def _condition_data(seed: int, shift: float):
    """One condition's per-benchmark synthetic data; ``shift`` moves accuracies down and NLL up."""
    rng = np.random.default_rng(seed)
    data = {
        "blimp": {"correct": _bits(rng, len(BLIMP_GROUPS), 0.8 - shift), "groups": BLIMP_GROUPS},
        "tse": {"correct": _bits(rng, len(TSE_GROUPS), 0.7 - shift), "alt": _bits(rng, len(TSE_GROUPS), 0.75 - shift),
                "groups": TSE_GROUPS},
    }
    for bench, n in SUITE.items():
        data[bench] = {"correct": _bits(rng, n, 0.6 - shift), "alt": _bits(rng, n, 0.55 - shift)}
    tokens = np.random.default_rng(99).integers(10, 40, size=N_WIN)  # the same windows in every condition
    data["wikitext2"] = {"nll": list(tokens * (3.0 + shift + 0.2 * rng.random(N_WIN))), "n": list(tokens)}
    data["lambada_openai"] = {"nll": list(2.0 + shift + rng.random(N_LAMBADA)), "n": [1] * N_LAMBADA,
                              "greedy": _bits(rng, N_LAMBADA, 0.4 - shift)}
    return data


def _publish(layout, data, tag, mode="none", set_id=None):
    out = {}
    for bench, d in data.items():
        if "nll" in d:
            items = window_items(bench, d["nll"], d["n"], d.get("greedy"))
        else:
            items = choice_items(bench, d["correct"], d.get("alt"), d.get("groups"))
            if bench == "copa":  # copa has acc only: no second decision
                for it in items:
                    it["correct_alt"] = None
        out[bench] = [publish_synthetic(layout, bench, items, tag=tag, mode=mode, set_id=set_id)]
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    layout = StoreLayout(tmp_path_factory.mktemp("cmp")).init()
    base_d = _condition_data(0, 0.0)
    abl_d = _condition_data(1, 0.15)
    rand_d = [_condition_data(10 + s, 0.05) for s in range(3)]
    base = Condition("baseline", "baseline", _publish(layout, base_d, "b"))
    abl = Condition("ablation", "neg-ablation", _publish(layout, abl_d, "a", "neg", "S"), n_neurons=18)
    rand_res: dict[str, list] = {}
    for s, d in enumerate(rand_d):
        for bench, res in _publish(layout, d, f"r{s}", "neg", f"R{s}").items():
            rand_res.setdefault(bench, []).extend(res)
    rand = Condition("random", "random", rand_res, n_neurons=18, note="seeds 0..2")
    cmp = compare(base, [abl, rand], n_boot=N_BOOT, seed=SEED)
    return {"layout": layout, "base": base_d, "abl": abl_d, "rand": rand_d, "cmp": cmp,
            "conds": (base, abl, rand)}


def _row(cmp, bench, metric, cond):
    (r,) = [r for r in cmp.rows if (r.benchmark, r.metric, r.condition) == (bench, metric, cond)]
    return r


def _strata(cond_vals, base_vals, groups):
    """Per group (first-seen order), the paired per-item values."""
    order = list(dict.fromkeys(groups)) if groups else [None]
    out = []
    for g in order:
        idx = [i for i in range(len(base_vals)) if groups is None or groups[i] == g]
        out.append(([cond_vals[i] for i in idx], [base_vals[i] for i in idx]))
    return out


def _avg(seq_of_lists):
    return [sum(float(x) for x in col) / len(seq_of_lists) for col in zip(*seq_of_lists)]


CASES = [("blimp", "acc_sum", "correct"), ("tse", "acc_mean", "alt"), ("tse", "acc_sum", "correct"),
         ("copa", "acc", "correct"), ("boolq", "acc", "correct"), ("piqa", "acc", "correct"),
         ("piqa", "acc_norm", "alt"), ("lambada_openai", "acc", "greedy")]


def test_rows_cover_every_metric_and_summary(world):
    keys = {(r.benchmark, r.metric, r.condition) for r in world["cmp"].rows}
    per_cond = {(b, m) for b, m, _ in CASES} | {("wikitext2", "ppl"), ("lambada_openai", "ppl"),
                                                ("grammar", "mean"), ("suite", "mean")}
    assert keys == {(b, m, c) for b, m in per_cond for c in ("ablation", "random")}


@pytest.mark.parametrize(("bench", "metric", "field"), CASES)
def test_accuracy_rows_equal_hand_macro_and_brute_force_ci(world, bench, metric, field):
    groups = world["base"][bench].get("groups")
    base_vals = [float(x) for x in world["base"][bench][field]]
    for cond, vals in (("ablation", [float(x) for x in world["abl"][bench][field]]),
                       ("random", _avg([d[bench][field] for d in world["rand"]]))):
        strata = _strata(vals, base_vals, groups)
        r = _row(world["cmp"], bench, metric, cond)
        macro_c = sum(sum(a) / len(a) for a, _ in strata) / len(strata)
        macro_b = sum(sum(b) / len(b) for _, b in strata) / len(strata)
        assert r.baseline == pytest.approx(macro_b, abs=1e-12)
        assert r.value == pytest.approx(macro_c, abs=1e-12)
        assert r.delta == pytest.approx(macro_c - macro_b, abs=1e-12)
        d, boots = stratified_reference(strata, N_BOOT, SEED)
        assert (r.lo, r.hi) == pytest.approx(ci(boots), abs=1e-12)
        assert r.n == len(base_vals) and r.seeds == (3 if cond == "random" else 1)


def test_grouped_rows_are_macro_not_micro(world):
    r = _row(world["cmp"], "blimp", "acc_sum", "ablation")
    micro = np.mean(world["abl"]["blimp"]["correct"]) - np.mean(world["base"]["blimp"]["correct"])
    assert abs(r.delta - micro) > 1e-6


def test_random_seeds_are_averaged_per_item_not_one_seed(world):
    r = _row(world["cmp"], "copa", "acc", "random")
    per_seed = [np.mean(d["copa"]["correct"]) for d in world["rand"]]
    assert r.value == pytest.approx(np.mean(per_seed))  # ungrouped: mean of items averaged over seeds
    assert len(set(per_seed)) > 1 and all(abs(r.value - p) > 1e-9 for p in per_seed)


@pytest.mark.parametrize("bench", ["wikitext2", "lambada_openai"])
def test_perplexity_rows(world, bench):
    b = world["base"][bench]
    for cond, nll in (("ablation", world["abl"][bench]["nll"]),
                      ("random", _avg([d[bench]["nll"] for d in world["rand"]]))):
        r = _row(world["cmp"], bench, "ppl", cond)
        units = b["n"] if bench == "wikitext2" else [1] * len(nll)  # LAMBADA: per item, not per token
        base_ppl = math.exp(sum(b["nll"]) / sum(units))
        assert r.baseline == pytest.approx(base_ppl, rel=1e-12)
        assert r.value == pytest.approx(math.exp(sum(nll) / sum(units)), rel=1e-12)
        d, lo, hi = ppl_reference(list(nll), units, list(b["nll"]), units, N_BOOT, SEED)
        assert (r.delta, r.lo, r.hi) == pytest.approx((d, lo, hi), rel=1e-9, abs=1e-12)
        assert r.n == len(nll)
    # the stored perplexity (metrics row) is the same number
    base_res = world["conds"][0].results[bench][0]
    m = base_res.metrics()
    stored = m.filter(m["metric"] == "ppl")["value"][0]
    assert stored == pytest.approx(_row(world["cmp"], bench, "ppl", "ablation").baseline, rel=1e-12)


def _summary(world, cond, members):
    """Mean over the member benchmarks of their macro deltas; draws averaged with seeds SEED + i."""
    deltas, base, boots, n = [], [], [], 0
    for i, (bench, field) in enumerate(members):
        groups = world["base"][bench].get("groups")
        b = [float(x) for x in world["base"][bench][field]]
        c = ([float(x) for x in world["abl"][bench][field]] if cond == "ablation"
             else _avg([d[bench][field] for d in world["rand"]]))
        strata = _strata(c, b, groups)
        d, bo = stratified_reference(strata, N_BOOT, SEED + i)
        deltas.append(d)
        base.append(sum(sum(y) / len(y) for _, y in strata) / len(strata))
        boots.append(bo)
        n += len(b)
    avg = [sum(col) / len(col) for col in zip(*boots)]
    return sum(deltas) / len(deltas), sum(base) / len(base), ci(avg), n


@pytest.mark.parametrize("cond", ["ablation", "random"])
def test_summary_rows(world, cond):
    # grammar = BLiMP acc_sum and TSE acc_mean; suite = the suite benchmarks present, in the alias order
    # (piqa, lambada_openai, boolq, copa), each by its first metric
    for name, members in (("grammar", [("blimp", "correct"), ("tse", "alt")]),
                          ("suite", [("piqa", "correct"), ("lambada_openai", "greedy"), ("boolq", "correct"),
                                     ("copa", "correct")])):
        d, base, (lo, hi), n = _summary(world, cond, members)
        r = _row(world["cmp"], name, "mean", cond)
        assert r.delta == pytest.approx(d, abs=1e-12) and r.baseline == pytest.approx(base, abs=1e-12)
        assert r.value == pytest.approx(base + d, abs=1e-12)
        assert (r.lo, r.hi) == pytest.approx((lo, hi), abs=1e-12)
        assert r.n == n and r.seeds == (3 if cond == "random" else 1)


def test_a_summary_needs_two_parts_and_missing_benchmarks_are_skipped(world):
    base, abl, _ = world["conds"]
    only = Condition("ablation", "x", {"blimp": abl.results["blimp"], "copa": abl.results["copa"]})
    cmp = compare(base, [only], n_boot=20, seed=0)
    assert {(r.benchmark, r.metric) for r in cmp.rows} == {("blimp", "acc_sum"), ("copa", "acc")}


def test_seeds_with_different_items_are_refused(world, tmp_path):
    layout = StoreLayout(tmp_path / "s").init()
    base, _, _ = world["conds"]
    a = publish_synthetic(layout, "copa", choice_items("copa", [True] * 12), tag="x0")
    items = choice_items("copa", [True] * 12)
    items[3]["item"] = 40  # another item
    b = publish_synthetic(layout, "copa", items, tag="x1")
    with pytest.raises(BadArgument, match="different items"):
        compare(base, [Condition("random", "random", {"copa": [a, b]})], n_boot=10)


def test_baseline_and_condition_with_different_items_are_refused(world, tmp_path):
    layout = StoreLayout(tmp_path / "s").init()
    base, _, _ = world["conds"]
    items = choice_items("copa", [False] * 12)
    for i, it in enumerate(items):
        it["item"] = 100 + i  # the same count, other items (e.g. another sample seed)
    other = publish_synthetic(layout, "copa", items, tag="other")
    with pytest.raises(BadArgument):
        compare(Condition("baseline", "baseline", {"copa": base.results["copa"]}),
                [Condition("ablation", "x", {"copa": [other]})], n_boot=10)


def test_same_inputs_same_numbers_and_seed_matters(world):
    base, abl, rand = world["conds"]
    again = compare(base, [abl, rand], n_boot=N_BOOT, seed=SEED)
    assert again.to_records() == world["cmp"].to_records()
    other = compare(base, [abl], n_boot=N_BOOT, seed=SEED + 1)
    r0 = _row(world["cmp"], "blimp", "acc_sum", "ablation")
    r1 = _row(other, "blimp", "acc_sum", "ablation")
    assert r0.delta == r1.delta and (r0.lo, r0.hi) != (r1.lo, r1.hi)


def test_identical_condition_gives_zero_rows(world):
    base = world["conds"][0]
    cmp = compare(base, [Condition("same", "same", base.results)], n_boot=30, seed=0)
    for r in cmp.rows:
        assert (r.delta, r.lo, r.hi) == (0.0, 0.0, 0.0) and r.value == pytest.approx(r.baseline)


# ------------------------------------------------------------------------------------------ rendering


def test_render_json(world):
    cmp = world["cmp"]
    doc = json.loads(cmp.render("json"))
    # every row, in order, with every field of the comparison's rows (read field by field, not via to_records)
    fields = ("benchmark", "metric", "condition", "n", "seeds", "value", "baseline", "delta", "lo", "hi")
    assert len(doc["rows"]) == len(cmp.rows)
    for got, r in zip(doc["rows"], cmp.rows):
        assert set(fields) <= set(got)
        assert all(got[k] == getattr(r, k) for k in fields), (got, r)
    assert [c["name"] for c in doc["conditions"]] == ["baseline", "ablation", "random"]
    assert [c["label"] for c in doc["conditions"]] == ["baseline", "neg-ablation", "random"]
    assert doc["conditions"][2]["note"] == "seeds 0..2" and doc["conditions"][1]["n_neurons"] == 18
    assert doc["bootstrap"]["n_boot"] == N_BOOT and doc["bootstrap"]["seed"] == SEED
    r = _row(cmp, "blimp", "acc_sum", "ablation")
    (j,) = [x for x in doc["rows"] if (x["benchmark"], x["metric"], x["condition"]) == ("blimp", "acc_sum",
                                                                                         "ablation")]
    assert (j["value"], j["baseline"], j["delta"], j["lo"], j["hi"], j["n"]) == (r.value, r.baseline, r.delta,
                                                                                 r.lo, r.hi, r.n)


def test_render_csv(world):
    cmp = world["cmp"]
    rows = list(csv.DictReader(io.StringIO(cmp.render("csv"))))
    assert len(rows) == len(cmp.rows)
    for got, r in zip(rows, cmp.rows):
        assert (got["benchmark"], got["metric"], got["condition"]) == (r.benchmark, r.metric, r.condition)
        for k in ("value", "baseline", "delta", "lo", "hi"):
            assert float(got[k]) == getattr(r, k)
        assert int(got["n"]) == r.n and int(got["seeds"]) == r.seeds


def test_render_table(world):
    cmp = world["cmp"]
    text = cmp.render("table")
    lines = text.splitlines()
    assert lines[0].split() == ["benchmark", "metric", "n", "baseline", "neg-ablation", "random"]
    assert set(lines[1]) <= {"-", " "}
    keys = list(dict.fromkeys((r.benchmark, r.metric) for r in cmp.rows))
    body = lines[2:2 + len(keys)]
    assert [tuple(line.split()[:2]) for line in body] == keys
    for line, (bench, metric) in zip(body, keys):
        r = _row(cmp, bench, metric, "ablation")
        fmt = (lambda v: f"{v:.3f}") if metric == "ppl" else (lambda v: f"{v:.4f}")
        assert line.split()[2] == str(r.n) and line.split()[3] == fmt(r.baseline)
        assert f"{fmt(r.value)} ({r.delta:+.4f} [{r.lo:+.4f}, {r.hi:+.4f}])" in line
    assert "random: seeds 0..2" in lines
    with pytest.raises(BadArgument):
        cmp.render("xml")
