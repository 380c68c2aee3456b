"""``negdb ablate`` and ``negdb results`` end to end on a tiny ingested store, checked against the stored items
and segments read directly; the error paths print one line."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest

import negdb
from negdb.errors import BadArgument, NotFound, StoreError
from negdb.evals import registry
from tests.ablate_helpers import table_files
from tests.ingest_helpers import assert_one_error, cli, ingest_into
from tests.tiny_models import save_tiny

pytestmark = pytest.mark.timeout(300)

ARGS = ["--top", "10%", "--evals", "blimp,copa,ppl", "--limit", "2", "--ppl-tokens", "256", "--probe-tokens",
        "256", "--seeds", "2", "--window", "64", "--quiet"]


@pytest.fixture(scope="module")
def env(tmp_path_factory, short_wikitext):
    model = save_tiny(tmp_path_factory.mktemp("m") / "neox", "gpt_neox", seed=0)
    store = ingest_into(tmp_path_factory, model)
    first = cli(store, "ablate", "--model", str(model), *ARGS, "--format", "json")
    assert first.exit_code == 0, first.output
    after_first = table_files(store, "eval_results")
    abl_files1 = table_files(store, "ablations")
    (ablation,) = abl_files1  # one experiment, one segment
    out = tmp_path_factory.mktemp("out") / "cmp.txt"
    second = cli(store, "ablate", "--model", str(model), *ARGS, "--out", str(out))
    assert second.exit_code == 0, second.output
    # later tests run other experiments in this store: everything below refers to this one
    return {"store": store, "model": str(model.resolve()), "model_arg": str(model),
            "ablation_id": ablation.removesuffix(".parquet"), "first": first, "doc": json.loads(first.stdout),
            "second": second, "out": out, "files1": after_first, "files2": table_files(store, "eval_results"),
            "abl_files1": abl_files1, "abl_files2": table_files(store, "ablations")}


def _rows(doc) -> dict[tuple[str, str, str], dict]:
    return {(r["benchmark"], r["metric"], r["condition"]): r for r in doc["rows"]}


def _read(store: Path, table: str) -> pl.DataFrame:
    files = sorted((store / "tables" / table).glob("*.parquet"))
    return pl.concat([pl.from_arrow(pq.read_table(f)) for f in files], how="diagonal_relaxed")


def _ablation(env) -> pl.DataFrame:
    return pl.from_arrow(pq.read_table(env["store"] / "tables" / "ablations" / f"{env['ablation_id']}.parquet"))


def _condition_results(env) -> dict[str, list[dict[str, str]]]:
    """condition -> per set (seed order) {benchmark: result_id}, from the ablations and eval_results segments."""
    store = env["store"]
    abl = _ablation(env).sort("condition", "seed", nulls_last=False)
    res = _read(store, "eval_results")
    bench_of = dict(zip(res["result_id"].to_list(), res["benchmark"].to_list()))
    out: dict[str, list[dict[str, str]]] = {}
    for row in abl.iter_rows(named=True):
        out.setdefault(row["condition"], []).append({bench_of[r]: r for r in row["result_ids"]})
    return out


def _items(store: Path, rid: str) -> pl.DataFrame:
    return pl.from_arrow(pq.read_table(store / "tables" / "eval_items" / f"{rid}.parquet")).sort("item")


def _macro(frames: list[pl.DataFrame]) -> float:
    """Mean over groups of the group accuracy, per-item decisions averaged over ``frames`` (seeds)."""
    vals = np.mean([f["correct"].cast(pl.Float64).to_numpy() for f in frames], axis=0)
    groups = frames[0]["grp"].to_list()
    by: dict[str, list[float]] = {}
    for g, v in zip(groups, vals):
        by.setdefault(g, []).append(float(v))
    return sum(sum(v) / len(v) for v in by.values()) / len(by)


# ------------------------------------------------------------------------------------------ the run


def test_json_has_every_condition_and_row(env):
    doc = env["doc"]
    assert [c["name"] for c in doc["conditions"]] == ["baseline", "ablation", "random", "ppl-matched"]
    conds = {c["name"]: c for c in doc["conditions"]}
    assert conds["ablation"]["n_neurons"] == 3 * round(0.1 * 64) == conds["random"]["n_neurons"]
    frac = conds["ppl-matched"]["fraction"]
    assert 0 < frac <= 0.9 and abs(frac / 0.005 - round(frac / 0.005)) < 1e-6
    rows = _rows(doc)
    want = {(b, m) for b, m in (("blimp", "acc_sum"), ("copa", "acc"), ("wikitext2", "ppl"))}
    assert set(rows) == {(b, m, c) for b, m in want for c in ("ablation", "random", "ppl-matched")}
    n_blimp = len(registry.load_items("blimp", limit=2))
    assert n_blimp == 67 * 2
    for (bench, _, cond), r in rows.items():
        assert r["n"] == {"blimp": n_blimp, "copa": 2, "wikitext2": math.ceil(256 / 64)}[bench]
        assert r["seeds"] == (2 if cond == "random" else 1)
        assert r["value"] == pytest.approx(r["baseline"] + r["delta"])
        assert r["lo"] <= r["hi"]
    # the baseline is the same number in every condition's row
    for bench, metric in want:
        assert len({rows[(bench, metric, c)]["baseline"] for c in ("ablation", "random", "ppl-matched")}) == 1
    # the ablation changes the perplexity (it is really applied)
    assert rows[("wikitext2", "ppl", "ablation")]["delta"] != 0


def test_numbers_equal_the_stored_items(env):
    store, rows = env["store"], _rows(env["doc"])
    by_cond = _condition_results(env)
    assert sorted(by_cond) == ["ablation", "baseline", "ppl-matched", "random"]
    assert len(by_cond["random"]) == 2 and all(len(x) == 1 for k, x in by_cond.items() if k != "random")
    base = by_cond["baseline"][0]
    # accuracy: macro over BLiMP paradigms, decisions averaged over the random seeds
    assert rows[("blimp", "acc_sum", "ablation")]["baseline"] == pytest.approx(_macro([_items(store, base["blimp"])]))
    for cond in ("ablation", "random", "ppl-matched"):
        frames = [_items(store, x["blimp"]) for x in by_cond[cond]]
        assert rows[("blimp", "acc_sum", cond)]["value"] == pytest.approx(_macro(frames))
        copa = np.mean([_items(store, x["copa"])["correct"].cast(pl.Float64).to_numpy() for x in by_cond[cond]],
                       axis=0)
        assert rows[("copa", "acc", cond)]["value"] == pytest.approx(float(copa.mean()))
    # perplexity from the stored per-token losses: exp(mean NLL over every predicted token)
    for cond, key in (("baseline", "baseline"), ("ablation", "value"), ("ppl-matched", "value")):
        rid = by_cond[cond][0]["wikitext2"]
        tok = pl.from_arrow(pq.read_table(store / "tables" / "eval_tokens" / f"{rid}.parquet"))
        assert tok.height == 256 - 4  # 4 windows of 64, the first token of each not predicted
        cond_row = "ablation" if cond == "baseline" else cond
        assert rows[("wikitext2", "ppl", cond_row)][key] == pytest.approx(math.exp(tok["nll"].mean()), rel=1e-9)


def test_sets_and_ablations_rows(env):
    store = env["store"]
    abl = _ablation(env)
    assert abl["ablation_id"].to_list() == [env["ablation_id"]] * 5
    assert sorted(abl["condition"].to_list()) == ["ablation", "baseline", "ppl-matched", "random", "random"]
    rnd = abl.filter(pl.col("condition") == "random").sort("seed")
    assert rnd["seed"].to_list() == [0, 1] and abl.filter(pl.col("condition") != "random")["seed"].null_count() == 3
    base = abl.filter(pl.col("condition") == "baseline").row(0, named=True)
    assert base["mode"] == "none" and base["set_id"] is None and base["n_neurons"] == 0
    matched = abl.filter(pl.col("condition") == "ppl-matched").row(0, named=True)
    assert matched["fraction"] == pytest.approx(next(c["fraction"] for c in env["doc"]["conditions"]
                                                     if c["name"] == "ppl-matched"))
    config = json.loads(base["config_json"])
    assert config["evals"] == ["blimp", "copa", "ppl"] and config["controls"]["seeds"] == [0, 1]
    assert config["top"] == "10%" and config["limits"]["copa"] == 2
    # the key holds what changes the numbers only: not the device, not the batch size
    assert "device" not in base["config_json"] and "batch_tokens" not in base["config_json"]
    from negdb.ablate.experiment import ablation_id

    key = {k: config[k] for k in ("version", "model_id", "revision", "commit", "set_id", "mode", "benchmarks",
                                  "limits", "sample_seed", "scoring", "controls", "bootstrap")}
    assert ablation_id(key) == env["ablation_id"]
    with negdb.connect(str(store)) as cat:
        sets = cat.sql("SELECT name, set_id, n_members FROM neuron_sets")
        members = cat.sql("SELECT set_id, count(*) AS n FROM neuron_set_members GROUP BY 1")
    known = dict(zip(sets["set_id"].to_list(), sets["n_members"].to_list()))
    counted = dict(zip(members["set_id"].to_list(), members["n"].to_list()))
    for row in abl.filter(pl.col("set_id").is_not_null()).iter_rows(named=True):
        assert known[row["set_id"]] == row["n_neurons"] == counted[row["set_id"]]
        assert row["set_name"] in sets["name"].to_list() and row["mode"] == "neg"
    # the main set and the random sets are disjoint
    main = abl.filter(pl.col("condition") == "ablation")["set_id"][0]
    with negdb.connect(str(store)) as cat:
        m = cat.sql("SELECT set_id, layer, neuron FROM neuron_set_members")
    pairs = {s: set(zip(g["layer"].to_list(), g["neuron"].to_list())) for (s,), g in m.group_by("set_id")}
    for s in rnd["set_id"].to_list():
        assert not pairs[s] & pairs[main] and len(pairs[s]) == len(pairs[main])


def test_second_run_reads_everything_back(env):
    second = env["second"]
    assert env["files2"] == env["files1"]  # no eval_results segment added or rewritten
    assert len(env["files1"]) > 0
    assert "0 evaluations computed" in second.stderr
    assert "loading" not in second.stderr  # the model was not loaded
    assert "loading" in env["first"].stderr
    # the table shows the same numbers as the JSON
    rows = _rows(env["doc"])
    text = second.stdout
    r = rows[("blimp", "acc_sum", "ablation")]
    assert f"{r['value']:.4f} ({r['delta']:+.4f} [{r['lo']:+.4f}, {r['hi']:+.4f}])" in text
    assert env["out"].read_text() == text  # --out holds what was printed
    assert env["abl_files2"] == env["abl_files1"]  # the experiment is stored once, not rewritten


def test_results_listings(env):
    store = env["store"]
    res = cli(store, "results", "--format", "json")
    assert res.exit_code == 0, res.output
    listed = json.loads(res.stdout)
    stored = _read(store, "eval_results")
    assert len(listed) == stored.height >= len(env["files1"])
    assert {f[:12] for f in env["files1"]} <= {r["result"] for r in listed}
    value_of = dict(zip(stored["result_id"].str.slice(0, 12).to_list(), stored["primary_value"].to_list()))
    for r in listed:
        assert r["value"] == value_of[r["result"]]
    rows = _rows(env["doc"])
    base_blimp = [r for r in listed if r["mode"] == "none" and r["benchmark"] == "blimp"]
    assert len(base_blimp) == 1
    assert base_blimp[0]["value"] == pytest.approx(rows[("blimp", "acc_sum", "ablation")]["baseline"])
    only = json.loads(cli(store, "results", "--benchmark", "copa", "--format", "json").stdout)
    assert {r["benchmark"] for r in only} == {"copa"}
    assert len(only) == stored.filter(pl.col("benchmark") == "copa").height
    none = cli(store, "results", "--model", "no-such-model")
    assert none.exit_code == 0 and "nothing stored" in none.stdout
    table = cli(store, "results")
    assert table.exit_code == 0 and "blimp" in table.stdout and "wikitext2" in table.stdout
    as_csv = list(csv.DictReader(io.StringIO(cli(store, "results", "--format", "csv").stdout)))
    assert len(as_csv) == len(listed)


def test_results_ablations_and_show_reproduce_the_comparison(env):
    store = env["store"]
    res = cli(store, "results", "--ablations", "--format", "json")
    assert res.exit_code == 0, res.output
    (abl,) = [a for a in json.loads(res.stdout) if a["ablation_id"] == env["ablation_id"]]
    assert abl["conditions"] == "ablation, baseline, ppl-matched, random"
    assert abl["n_neurons"] == 18 and abl["model_id"] == env["model"]
    matched = next(c for c in env["doc"]["conditions"] if c["name"] == "ppl-matched")
    assert abl["matched_fraction"] == pytest.approx(matched["fraction"])
    shown = cli(store, "results", "--show", abl["ablation_id"], "--format", "json")
    assert shown.exit_code == 0, shown.output
    doc = json.loads(shown.stdout)
    assert doc["rows"] == env["doc"]["rows"]  # the same numbers, rebuilt from the store without a model
    assert [c["name"] for c in doc["conditions"]] == ["baseline", "ablation", "random", "ppl-matched"]
    table = cli(store, "results", "--show", abl["ablation_id"])
    assert table.exit_code == 0 and "neg-ablation" in table.stdout


def test_results_are_joinable_with_the_neurons(env):
    store = env["store"]
    res = cli(store, "sql", "SELECT count(*) AS n FROM eval_results r JOIN neuron_set_members m USING (set_id) "
                            "JOIN neurons n ON n.layer = m.layer AND n.neuron = m.neuron", "--format", "json")
    assert res.exit_code == 0, res.output
    (row,) = json.loads(res.stdout)
    stored = _read(store, "eval_results")
    # one ingested checkpoint: every member neuron has one neurons row
    assert row["n"] == int(stored.filter(pl.col("set_id").is_not_null())["n_neurons"].sum()) > 0
    per = cli(store, "sql", "SELECT r.mode, avg(n.w_dist) AS w FROM eval_results r JOIN neuron_set_members m "
                            "USING (set_id) JOIN neurons n ON n.layer = m.layer AND n.neuron = m.neuron "
                            "WHERE r.benchmark = 'copa' GROUP BY 1", "--format", "json")
    assert per.exit_code == 0 and json.loads(per.stdout)[0]["mode"] == "neg"


def test_per_benchmark_limit_and_no_controls(env, short_wikitext):
    res = cli(env["store"], "ablate", "--model", env["model_arg"], "--top", "5%", "--evals", "copa,arc_easy",
              "--limit", "3,copa=1", "--controls", "none", "--format", "json", "--quiet")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert [c["name"] for c in doc["conditions"]] == ["baseline", "ablation"]
    n = {r["benchmark"]: r["n"] for r in doc["rows"]}
    assert n == {"copa": 1, "arc_easy": 3, "suite": 1 + 3}  # both are suite benchmarks: a suite row too


def test_the_same_set_by_name_reuses_every_evaluation(env):
    abl = _ablation(env)
    name = abl.filter(pl.col("condition") == "ablation")["set_name"][0]
    args = list(ARGS)
    i = args.index("--top")
    args[i:i + 2] = ["--set", name]
    before = table_files(env["store"], "eval_results")
    res = cli(env["store"], "ablate", "--model", env["model_arg"], *args)
    assert res.exit_code == 0, res.output
    assert "0 evaluations computed" in res.stderr
    assert table_files(env["store"], "eval_results") == before


def test_a_named_set_restricted_by_layers(env, short_wikitext):
    """``--set NAME --layers L`` ablates only the set's members in those layers (a new, saved set)."""
    abl = _ablation(env)
    name = abl.filter(pl.col("condition") == "ablation")["set_name"][0]
    with negdb.connect(str(env["store"])) as cat:
        members = cat.sql("SELECT m.layer, m.neuron FROM neuron_set_members m JOIN neuron_sets s USING (set_id) "
                          "WHERE s.name = ? ORDER BY 1, 2", [name])
    res = cli(env["store"], "ablate", "--model", env["model_arg"], "--set", name, "--layers", "1", "--evals", "copa",
              "--limit", "1", "--controls", "none", "--format", "json", "--quiet")
    assert res.exit_code == 0, res.output
    (cond,) = [c for c in json.loads(res.stdout)["conditions"] if c["name"] == "ablation"]
    expected = members.filter(pl.col("layer") == 1)
    assert 0 < expected.height < members.height
    assert cond["n_neurons"] == expected.height
    outside = cli(env["store"], "ablate", "--model", env["model_arg"], "--set", name, "--layers", "7", "--evals",
                  "copa", "--controls", "none", "--quiet")
    assert_one_error(outside, BadArgument)


