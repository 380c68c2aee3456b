"""``negdb analyze layers`` end to end on a tiny ingested 3-layer GPT-NeoX store, checked against references
computed here: the top-10% set and its layer restrictions from the ``neurons`` view, evaluations re-run with a
hand-built intervention, accuracies, perplexities and bootstrap intervals from the stored items and tokens."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest

import negdb
from negdb.ablate import conditions
from negdb.ablate.interventions import apply, make_intervention
from negdb.analyze.layers import LayersSpec, run
from negdb.evals.options import Bootstrap, Sampling, Scoring
from negdb.query.setspec import SetSpec
from negdb.errors import NegdbError, StoreError
from negdb.evals import registry
from negdb.evals.run import ScoringRule, score_items
from negdb.evals.windows import plan_windows, window_nll
from tests.ablate_helpers import ci, ppl_reference, short_wikitext_loader, stratified_reference
from tests.ingest_helpers import assert_one_error, cli, ingest_into
from tests.tiny_models import save_tiny

pytestmark = pytest.mark.timeout(300)

N_BOOT = 200
ARGS = ["--top", "10%", "--groups", "3", "--evals", "ppl,blimp,tse", "--limit", "1", "--ppl-tokens", "128",
        "--window", "64", "--n-boot", str(N_BOOT), "--quiet"]
EVAL_TABLES = ("eval_results", "analyses", "layer_effects", "neuron_sets", "neuron_set_members")


@pytest.fixture(scope="module")
def calls():
    """Every ``evaluate`` call of the module, as (set_id, benchmark). To keep the module fast, WikiText-2 is cut
    short, BLiMP keeps every 4th of its sampled items (17 paradigms at --limit 1) and items are loaded once."""
    short = short_wikitext_loader(registry.load_items)
    cache: dict = {}

    def load(name, limit=None, seed=0):
        if (name, limit, seed) not in cache:
            items = short(name, limit=limit, seed=seed)
            cache[(name, limit, seed)] = items[::4] if name == "blimp" else items
        return cache[(name, limit, seed)]

    seen: list[tuple[str | None, str]] = []
    real = conditions.evaluate

    def spy(layout, target, benchmark, *a, **kw):
        seen.append((target.set_id, benchmark))
        return real(layout, target, benchmark, *a, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(registry, "load_items", load)
        mp.setattr(conditions, "evaluate", spy)
        yield seen


def _files(store: Path) -> dict[str, float]:
    return {f"{t}/{p.name}": p.stat().st_mtime_ns for t in EVAL_TABLES
            for p in (store / "tables" / t).glob("*.parquet")}


@pytest.fixture(scope="module")
def env(tmp_path_factory, calls):
    model = save_tiny(tmp_path_factory.mktemp("m") / "neox", "gpt_neox", seed=0)
    store = ingest_into(tmp_path_factory, model)
    first = cli(store, "analyze", "layers", "--model", str(model), *ARGS, "--format", "json")
    assert first.exit_code == 0, first.output
    first_calls = list(calls)
    files1 = _files(store)
    out = tmp_path_factory.mktemp("out") / "layers.txt"
    second = cli(store, "analyze", "layers", "--model", str(model), *ARGS, "--out", str(out))
    assert second.exit_code == 0, second.output
    return {"store": store, "model": str(model), "first": first, "doc": json.loads(first.stdout),
            "calls1": first_calls, "calls2": calls[len(first_calls):], "files1": files1, "files2": _files(store),
            "second": second, "out": out}


def _read(store: Path, table: str, name: str) -> pl.DataFrame:
    return pl.from_arrow(pq.read_table(store / "tables" / table / f"{name}.parquet"))


def _reference_members(store: Path) -> dict[int, list[int]]:
    """Top 10% per layer by w_dist (k = round(0.1 * 64) = 6), ties to the lower index, from the neurons view."""
    with negdb.connect(str(store)) as cat:
        df = cat.sql("SELECT layer, neuron, w_dist FROM neurons")
    out: dict[int, list[int]] = {}
    for layer in sorted(set(df["layer"].to_list())):
        rows = sorted((-w, n) for lay, n, w in df.iter_rows() if lay == layer)
        out[int(layer)] = sorted(int(n) for _, n in rows[:round(0.1 * 64)])
    return out


def _headline(doc, variant, group, bench, metric):
    (row,) = [r for r in doc["rows"] if (r["variant"], r["group_index"], r["benchmark"], r["metric"]) ==
              (variant, group, bench, metric) and r["grp"] is None and r["ci_lo"] is not None]
    return row


def _items(store: Path, rid: str) -> pl.DataFrame:
    return _read(store, "eval_items", rid).sort("item")


def _strata(items: pl.DataFrame, column: str, base: pl.DataFrame) -> list[tuple[list[float], list[float]]]:
    """(ablated, baseline) decisions per group, groups in order of first appearance."""
    groups: dict[str, tuple[list[float], list[float]]] = {}
    for g, a, b in zip(items["grp"].to_list(), items[column].to_list(), base[column].to_list()):
        groups.setdefault(g, ([], []))
        groups[g][0].append(float(a))
        groups[g][1].append(float(b))
    return list(groups.values())


# ------------------------------------------------------------------------------------------ groups and sets


def test_groups_layers_and_sets(env):
    store, rows = env["store"], env["doc"]["rows"]
    ref = _reference_members(store)
    want = {("alone", 0): [0], ("alone", 1): [1], ("alone", 2): [2],
            ("cumulative", 0): [0], ("cumulative", 1): [0, 1], ("cumulative", 2): [0, 1, 2]}
    got = {(r["variant"], r["group_index"]): (r["layers"], r["n_neurons"], r["set_id"]) for r in rows}
    assert set(got) == set(want) and env["doc"]["groups"] == [[0], [1], [2]]
    with negdb.connect(str(store)) as cat:
        members = cat.sql("SELECT set_id, layer, neuron FROM neuron_set_members")
    by_set = {s: sorted(zip(g["layer"].to_list(), g["neuron"].to_list())) for (s,), g in members.group_by("set_id")}
    for key, layers in want.items():
        got_layers, n, set_id = got[key]
        expected = sorted((lay, n_) for lay in layers for n_ in ref[lay])
        assert got_layers == layers and n == len(expected) == 6 * len(layers)
        assert by_set[set_id] == expected
    # equal member lists are one set: alone 0 is cumulative 0, the last cumulative group is the whole set
    assert got[("alone", 0)][2] == got[("cumulative", 0)][2]
    assert got[("cumulative", 2)][2] == env["doc"]["summary"]["set_id"]
    assert len({v[2] for v in got.values()}) == 5


def test_identical_sets_are_evaluated_once(env):
    counts = Counter(env["calls1"])
    assert set(counts.values()) == {1}  # every (set, benchmark) once
    sets = {s for s, _ in counts}
    assert len(sets) == 6 and None in sets  # baseline + 5 distinct sets
    assert {b for _, b in counts} == {"wikitext2", "blimp", "tse"} and len(counts) == 18
    assert sum(k.startswith("eval_results/") for k in env["files1"]) == 18
    assert "18 evaluations computed, 0 read" in env["first"].stderr
    # rows of equal sets point at the same stored results
    rows = env["doc"]["rows"]
    rid = {(r["variant"], r["group_index"], r["benchmark"], r["metric"], r["level"], r["grp"]): r["result_id"]
           for r in rows}
    for k, v in rid.items():
        if k[0] == "alone" and k[1] == 0:
            assert rid[("cumulative", 0, *k[2:])] == v


def test_each_group_equals_a_hand_built_intervention(env, calls):
    from negdb.models.checkpoints import select
    from negdb.models.loading import load
    from negdb.models.registry import resolve

    store, doc = env["store"], env["doc"]
    ref = _reference_members(store)
    source = resolve(env["model"])
    lm = load(source, select(source, "final")[0])
    rule = ScoringRule()
    blimp = registry.load_items("blimp", limit=1, seed=0)
    text = "\n".join(it.text or "" for it in registry.load_items("wikitext2"))
    windows = plan_windows(lm.tokenizer(text, add_special_tokens=False)["input_ids"], window=64, bos_id=None,
                           max_tokens=128)
    checked = set()
    for r in doc["rows"]:
        key = tuple(r["layers"])
        if r["level"] != "overall" or r["benchmark"] != "wikitext2" or key in checked:
            continue
        checked.add(key)
        iv = make_intervention("neg", {layer: ref[layer] for layer in r["layers"]})
        with apply(lm, iv):
            items = score_items(lm, blimp, rule)
            nll = window_nll(lm, windows, bos_id=None)
        blimp_rid = _headline(doc, r["variant"], r["group_index"], "blimp", "acc_sum")["result_id"]
        stored = _items(store, blimp_rid)
        assert stored["item"].to_list() == [it.index for it in blimp]
        assert np.allclose(np.array(stored["logprobs"].to_list()), [x["logprobs"] for x in items], atol=1e-4)
        assert stored["correct"].to_list() == [x["correct"] for x in items]
        tok = _read(store, "eval_tokens", r["result_id"]).sort("window", "position")
        assert np.allclose(tok["nll"].to_numpy(), np.concatenate(nll), atol=1e-4)
    assert len(checked) == 5


# ------------------------------------------------------------------------------------------ numbers


def test_headline_deltas_and_cis_from_the_stored_items(env):
    store, doc = env["store"], env["doc"]
    base_ids = doc["summary"]["baseline"]
    base = {b: _items(store, rid) for b, rid in base_ids.items()}
    for variant in ("alone", "cumulative"):
        for g in range(3):
            parts = []
            for bench, metric, column in (("blimp", "acc_sum", "correct"), ("tse", "acc_mean", "correct_alt")):
                r = _headline(doc, variant, g, bench, metric)
                assert r["level"] == "macro" and r["baseline_id"] == base_ids[bench]
                strata = _strata(_items(store, r["result_id"]), column, base[bench])
                value = sum(sum(a) / len(a) for a, _ in strata) / len(strata)
                baseline = sum(sum(b) / len(b) for _, b in strata) / len(strata)
                d, boots = stratified_reference(strata, N_BOOT, 0)
                assert r["value"] == pytest.approx(value) and r["baseline"] == pytest.approx(baseline)
                assert r["delta"] == pytest.approx(value - baseline) == pytest.approx(d)
                assert (r["ci_lo"], r["ci_hi"]) == pytest.approx(ci(boots))
                parts.append((d, boots, strata))
            # grammar: the two benchmarks' macro differences averaged, draw by draw (seeds 0 and 1)
            gr = _headline(doc, variant, g, "grammar", "mean")
            boots = [(a + b) / 2 for a, b in zip(parts[0][1], stratified_reference(parts[1][2], N_BOOT, 1)[1])]
            assert gr["delta"] == pytest.approx((parts[0][0] + parts[1][0]) / 2)
            assert (gr["ci_lo"], gr["ci_hi"]) == pytest.approx(ci(boots))
            # perplexity: exp(mean NLL over the stored tokens); CI over windows
            r = _headline(doc, variant, g, "wikitext2", "ppl")
            tok, tok0 = (_read(store, "eval_tokens", rid) for rid in (r["result_id"], base_ids["wikitext2"]))
            assert r["value"] == pytest.approx(math.exp(tok["nll"].mean()), rel=1e-9)
            assert r["baseline"] == pytest.approx(math.exp(tok0["nll"].mean()), rel=1e-9)
            assert r["delta"] == pytest.approx(r["value"] - r["baseline"])
            wins, wins0 = _items(store, r["result_id"]), base["wikitext2"]
            d, lo, hi = ppl_reference([-lp[0] for lp in wins["logprobs"].to_list()],
                                      [n[0] for n in wins["n_tokens"].to_list()],
                                      [-lp[0] for lp in wins0["logprobs"].to_list()],
                                      [n[0] for n in wins0["n_tokens"].to_list()], N_BOOT, 0)
            assert (r["delta"], r["ci_lo"], r["ci_hi"]) == pytest.approx((d, lo, hi))
    # the ablation is really applied somewhere
    assert any(r["delta"] != 0 for r in doc["rows"] if r["metric"] == "ppl")


def _lists_by_meta(items: pl.DataFrame, key: str | None, column: str) -> dict[str, list[float]]:
    groups: dict[str, list[float]] = {}
    for g, meta, v in zip(items["grp"].to_list(), items["meta_json"].to_list(), items[column].to_list()):
        label = g if key is None else json.loads(meta)[key]
        groups.setdefault(str(label), []).append(float(v))
    return groups


def _by_meta(items: pl.DataFrame, key: str | None, column: str) -> dict[str, float]:
    return {k: sum(v) / len(v) for k, v in _lists_by_meta(items, key, column).items()}


def _percentile_ci(a: list[float], b: list[float], n_boot: int, seed: int) -> tuple[float, float]:
    """Reference paired bootstrap, one draw at a time: items resampled with replacement, 2.5/97.5 percentiles."""
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(a), size=len(a))
        draws.append(sum(a[i] - b[i] for i in idx) / len(a))
    return float(np.percentile(draws, 2.5)), float(np.percentile(draws, 97.5))


def test_per_phenomenon_rows_from_the_stored_items(env):
    store, doc = env["store"], env["doc"]
    base_ids = doc["summary"]["baseline"]
    checks = (("blimp", "acc_sum", "linguistics_term", "correct", "linguistics_term"),
              ("blimp", "acc_sum", "field", "correct", "field"),
              ("tse", "acc_mean", "phenomenon", "correct_alt", None),
              ("tse", "acc_sum", "phenomenon", "correct", None))
    for bench, metric, level, column, meta_key in checks:
        base_items = _lists_by_meta(_items(store, base_ids[bench]), meta_key, column)
        base = _by_meta(_items(store, base_ids[bench]), meta_key, column)
        for variant in ("alone", "cumulative"):
            for g in range(3):
                rows = [r for r in doc["rows"] if (r["variant"], r["group_index"], r["benchmark"], r["metric"],
                                                   r["level"]) == (variant, g, bench, metric, level)]
                items = _lists_by_meta(_items(store, rows[0]["result_id"]), meta_key, column)
                value = _by_meta(_items(store, rows[0]["result_id"]), meta_key, column)
                assert {r["grp"] for r in rows} == set(value) == set(base) and len(rows) > 1
                for r in rows:
                    assert r["value"] == pytest.approx(value[r["grp"]])
                    assert r["baseline"] == pytest.approx(base[r["grp"]])
                    assert r["delta"] == pytest.approx(value[r["grp"]] - base[r["grp"]])
                    assert r["baseline_id"] == base_ids[bench]
                    ci = _percentile_ci(items[r["grp"]], base_items[r["grp"]], N_BOOT, 0)
                    assert (r["ci_lo"], r["ci_hi"]) == pytest.approx(ci)


def test_rows_are_stored_and_queryable(env):
    store, doc = env["store"], env["doc"]
    aid = doc["analysis_id"]
    stored = _read(store, "layer_effects", aid)
    assert stored.height == len(doc["rows"])
    res = cli(store, "sql", f"SELECT kind, model_id, config_json FROM analyses WHERE analysis_id = '{aid}'",
              "--format", "json")
    (row,) = json.loads(res.stdout)
    assert row["kind"] == "layers" and json.loads(row["config_json"])["groups"] == [[0], [1], [2]]
    res = cli(store, "sql", f"SELECT count(*) AS n FROM layer_effects WHERE analysis_id = '{aid}'", "--format", "json")
    assert json.loads(res.stdout) == [{"n": len(doc["rows"])}]


# ------------------------------------------------------------------------------------------ re-use


def test_rerun_reads_everything_back(env):
    second = env["second"]
    assert env["calls2"] == []  # no evaluation asked for
    assert env["files2"] == env["files1"]  # nothing written or rewritten
    assert "loading" not in second.stderr and "loading" in env["first"].stderr
    assert "read back from the store" in second.stderr
    assert env["out"].read_text() == second.stdout
    r = _headline(env["doc"], "cumulative", 2, "blimp", "acc_sum")
    line = next(x for x in second.stdout.splitlines() if x.startswith("cumulative  2"))
    assert f"{r['delta']:+.4f} [{r['ci_lo']:+.4f}, {r['ci_hi']:+.4f}]" in line and "0-2" in line


def test_python_api_reads_back_and_the_same_set_by_name_too(env, calls):
    kw = dict(groups=3, evals=["ppl", "blimp", "tse"], sampling=Sampling(limit=1, ppl_tokens=128),
              scoring=Scoring(window=64), bootstrap=Bootstrap(N_BOOT))
    an = run(LayersSpec(SetSpec(env["model"], top=0.1), **kw), env["store"], progress=False, log=lambda _: None)
    assert an.from_store and an.computed == 0 and an.rows == env["doc"]["rows"]
    assert an.analysis_id == env["doc"]["analysis_id"]
    name = env["doc"]["summary"]["set_name"]
    by_name = run(LayersSpec(SetSpec(env["model"], set_name=name), **kw), env["store"], progress=False)
    assert by_name.from_store and by_name.analysis_id == an.analysis_id


def test_other_groups_reuse_the_stored_evaluations(env, calls):
    n = len(calls)
    before = {k for k in _files(env["store"]) if k.startswith("eval_results/")}
    res = cli(env["store"], "analyze", "layers", "--model", env["model"], *ARGS, "--groups", "2", "--format", "json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    got = {(r["variant"], r["group_index"]): r["layers"] for r in doc["rows"]}
    assert got == {("alone", 0): [0, 1], ("alone", 1): [2], ("cumulative", 0): [0, 1], ("cumulative", 1): [0, 1, 2]}
    # every one of these sets was evaluated by the 3-group run: nothing new
    assert "0 evaluations computed" in res.stderr and "loading" not in res.stderr
    assert {k for k in _files(env["store"]) if k.startswith("eval_results/")} == before
    assert len(calls) - n == 4 * 3  # looked up, not computed
    assert doc["analysis_id"] != env["doc"]["analysis_id"]


def test_groups_without_members_equal_the_baseline(env, calls):
    res = cli(env["store"], "analyze", "layers", "--model", env["model"], "--where", "layer = 1", "--groups", "3",
              "--variants", "alone", "--evals", "ppl", "--ppl-tokens", "128", "--window", "64", "--n-boot", "50",
              "--format", "json", "--quiet")
    assert res.exit_code == 0, res.output
    assert "1 evaluations computed, 1 read" in res.stderr  # the baseline is stored already
    doc = json.loads(res.stdout)
    heads = {r["group_index"]: r for r in doc["rows"] if r["metric"] == "ppl"}
    assert sorted(heads) == [0, 1, 2]
    for g in (0, 2):
        r = heads[g]
        assert r["n_neurons"] == 0 and r["set_id"] is None and r["delta"] == 0 and r["ci_lo"] == r["ci_hi"] == 0
        assert r["result_id"] == r["baseline_id"] == doc["summary"]["baseline"]["wikitext2"]
    assert heads[1]["n_neurons"] == 64 and heads[1]["set_id"] == doc["summary"]["set_id"]
    assert heads[1]["delta"] != 0


# ------------------------------------------------------------------------------------------ errors


@pytest.mark.parametrize("args", [
    ["--top", "10%", "--groups", "4"],  # more groups than layers
    ["--top", "10%", "--groups", "0"],
    ["--top", "10%", "--variants", "alone,sideways"],
    ["--top", "10%", "--variants", ","],
    [],  # no selector
    ["--top", "10%", "--set", "x"],
    ["--top", "10%", "--mode", "zero"],
    ["--top", "10%", "--evals", "blimp,nope"],
    ["--top", "10%", "--limit", "0"],
    ["--top", "10%", "--n-boot", "0"],
    ["--set", "no-such-set"],
    ["--where", "w_dist > 1e9"],  # an empty selection
])
def test_bad_arguments_give_one_error_line_and_store_nothing(env, args):
    before = _files(env["store"])
    res = cli(env["store"], "analyze", "layers", "--model", env["model"], *args, "--quiet")
    assert_one_error(res)
    assert _files(env["store"]) == before


def test_missing_store_gives_one_error_line(tmp_path, env):
    res = cli(tmp_path / "nowhere", "analyze", "layers", "--model", env["model"], "--top", "10%", "--quiet")
    assert_one_error(res, StoreError)
    assert "not a negdb store" in res.stderr and not (tmp_path / "nowhere").exists()


def test_options_validation():
    from negdb.cli import parse

    spec = LayersSpec(SetSpec("m", top=1))
    assert spec.variants == ("alone", "cumulative") and spec.groups == 8
    assert LayersSpec(SetSpec("m", top=1), variants=parse.names(" cumulative, alone,cumulative")).variants == (
        "cumulative", "alone")
    for kw in ({"groups": 0}, {"variants": ("alone", "x")}, {"variants": ()}, {"mode": "nope"},
               {"neurons": SetSpec("m", top=1, layers=[0])}, {"evals": ["nope"]}, {"evals": "ppl,blimp"}):
        with pytest.raises(NegdbError):
            LayersSpec(**{"neurons": SetSpec("m", top=1), **kw})
