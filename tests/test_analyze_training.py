"""``negdb analyze training`` end to end on the checkpoints of a tiny GPT-NeoX trained here (tests/train_tiny.py).

Every quantity is recomputed from the stored ``neuron_stats`` rows and evaluation items with plain Python, and
the ablation rows are compared with the stored comparison (``negdb results --show``); stored checkpoints and
evaluations are re-used, a repeated command computes nothing.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest

import negdb
from negdb.analyze.training import TrainingSpec, distribution_rows, jaccard_rows, run, set_mean_rows
from negdb.errors import UnknownModel
from tests.ablate_helpers import ci, percentile, ppl_reference, stratified_reference
from tests.ingest_helpers import assert_one_error, cli
from tests.train_tiny import TrainConfig, train

pytestmark = pytest.mark.timeout(600)

INGEST = ["--tokens", "512", "--seq-len", "32", "--md-pairs", "100"]
ARGS = [*INGEST, "--limit", "1", "--ppl-tokens", "256", "--window", "64", "--n-boot", "200", "--quiet"]
N_BOOT = 200
K = max(1, round(0.01 * TrainConfig.d_mlp))  # the top 1% of a layer


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """The tiny GPT-NeoX trained for TrainConfig.steps steps: (run folder, TrainLog)."""
    out = tmp_path_factory.mktemp("tiny-run") / "run"
    return out, train(out)


def _files(store: Path) -> dict[str, int]:
    return {str(p.relative_to(store)): p.stat().st_mtime_ns for p in store.rglob("*")
            if p.is_file() and "locks" not in p.parts}


def _table_files(store: Path, table: str) -> set[str]:
    return {p.name for p in (store / "tables" / table).glob("*.parquet")}


@pytest.fixture(scope="module")
def env(tmp_path_factory, trained, short_wikitext):
    run_dir, _ = trained
    store = tmp_path_factory.mktemp("store")
    pre = cli(store, "ingest", "--model", str(run_dir), "--checkpoints", "step300", "--activations", "none", *INGEST,
              "--quiet")
    assert pre.exit_code == 0, pre.output
    runs_pre = _table_files(store, "runs")
    first = cli(store, "analyze", "training", "--model", str(run_dir), "--checkpoints", "every:2", *ARGS,
                "--format", "json")
    assert first.exit_code == 0, first.output
    files1 = _files(store)
    evals1 = _table_files(store, "eval_results")
    second = cli(store, "analyze", "training", "--model", str(run_dir), "--checkpoints", "every:2", *ARGS)
    assert second.exit_code == 0, second.output
    files2 = _files(store)
    third = cli(store, "analyze", "training", "--model", str(run_dir), "--checkpoints", "all", *ARGS,
                "--format", "json")
    assert third.exit_code == 0, third.output
    return {"store": store, "run": run_dir, "runs_pre": runs_pre, "first": first, "doc": json.loads(first.stdout),
            "files1": files1, "evals1": evals1, "second": second, "files2": files2, "third": third,
            "doc3": json.loads(third.stdout)}


def _stats(store: Path, model: str, ck: dict) -> pl.DataFrame:
    with negdb.connect(str(store)) as cat:
        return cat.sql("SELECT layer, neuron, w_dist FROM neuron_stats WHERE model_id = ? AND revision = ? AND "
                       "slice_id = ? AND spec_id = ? ORDER BY layer, neuron",
                       [model, ck["revision"], ck["slice_id"], ck["spec_id"]])


def _top(stats: pl.DataFrame) -> set[tuple[int, int]]:
    """Per layer the K highest w_dist (ties: lower neuron), by a plain sort."""
    out: set[tuple[int, int]] = set()
    rows = stats.rows()
    for layer in sorted({r[0] for r in rows}):
        ranked = sorted((r for r in rows if r[0] == layer), key=lambda r: (-r[2], r[1]))
        out |= {(r[0], r[1]) for r in ranked[:K]}
    return out


def _value(doc: dict, rev: str, quantity: str, layer: int | None = None, bench: str | None = None,
           metric: str | None = None) -> dict:
    (row,) = [r for r in doc["rows"] if r["revision"] == rev and r["quantity"] == quantity and r["layer"] == layer
              and r["benchmark"] == bench and r["metric"] == metric]
    return row


# ------------------------------------------------------------------------------------------ the trainer


def test_trainer_learns(trained):
    run_dir, log = trained
    assert sorted(p.name for p in run_dir.iterdir() if p.is_dir()) == ["step0", "step100", "step200", "step300"]
    for step in TrainConfig.save_at:
        names = {p.name for p in (run_dir / f"step{step}").iterdir()}
        assert {"config.json", "model.safetensors", "tokenizer.json"} <= names
    assert len(log.train_loss) == TrainConfig.steps
    held = log.heldout_loss
    assert held[0] == pytest.approx(math.log(TrainConfig.vocab), abs=0.3)  # untrained: about uniform
    assert held[0] > held[100] > held[300]
    assert held[300] < held[0] - 2.0  # the loss falls clearly (nats per token) ...
    assert held[300] < log.unigram_entropy - 1.0  # ... well below what token frequencies alone give
    first, last = np.mean(log.train_loss[:20]), np.mean(log.train_loss[-20:])
    assert last < first - 2.0
    saved = json.loads((run_dir / "train_log.json").read_text())
    assert saved["heldout_loss"]["300"] == pytest.approx(held[300])


# ------------------------------------------------------------------------------------------ quantities


def test_checkpoints_and_sets(env):
    doc = env["doc"]
    assert doc["final"] == "step300"
    assert [c["revision"] for c in doc["checkpoints"]] == ["step0", "step200", "step300"]  # every:2 + the final
    assert [c["step"] for c in doc["checkpoints"]] == [0, 200, 300]
    with negdb.connect(str(env["store"])) as cat:
        for ck in doc["checkpoints"]:
            members = cat.sql("SELECT m.layer, m.neuron FROM neuron_set_members m JOIN neuron_sets s USING (set_id) "
                              "WHERE s.name = ?", [ck["set_name"]])
            want = _top(_stats(env["store"], doc["model_id"], ck))
            assert set(members.rows()) == want and ck["n_members"] == len(want) == TrainConfig.layers * K


def test_w_dist_distribution_equals_neuron_stats(env):
    doc = env["doc"]
    for ck in doc["checkpoints"]:
        rows = _stats(env["store"], doc["model_id"], ck).rows()
        for layer in [0, 1, None]:
            xs = [r[2] for r in rows if layer is None or r[0] == layer]
            assert len(xs) == (TrainConfig.d_mlp if layer is not None else 2 * TrainConfig.d_mlp)
            want = {"w_dist_mean": sum(xs) / len(xs), "w_dist_p50": percentile(xs, 50),
                    "w_dist_p90": percentile(xs, 90), "w_dist_p99": percentile(xs, 99), "w_dist_max": max(xs)}
            for q, v in want.items():
                row = _value(doc, ck["revision"], q, layer)
                assert row["value"] == pytest.approx(v, rel=1e-12) and row["n"] == len(xs)
                assert row["ci_lo"] is None and row["step"] == ck["step"]


def test_cohort_and_overlaps(env):
    doc = env["doc"]
    cks = doc["checkpoints"]
    stats = {ck["revision"]: _stats(env["store"], doc["model_id"], ck) for ck in cks}
    tops = {rev: _top(s) for rev, s in stats.items()}
    final = tops["step300"]
    for i, ck in enumerate(cks):
        rev = ck["revision"]
        w = {(r[0], r[1]): r[2] for r in stats[rev].rows()}
        for layer in [0, 1, None]:
            def keep(s):
                return {p for p in s if layer is None or p[0] == layer}

            own, cohort = keep(tops[rev]), keep(final)
            assert _value(doc, rev, "top_w_dist_mean", layer)["value"] == pytest.approx(
                sum(w[p] for p in own) / len(own), rel=1e-12)
            row = _value(doc, rev, "cohort_w_dist_mean", layer)
            assert row["value"] == pytest.approx(sum(w[p] for p in cohort) / len(cohort), rel=1e-12)
            assert row["n"] == len(cohort)
            row = _value(doc, rev, "overlap_final", layer)
            assert row["value"] == pytest.approx(len(own & cohort) / len(own | cohort))
            assert row["n"] == len(own | cohort)
            if i == 0:
                assert not [r for r in doc["rows"] if r["revision"] == rev and r["quantity"] == "overlap_prev"]
            else:
                prev = keep(tops[cks[i - 1]["revision"]])
                assert _value(doc, rev, "overlap_prev", layer)["value"] == pytest.approx(
                    len(own & prev) / len(own | prev))
    # at the final checkpoint the cohort is its own top set
    assert _value(doc, "step300", "overlap_final")["value"] == 1.0
    assert (_value(doc, "step300", "cohort_w_dist_mean")["value"]
            == _value(doc, "step300", "top_w_dist_mean")["value"])


def test_ablation_rows_equal_the_stored_comparison(env):
    from negdb.ablate.stored import stored_comparison

    doc = env["doc"]
    with negdb.connect(str(env["store"])) as cat:
        for ck in doc["checkpoints"]:
            cmp = stored_comparison(cat, ck["ablation_id"])
            assert {(r.benchmark, r.metric) for r in cmp.rows} >= {("wikitext2", "ppl"), ("blimp", "acc_sum"),
                                                                    ("tse", "acc_mean")}
            for r in cmp.rows:
                row = _value(doc, ck["revision"], f"delta_{r.condition}", None, r.benchmark, r.metric)
                assert (row["value"], row["ci_lo"], row["ci_hi"], row["n"]) == (r.delta, r.lo, r.hi, r.n)
                base = _value(doc, ck["revision"], "baseline", None, r.benchmark, r.metric)
                assert base["value"] == r.baseline
                w_minus = _value(doc, ck["revision"], "w_minus_random", None, r.benchmark, r.metric)
                abl = _value(doc, ck["revision"], "delta_ablation", None, r.benchmark, r.metric)
                rnd = _value(doc, ck["revision"], "delta_random", None, r.benchmark, r.metric)
                assert w_minus["value"] == pytest.approx(abl["value"] - rnd["value"], abs=1e-12)
                assert w_minus["ci_lo"] <= w_minus["ci_hi"]
    # the ablation is really applied at the final checkpoint: perplexity moves
    assert _value(doc, "step300", "delta_ablation", None, "wikitext2", "ppl")["value"] != 0


def _results(store: Path, ablation_id: str) -> dict[str, dict[str, str]]:
    """condition -> {benchmark: result_id} of a stored ablation (seeds=1)."""
    abl = pl.from_arrow(pq.read_table(store / "tables" / "ablations" / f"{ablation_id}.parquet"))
    res = pl.concat([pl.from_arrow(pq.read_table(p)) for p in (store / "tables" / "eval_results").glob("*.parquet")])
    bench = dict(zip(res["result_id"].to_list(), res["benchmark"].to_list()))
    return {row["condition"]: {bench[r]: r for r in row["result_ids"]} for row in abl.iter_rows(named=True)}


def _items(store: Path, rid: str) -> pl.DataFrame:
    return pl.from_arrow(pq.read_table(store / "tables" / "eval_items" / f"{rid}.parquet")).sort("item")


def test_w_minus_random_ci_by_brute_force(env):
    store, doc = env["store"], env["doc"]
    ck = doc["checkpoints"][-1]
    ids = _results(store, ck["ablation_id"])
    w, r = _items(store, ids["ablation"]["wikitext2"]), _items(store, ids["random"]["wikitext2"])
    nll_w = [-lp[0] for lp in w["logprobs"].to_list()]
    nll_r = [-lp[0] for lp in r["logprobs"].to_list()]
    n = [float(t[0]) for t in w["n_tokens"].to_list()]
    delta, lo, hi = ppl_reference(nll_w, n, nll_r, n, N_BOOT, 0)
    row = _value(doc, ck["revision"], "w_minus_random", None, "wikitext2", "ppl")
    assert (row["value"], row["ci_lo"], row["ci_hi"]) == pytest.approx((delta, lo, hi), rel=1e-9)
    # BLiMP: paired over items within each paradigm, macro over paradigms
    w, r = _items(store, ids["ablation"]["blimp"]), _items(store, ids["random"]["blimp"])
    groups = list(dict.fromkeys(w["grp"].to_list()))
    strata = [([float(x) for x in w.filter(pl.col("grp") == g)["correct"]],
               [float(x) for x in r.filter(pl.col("grp") == g)["correct"]]) for g in groups]
    observed, boots = stratified_reference(strata, N_BOOT, 0)
    row = _value(doc, ck["revision"], "w_minus_random", None, "blimp", "acc_sum")
    assert row["value"] == pytest.approx(observed, abs=1e-12)
    assert (row["ci_lo"], row["ci_hi"]) == pytest.approx(ci(boots), abs=1e-12)


# ------------------------------------------------------------------------------------------ re-use


def test_stored_checkpoints_are_not_reingested(env):
    store, doc = env["store"], env["doc"]
    assert {c["revision"]: c["ingest"] for c in doc["checkpoints"]} == {
        "step0": "ingested", "step200": "ingested", "step300": "already"}
    with negdb.connect(str(store)) as cat:
        runs = cat.sql("SELECT revision, count(*) AS n FROM runs WHERE kind = 'ingest' GROUP BY 1 ORDER BY 1")
    assert dict(runs.rows()) == {"step0": 1, "step100": 1, "step200": 1, "step300": 1}
    assert env["runs_pre"] <= _table_files(store, "runs")
    # 3 checkpoints x (baseline, ablation, random) x (ppl, blimp, tse)
    assert "2 checkpoint(s) ingested, 27 evaluations computed, 0 read from the store" in env["first"].stderr
    doc3 = env["doc3"]
    assert [c["revision"] for c in doc3["checkpoints"]] == ["step0", "step100", "step200", "step300"]
    assert {c["revision"]: c["ingest"] for c in doc3["checkpoints"]}["step100"] == "ingested"
    assert [c["ingest"] for c in doc3["checkpoints"] if c["revision"] != "step100"] == ["already"] * 3


def test_repeat_computes_nothing(env):
    second = env["second"]
    assert env["files2"] == env["files1"]  # not one file added or rewritten
    assert "read from the store" in second.stderr and "loading" not in second.stderr
    assert "already ingested" not in second.stderr  # not even a model loaded to check
    assert "loading" in env["first"].stderr
    row = _value(env["doc"], "step300", "w_dist_mean")
    assert f"{row['value']:.4f}" in second.stdout  # the table shows the stored numbers


def test_more_checkpoints_reuse_the_stored_evaluations(env):
    store = env["store"]
    third = env["third"]
    assert "1 checkpoint(s) ingested, 9 evaluations computed, 27 read from the store" in third.stderr
    new = _table_files(store, "eval_results") - env["evals1"]
    assert len(new) == 9  # baseline, ablation, random x (ppl, blimp, tse) of step100 only
    res = pl.concat([pl.from_arrow(pq.read_table(store / "tables" / "eval_results" / f)) for f in sorted(new)])
    assert set(res["revision"].to_list()) == {"step100"}
    # the shared checkpoints' rows are the same numbers in both analyses
    doc, doc3 = env["doc"], env["doc3"]
    for rev in ("step0", "step200"):
        for q in ("w_dist_p99", "top_w_dist_mean", "cohort_w_dist_mean", "overlap_final"):
            assert _value(doc3, rev, q)["value"] == _value(doc, rev, q)["value"]
        assert (_value(doc3, rev, "delta_ablation", None, "blimp", "acc_sum")
                == _value(doc, rev, "delta_ablation", None, "blimp", "acc_sum"))
    # with step100 in the list, step200's previous checkpoint is step100
    cks = {c["revision"]: c for c in doc3["checkpoints"]}
    a, b = (_top(_stats(store, doc3["model_id"], cks[r])) for r in ("step200", "step100"))
    assert _value(doc3, "step200", "overlap_prev")["value"] == pytest.approx(len(a & b) / len(a | b))


def test_analyses_row_and_python_api(env):
    store, doc = env["store"], env["doc"]
    with negdb.connect(str(store)) as cat:
        a = cat.sql("SELECT * FROM analyses WHERE analysis_id = ?", [doc["analysis_id"]])
        n = cat.sql("SELECT count(*) AS n FROM training_dynamics WHERE analysis_id = ?", [doc["analysis_id"]])
    assert a.height == 1 and a["kind"][0] == "training" and a["revision"][0] == "step300"
    config = json.loads(a["config_json"][0])
    assert config["revisions"] == ["step0", "step200", "step300"] and config["top"] == "1%"
    assert n["n"][0] == len(doc["rows"])
    from negdb.evals.options import Bootstrap, Sampling, Scoring
    from negdb.ingest.plan import IngestSpec

    spec = TrainingSpec(IngestSpec(str(env["run"]), checkpoints="every:2", tokens=512, seq_len=32, md_pairs=100,
                                   activations="none"),
                        sampling=Sampling(limit=1, ppl_tokens=256), scoring=Scoring(window=64),
                        bootstrap=Bootstrap(N_BOOT))
    res = run(spec, store, progress=False, log=lambda _m: None)
    assert res.reused and res.analysis_id == doc["analysis_id"]
    assert res.rows.drop("analysis_id").to_dicts() == doc["rows"]


def test_evals_none_gives_the_same_statistics(env):
    store, doc = env["store"], env["doc"]
    before = _table_files(store, "eval_results")
    res = cli(store, "analyze", "training", "--model", str(env["run"]), "--checkpoints", "every:2", *ARGS,
              "--evals", "none", "--format", "json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["analysis_id"] != doc["analysis_id"]
    assert not [r for r in out["rows"] if r["benchmark"] is not None]
    assert out["rows"] == [r for r in doc["rows"] if r["benchmark"] is None]
    assert _table_files(store, "eval_results") == before


def test_csv_output(env, tmp_path):
    out = tmp_path / "t.csv"
    res = cli(env["store"], "analyze", "training", "--model", str(env["run"]), "--checkpoints", "every:2", *ARGS,
              "--format", "csv", "--out", str(out))
    assert res.exit_code == 0, res.output
    df = pl.read_csv(out)
    assert df.height == len(env["doc"]["rows"])
    assert set(df["quantity"].unique()) >= {"w_dist_mean", "overlap_final", "delta_ablation", "w_minus_random"}


# ------------------------------------------------------------------------------------------ errors


@pytest.mark.parametrize("args", [
    ["--checkpoints", "final"],  # one checkpoint
    ["--checkpoints", "step999"],
    ["--checkpoints", "every:0"],
    ["--top", "0"],
    ["--by", "nope"],
    ["--evals", "blimp,nope"],
    ["--mode", "zero"],
    ["--controls", "bogus"],
    ["--limit", "0"],
    ["--seeds", "0"],
    ["--tokens", "0"],
    ["--window", "1"],
])
def test_bad_arguments_give_one_error_line_and_store_nothing(env, args):
    before = _files(env["store"])
    res = cli(env["store"], "analyze", "training", "--model", str(env["run"]), *ARGS, *args)
    assert_one_error(res)
    assert _files(env["store"]) == before


def test_unknown_model_gives_one_error_line(tmp_path):
    assert_one_error(cli(tmp_path / "s", "analyze", "training", "--model", str(tmp_path / "nowhere"), "--quiet"),
                     UnknownModel)
    assert not (tmp_path / "s").exists()


# ------------------------------------------------------------------------------------------ pure functions


def test_quantity_functions_on_a_small_frame():
    w = pl.DataFrame({"layer": [0, 0, 0, 1, 1, 1], "neuron": [0, 1, 2, 0, 1, 2],
                      "w_dist": [0.1, 0.5, float("nan"), 0.2, 0.4, 0.9]},
                     schema={"layer": pl.Int32, "neuron": pl.Int32, "w_dist": pl.Float64})
    rows = {(r["quantity"], r["layer"]): r for r in distribution_rows(w)}
    assert rows[("w_dist_mean", 0)]["value"] == pytest.approx(0.3) and rows[("w_dist_mean", 0)]["n"] == 2
    assert rows[("w_dist_p90", 1)]["value"] == pytest.approx(0.4 + 0.8 * 0.5)  # linear between 0.4 and 0.9
    assert rows[("w_dist_max", None)]["value"] == 0.9 and rows[("w_dist_max", None)]["n"] == 5
    assert rows[("w_dist_p50", None)]["value"] == pytest.approx(0.4)
    members = pl.DataFrame({"layer": [0, 0, 1], "neuron": [1, 2, 2]}, schema={"layer": pl.Int32, "neuron": pl.Int32})
    means = {r["layer"]: (r["value"], r["n"]) for r in set_mean_rows(w, members, "m")}
    assert means == {0: (0.5, 1), 1: (0.9, 1), None: (pytest.approx(0.7), 2)}  # the NaN member is left out
    other = pl.DataFrame({"layer": [0, 1, 1], "neuron": [1, 0, 2]}, schema={"layer": pl.Int32, "neuron": pl.Int32})
    jac = {r["layer"]: (r["value"], r["n"]) for r in jaccard_rows(members, other, "j")}
    assert jac == {0: (0.5, 2), 1: (0.5, 2), None: (pytest.approx(2 / 4), 4)}