def test_mean_mode_runs_and_is_recorded(env, short_wikitext):
    res = cli(env["store"], "ablate", "--model", env["model_arg"], "--top", "10%", "--mode", "mean", "--evals",
              "ppl", "--ppl-tokens", "128", "--window", "64", "--controls", "none", "--format", "json", "--quiet")
    assert res.exit_code == 0, res.output
    (row,) = json.loads(res.stdout)["rows"]
    assert row["condition"] == "ablation" and row["delta"] != 0
    stored = _read(env["store"], "eval_results").filter(pl.col("mode") == "mean")
    assert stored.height == 1 and stored["primary_value"][0] == pytest.approx(row["value"])


# ------------------------------------------------------------------------------------------ errors


@pytest.mark.parametrize("args", [
    [],  # no selector
    ["--top", "10%", "--where", "w_dist > 0"],  # two selectors
    ["--top", "10%", "--set", "x"],
    ["--top", "10%", "--mode", "zero"],
    ["--top", "10%", "--evals", "blimp,nope"],
    ["--top", "10%", "--controls", "random,bogus"],
    ["--top", "10%", "--limit", "0"],
    ["--top", "10%", "--limit", "abc"],
    ["--top", "10%", "--limit", "5,tse=0"],
    ["--top", "10%", "--limit", "5,nope=3"],
    ["--top", "10%", "--seeds", "0"],
    ["--top", "10%", "--n-boot", "0"],
    ["--top", "10%", "--tolerance", "1"],
    ["--top", "10%", "--window", "1"],
    ["--set", "no-such-set"],
    ["--where", "w_dist > 1e9"],  # an empty selection
])
def test_bad_arguments_give_one_error_line_and_store_nothing(env, args):
    before = table_files(env["store"], "eval_results")
    res = cli(env["store"], "ablate", "--model", env["model_arg"], *args, "--quiet")
    assert_one_error(res)
    assert table_files(env["store"], "eval_results") == before


def test_missing_store_gives_one_error_line(tmp_path, env):
    res = cli(tmp_path / "nowhere", "ablate", "--model", env["model_arg"], "--top", "10%", "--quiet")
    assert_one_error(res, StoreError)
    assert "not a negdb store" in res.stderr
    assert not (tmp_path / "nowhere").exists()


def test_results_show_unknown_ablation(env):
    assert_one_error(cli(env["store"], "results", "--show", "0123456789abcdef"), NotFound)


# ------------------------------------------------------------------------------------------ options


def test_limit_per_benchmark():
    from negdb.cli import parse
    from negdb.evals.options import Sampling

    benches = ["wikitext2", "blimp", "tse", "copa", "piqa"]

    def limits(text):
        return Sampling(limit=parse.limit(text)).limits(benches)

    assert limits(None) == dict.fromkeys(benches)
    assert limits("5") == {"wikitext2": None, "blimp": 5, "tse": 5, "copa": 5, "piqa": 5}
    assert limits("5,suite=200,tse=20") == {"wikitext2": None, "blimp": 5, "tse": 20, "copa": 200, "piqa": 200}
    assert limits("grammar=7") == {"wikitext2": None, "blimp": 7, "tse": 7, "copa": None, "piqa": None}
    assert Sampling(limit=4).limits(["copa"]) == {"copa": 4}
    assert Sampling(limit={"*": 5, "suite": 200}).limits(benches) == limits("5,suite=200")
    for bad in ("0", "-1", "x", "5,=3", "5,tse=", "5,tse=-2", "", "5,nosuch=3"):
        with pytest.raises(BadArgument):
            limits(bad)
    for bad in (0, -1, "5", 2.5, {"nosuch": 3}, {"tse": 0}):
        with pytest.raises(BadArgument):
            Sampling(limit=bad)


def test_controls_and_validation():
    from negdb.ablate.options import AblateSpec, ControlKind, Controls
    from negdb.cli import parse
    from negdb.evals.options import Bootstrap, Sampling, Scoring
    from negdb.query.setspec import SetSpec

    assert Controls(kinds=parse.controls("none")).kinds == ()
    assert Controls(kinds=parse.controls("random, random,ppl-matched")).kinds == (ControlKind.RANDOM,
                                                                                  ControlKind.PPL_MATCHED)
    AblateSpec(SetSpec("m", top=1))
    bad = [lambda: SetSpec("m"), lambda: SetSpec("m", top=1, where="x > 1"), lambda: SetSpec("m", top="1%"),
           lambda: SetSpec("m", top=0), lambda: SetSpec("m", top=1.5), lambda: SetSpec("m", top=1, by="nope"),
           lambda: AblateSpec(SetSpec("m", top=1), mode="nope"), lambda: Controls(seeds=0),
           lambda: Sampling(ppl_tokens=0), lambda: Controls(probe_tokens=1), lambda: Controls(tolerance=-0.1),
           lambda: Controls(resolution=0.9, max_fraction=0.9), lambda: Controls(kinds=["nope"]),
           lambda: Controls(kinds="random,ppl-matched"), lambda: Bootstrap(n_boot=0), lambda: Scoring("always"),
           lambda: Scoring(window=1), lambda: AblateSpec(SetSpec("m", top=1), evals=()),
           lambda: AblateSpec(SetSpec("m", top=1), evals=["nosuch"]),
           lambda: AblateSpec(SetSpec("m", top=1), evals="ppl,blimp"), lambda: AblateSpec("m")]
    for make in bad:
        with pytest.raises(BadArgument):
            make()
