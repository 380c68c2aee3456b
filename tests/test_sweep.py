"""``negdb sweep`` end to end on a tiny ingested store, and its statistics against references written here.

The references follow the definitions (docs/ANALYSES.md, the docstring of :mod:`negdb.sweep.contrasts`) with plain
Python loops over the stored items read directly from the segments; only the documented random draws
(``numpy.random.default_rng(seed).integers`` blocks) are shared with the code under test.
"""

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
from negdb.errors import NotFound, StoreError
from negdb.ablate import conditions
from negdb.ablate.options import Controls
from negdb.evals.options import Sampling, Scoring
from negdb.ablate.evaluate import make_key
from negdb.evals import registry
from negdb.store.results import lookup
from negdb.store.tables import SWEEP_SUMMARY
from negdb.sweep import SweepSpec, plan, run
from negdb.sweep.estimate import estimate
from negdb.sweep.grid import selection, setup
from tests.ablate_helpers import draws, percentile, ppl_reference, table_files
from tests.ingest_helpers import assert_one_error, cli, ingest_into
from tests.tiny_models import save_tiny

pytestmark = pytest.mark.timeout(300)

N_BOOT = 200
GRID = ["--fractions", "10,20", "--by", "w_dist,std", "--modes", "neg,pos", "--seeds", "2", "--seed", "1",
        "--controls", "ppl-matched", "--evals", "tse,copa,ppl", "--limit", "2,copa=4", "--ppl-tokens", "128", "--probe-tokens", "128",
        "--window", "64", "--resolution", "0.1", "--max-fraction", "0.4", "--n-boot", str(N_BOOT), "--quiet"]
OPTS = dict(fractions=(0.1, 0.2), by=("w_dist", "std"), modes=("neg", "pos"), seeds=(1, 2),
            controls=Controls(kinds=["ppl-matched"], probe_tokens=128, resolution=0.1, max_fraction=0.4),
            evals=("tse", "copa", "ppl"), sampling=Sampling(limit={"*": 2, "copa": 4}, ppl_tokens=128),
            scoring=Scoring(window=64), n_boot=N_BOOT)
REAL_EVALUATE = conditions.evaluate
COL = {"acc_sum": "correct", "acc": "correct", "acc_mean": "correct_alt", "acc_norm": "correct_alt"}


def _counting(computed: list[str], stop_after: int | None = None):
    """A stand-in for ``evaluate`` that records the keys it had to compute (and can stop the run like Ctrl-C)."""
    real = REAL_EVALUATE

    def ev(layout, target, bench, rule, **kw):
        rid = make_key(target, bench, rule, kw.get("limit"), kw.get("seed", 0)).result_id
        if lookup(layout, rid) is None:
            if stop_after is not None and len(computed) >= stop_after:
                raise KeyboardInterrupt
            computed.append(rid)
        return real(layout, target, bench, rule, **kw)

    return ev


@pytest.fixture(scope="module")
def env(tmp_path_factory, short_wikitext):
    model = save_tiny(tmp_path_factory.mktemp("m") / "neox", "gpt_neox", seed=0)
    store = ingest_into(tmp_path_factory, model)
    dry = cli(store, "sweep", "--model", str(model), *GRID, "--dry-run")
    assert dry.exit_code == 0, dry.output
    computed: list[str] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(conditions, "evaluate", _counting(computed))
        first = cli(store, "sweep", "--model", str(model), *GRID, "--format", "json")
    assert first.exit_code == 0, first.output
    files1 = {t: table_files(store, t) for t in ("eval_results", "analyses", "sweep_points", "sweep_summary")}
    out = tmp_path_factory.mktemp("out") / "sweep.txt"
    again: list[str] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(conditions, "evaluate", _counting(again))
        second = cli(store, "sweep", "--model", str(model), *GRID, "--out", str(out))
    assert second.exit_code == 0, second.output
    doc = json.loads(first.stdout)
    return {"store": store, "model": str(model), "dry": dry, "first": first, "second": second, "doc": doc,
            "computed": computed, "again": again, "out": out, "files1": files1,
            "files2": {t: table_files(store, t) for t in files1}, "points": pl.DataFrame(doc["points"]),
            "rows": pl.DataFrame(doc["rows"])}


def _items(store: Path, rid: str) -> pl.DataFrame:
    return pl.from_arrow(pq.read_table(store / "tables" / "eval_items" / f"{rid}.parquet")).sort("item")


def _point_ids(env, selector: str, fraction: float, mode: str, condition: str, bench: str) -> list[tuple[str, str]]:
    """(result_id, baseline_id) per seed, seed order, of one condition and benchmark, from the stored points."""
    p = env["points"].filter((pl.col("selector") == selector) & (pl.col("fraction") == fraction)
                             & (pl.col("mode") == mode) & (pl.col("condition") == condition)
                             & (pl.col("benchmark") == bench)).unique(["seed"]).sort("seed")
    return list(zip(p["result_id"].to_list(), p["baseline_id"].to_list()))


# ------------------------------------------------------------------------------------------ references


def _macro(frame: pl.DataFrame, metric: str, grouped: bool) -> float:
    vals = frame[COL[metric]].cast(pl.Float64).to_list()
    groups = frame["grp"].to_list() if grouped else [None] * len(vals)
    by: dict = {}
    for g, v in zip(groups, vals):
        by.setdefault(g, []).append(v)
    return sum(sum(v) / len(v) for v in by.values()) / len(by)


def _ppl(frame: pl.DataFrame) -> float:
    nll = sum(-lp[0] for lp in frame["logprobs"].to_list())
    return math.exp(nll / sum(n[0] for n in frame["n_tokens"].to_list()))


def ref_acc(pairs: list[tuple[pl.DataFrame, pl.DataFrame]], metric: str, grouped: bool, seed: int):
    """Mean over seeds of the macro difference a - b and its paired-bootstrap CI, by the documented procedure."""
    rng = np.random.default_rng(seed)
    col = COL[metric]
    same = all(fa["item"].to_list() == pairs[0][0]["item"].to_list() for fa, _ in pairs)

    def split(frame: pl.DataFrame, vals: list[float]) -> dict:
        out: dict = {}
        for g, v in zip(frame["grp"].to_list() if grouped else [None] * len(vals), vals):
            out.setdefault(g, []).append(v)
        return out

    per_seed = [(split(fa, fa[col].cast(pl.Float64).to_list()), split(fb, fb[col].cast(pl.Float64).to_list()))
                for fa, fb in pairs]
    groups = list(per_seed[0][0])
    if same:
        strata = {g: [([sum(s[0][g][i] for s in per_seed) / len(per_seed) for i in range(len(per_seed[0][0][g]))],
                       [sum(s[1][g][i] for s in per_seed) / len(per_seed) for i in range(len(per_seed[0][1][g]))])]
                  for g in groups}
    else:
        strata = {g: [(s[0][g], s[1][g]) for s in per_seed] for g in groups}
    value = sum(sum(sum(x - y for x, y in zip(a, b)) / len(a) for a, b in strata[g]) / len(strata[g])
                for g in groups) / len(groups)
    boots = [0.0] * N_BOOT
    for g in groups:
        for a, b in strata[g]:
            d = [x - y for x, y in zip(a, b)]
            for k, row in enumerate(draws(rng, len(d), N_BOOT)):
                boots[k] += sum(d[i] for i in row) / len(d) / len(strata[g]) / len(groups)
    return value, percentile(boots, 2.5), percentile(boots, 97.5), boots


def ref_ppl(pairs: list[tuple[pl.DataFrame, pl.DataFrame]], seed: int):
    """The windows are the same in every seed: NLL averaged over seeds, then the paired ppl bootstrap."""
    def nll(f):
        return [-lp[0] for lp in f["logprobs"].to_list()]
    for fa, fb in pairs:
        assert fa["item"].to_list() == fb["item"].to_list() == pairs[0][0]["item"].to_list()
    na = [sum(v) / len(pairs) for v in zip(*(nll(fa) for fa, _ in pairs))]
    nb = [sum(v) / len(pairs) for v in zip(*(nll(fb) for _, fb in pairs))]
    n = [c[0] for c in pairs[0][0]["n_tokens"].to_list()]
    return ppl_reference(na, n, nb, n, N_BOOT, seed)


def _ref(store: Path, pairs: list[tuple[str, str]], bench: str, metric: str, seed: int):
    frames = [(_items(store, a), _items(store, b)) for a, b in pairs]
    if metric == "ppl":
        return ref_ppl(frames, seed)
    return ref_acc(frames, metric, registry.get(bench).group is not None, seed)[:3]


def _check(row: dict, ref: tuple) -> None:
    assert row["value"] == pytest.approx(ref[0], abs=1e-9)
    assert row["ci_lo"] == pytest.approx(ref[1], abs=1e-9)
    assert row["ci_hi"] == pytest.approx(ref[2], abs=1e-9)


# ------------------------------------------------------------------------------------------ the grid


def test_sets_are_an_independent_ranking_of_neuron_stats(env):
    files = sorted((env["store"] / "tables" / "neuron_stats").rglob("*.parquet"))
    stats = pl.concat([pl.from_arrow(pq.read_table(f)) for f in files], how="diagonal_relaxed")
    members = pl.concat([pl.from_arrow(pq.read_table(f)) for f in
                         (env["store"] / "tables" / "neuron_set_members").glob("*.parquet")])
    abl = env["points"].filter(pl.col("condition") == "ablation").unique(["selector", "fraction", "set_id"])
    assert abl.height == 4  # (w_dist, std) x (10%, 20%), the same set for both modes and seeds
    for r in abl.iter_rows(named=True):
        want = set()
        for layer in range(3):
            col = stats.filter(pl.col("layer") == layer)
            vals = [(float(v), int(n)) for v, n in zip(col[r["selector"]].to_list(), col["neuron"].to_list())
                    if v is not None and not math.isnan(v)]
            k = max(1, round(r["fraction"] * 64))
            want |= {(layer, n) for _, n in sorted(vals, key=lambda t: (-t[0], t[1]))[:k]}
        got = members.filter(pl.col("set_id") == r["set_id"])
        assert set(zip(got["layer"].to_list(), got["neuron"].to_list())) == want
        assert r["n_neurons"] == len(want) == 3 * max(1, round(r["fraction"] * 64))
    # every (point, condition, seed) is there: 2 selectors x 2 fractions x 2 modes x 2 seeds
    per = env["points"].filter(pl.col("benchmark") == "copa").group_by("condition").len()
    counts = dict(zip(per["condition"].to_list(), per["len"].to_list()))
    assert counts["ablation"] == 16 and 0 < counts.get("ppl-matched", 0) <= 16 and "random" not in counts


def test_bottom_direction_and_other_selectors(env):
    with negdb.connect(str(env["store"])) as cat:
        st = setup(cat, SweepSpec(env["model"], **{**OPTS, "by": ["kurtosis"]}))
        sel = selection(cat, SweepSpec(env["model"], direction="bottom"), st.keys, "kurtosis", 0.05)
        stats = cat.sql("SELECT layer, neuron, kurtosis FROM neuron_stats")
    want = set()
    for layer in range(3):
        col = stats.filter(pl.col("layer") == layer)
        vals = sorted((float(v), int(n)) for v, n in zip(col["kurtosis"].to_list(), col["neuron"].to_list())
                      if v is not None and not math.isnan(v))
        want |= {(layer, n) for _, n in vals[:round(0.05 * 64)]}
    assert set(sel.members.iter_rows()) == want


def test_points_equal_the_stored_items(env):
    store = env["store"]
    pts = env["points"].filter(pl.col("result_id").is_not_null())
    assert pts.height > 0
    for r in pts.iter_rows(named=True):
        a, b = _items(store, r["result_id"]), _items(store, r["baseline_id"])
        assert a["item"].to_list() == b["item"].to_list() and r["n"] == a.height
        if r["metric"] == "ppl":
            value, base = _ppl(a), _ppl(b)
        else:
            grouped = registry.get(r["benchmark"]).group is not None
            value, base = _macro(a, r["metric"], grouped), _macro(b, r["metric"], grouped)
        assert r["value"] == pytest.approx(value, rel=1e-9) and r["baseline"] == pytest.approx(base, rel=1e-9)
        assert r["delta"] == pytest.approx(value - base, abs=1e-9) and r["ci_lo"] <= r["ci_hi"]
    # seeds draw different item subsamples, the baseline of one seed is shared by every point
    tse = pts.filter((pl.col("benchmark") == "tse") & (pl.col("metric") == "acc_mean"))
    assert tse.group_by("seed").agg(pl.col("baseline_id").n_unique())["baseline_id"].to_list() == [1, 1]
    assert tse["baseline_id"].n_unique() == 2
    pm = env["points"].filter(pl.col("condition") == "ppl-matched")
    assert pm["control_fraction"].null_count() == 0 and pm["matched"].null_count() == 0


def test_a_point_is_what_negdb_ablate_computes(env, short_wikitext):
    pm = env["points"].filter(pl.col("condition") == "ppl-matched").sort("selector", "fraction", "mode", "seed")
    r = pm.row(-1, named=True)  # a point that has a matched control (ablate needs one)
    computed: list[str] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(conditions, "evaluate", _counting(computed))
        res = cli(env["store"], "ablate", "--model", env["model"], "--top", f"{100 * r['fraction']:g}%", "--by",
                  r["selector"], "--mode", r["mode"], "--seeds", "1", "--seed", str(r["seed"]), "--sample-seed",
                  str(r["seed"]), "--controls", "ppl-matched", "--evals", "tse,copa,ppl", "--limit", "2,copa=4", "--ppl-tokens", "128",
                  "--probe-tokens", "128", "--window", "64", "--resolution", "0.1", "--max-fraction", "0.4",
                  "--n-boot", str(N_BOOT), "--format", "json", "--quiet")
    assert res.exit_code == 0, res.output
    assert computed == []  # every evaluation of ablate was stored by the sweep
    mine = env["points"].filter((pl.col("selector") == r["selector"]) & (pl.col("fraction") == r["fraction"])
                                & (pl.col("mode") == r["mode"]) & (pl.col("seed") == r["seed"]))
    rows = json.loads(res.stdout)["rows"]
    assert len(rows) == mine.height
    by = {(x["benchmark"], x["metric"], x["condition"]): x for x in mine.iter_rows(named=True)}
    for x in rows:
        y = by[(x["benchmark"], x["metric"], x["condition"])]
        assert (x["value"], x["baseline"], x["delta"], x["lo"], x["hi"]) == pytest.approx(
            (y["value"], y["baseline"], y["delta"], y["ci_lo"], y["ci_hi"]), abs=1e-12)


def test_the_documented_ablate_command_of_a_point(env, short_wikitext):
    """``Sweep.ablate_command`` is a `negdb ablate` run that reads back exactly one point's rows (any point,
    with or without a matched control)."""
    from negdb.sweep import GridPoint

    sw = run(SweepSpec(env["model"], **OPTS), env["store"], progress=False, log=lambda m: None)
    assert sw.from_store
    pts = env["points"]
    for r in pts.select("selector", "fraction", "mode", "seed").unique().sort("selector", "fraction", "mode",
                                                                               "seed").rows()[::5]:
        point, seed = GridPoint(r[0], r[1], r[2]), r[3]
        args = sw.ablate_command(point, seed)
        assert "--set" in args and args[args.index("--control-seed") + 1] == str(seed)
        computed: list[str] = []
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(conditions, "evaluate", _counting(computed))
            res = cli(env["store"], *args, "--format", "json", "--quiet")
        assert res.exit_code == 0, res.output
        assert computed == []
        mine = pts.filter((pl.col("selector") == r[0]) & (pl.col("fraction") == r[1]) & (pl.col("mode") == r[2])
                          & (pl.col("seed") == seed))
        got = {(x["benchmark"], x["metric"], x["condition"]): (x["value"], x["delta"], x["lo"], x["hi"])
               for x in json.loads(res.stdout)["rows"]}
        want = {(x["benchmark"], x["metric"], x["condition"]): (x["value"], x["delta"], x["ci_lo"], x["ci_hi"])
                for x in mine.iter_rows(named=True)}
        assert got.keys() == want.keys()
        for k in got:
            assert got[k] == pytest.approx(want[k], abs=1e-12)


# ------------------------------------------------------------------------------------------ summaries


def test_dose_rows_against_the_stored_items(env):
    store, rows = env["store"], env["rows"].filter(pl.col("kind") == "dose")
    assert rows.filter(pl.col("benchmark").is_in(["grammar", "suite"])).height == 0  # one benchmark of each
    assert set(rows["n_seeds"].to_list()) == {2}
    checked = 0
    for r in rows.iter_rows(named=True):
        ids = _point_ids(env, r["selector"], r["fraction"], r["mode"], r["condition"], r["benchmark"])
        _check(r, _ref(store, ids, r["benchmark"], r["metric"], 1))
        # the value is the mean over seeds of the stored points' deltas (for perplexity here too: each seed
        # scores the same windows under the same set)
        deltas = env["points"].filter((pl.col("selector") == r["selector"]) & (pl.col("fraction") == r["fraction"])
                                      & (pl.col("mode") == r["mode"]) & (pl.col("condition") == r["condition"])
                                      & (pl.col("benchmark") == r["benchmark"]) & (pl.col("metric") == r["metric"]))
        assert r["value"] == pytest.approx(deltas["delta"].mean(), abs=1e-9)
        checked += 1
    assert checked == rows.height >= 2 * 2 * 2 * 2 * 4


def test_selectivity_against_the_stored_items(env):
    store, sel = env["store"], env["rows"].filter(pl.col("kind") == "selectivity")
    assert sel.height > 0 and set(sel["benchmark"].to_list()) == {"selectivity", "grammar", "suite"}
    for (selector, f, mode), g in sel.group_by(["selector", "fraction", "mode"]):
        frames = {b: [(_items(store, a), _items(store, p)) for (a, _), (p, _) in
                      zip(_point_ids(env, selector, f, mode, "ablation", b),
                          _point_ids(env, selector, f, mode, "ppl-matched", b))] for b in ("tse", "copa")}
        dg = ref_acc(frames["tse"], "acc_mean", True, 1 + 0)  # grammar member 0: tse acc_mean
        ds = ref_acc(frames["copa"], "acc", False, 1 + 1)  # suite member 1: copa acc
        si = [s - t for s, t in zip(ds[3], dg[3])]
        got = {r["benchmark"]: r for r in g.iter_rows(named=True)}
        _check(got["selectivity"], (ds[0] - dg[0], percentile(si, 2.5), percentile(si, 97.5)))
        _check(got["grammar"], (-dg[0], -dg[2], -dg[1]))
        # SI is the difference in differences of the losses L = -delta of the dose rows
        dose = env["rows"].filter((pl.col("kind") == "dose") & (pl.col("selector") == selector)
                                  & (pl.col("fraction") == f) & (pl.col("mode") == mode))
        d = {(r["condition"], r["benchmark"]): r["value"] for r in dose.iter_rows(named=True)
             if r["metric"] in ("acc_mean", "acc")}
        did = (-d[("ablation", "tse")] + d[("ppl-matched", "tse")]) - (-d[("ablation", "copa")]
                                                                     + d[("ppl-matched", "copa")])
        assert got["selectivity"]["value"] == pytest.approx(did, abs=1e-9)


def test_sign_and_selector_contrasts_against_the_stored_items(env):
    store, rows = env["store"], env["rows"]
    sign = rows.filter(pl.col("kind") == "sign")
    assert set(sign["mode"].to_list()) == {"neg-pos"} and sign.height == 2 * 2 * 4
    for r in sign.iter_rows(named=True):
        a = _point_ids(env, r["selector"], r["fraction"], "neg", "ablation", r["benchmark"])
        b = _point_ids(env, r["selector"], r["fraction"], "pos", "ablation", r["benchmark"])
        _check(r, _ref(store, [(x[0], y[0]) for x, y in zip(a, b)], r["benchmark"], r["metric"], 1))
    selector = rows.filter(pl.col("kind") == "selector")
    assert set(selector["selector"].to_list()) == {"w_dist-std"} and selector.height == 2 * 2 * 4
    for r in selector.iter_rows(named=True):
        a = _point_ids(env, "w_dist", r["fraction"], r["mode"], "ablation", r["benchmark"])
        b = _point_ids(env, "std", r["fraction"], r["mode"], "ablation", r["benchmark"])
        _check(r, _ref(store, [(x[0], y[0]) for x, y in zip(a, b)], r["benchmark"], r["metric"], 1))


# ------------------------------------------------------------------------------------------ storage, rerun


def test_stored_as_an_analysis_and_queryable(env):
    doc = env["doc"]
    with negdb.connect(str(env["store"])) as cat:
        head = cat.sql("SELECT * FROM analyses WHERE kind = 'sweep'")
        n_points = cat.sql("SELECT count(*) AS n FROM sweep_points WHERE analysis_id = ?", [doc["analysis_id"]])
        n_rows = cat.sql("SELECT count(*) AS n FROM sweep_summary WHERE analysis_id = ?", [doc["analysis_id"]])
    assert head["analysis_id"].to_list() == [doc["analysis_id"]]
    assert n_points["n"][0] == len(doc["points"]) and n_rows["n"][0] == len(doc["rows"])
    config = json.loads(head["config_json"][0])
    assert config["seeds"] == [1, 2] and config["fractions"] == [0.1, 0.2] and config["modes"] == ["neg", "pos"]
    summary = json.loads(head["summary_json"][0])
    assert summary["evaluations_computed"] == len(env["computed"]) == len(set(env["computed"])) > 0


def test_rerun_computes_nothing(env):
    assert env["again"] == []  # no evaluation was even asked for
    assert env["files2"] == env["files1"]
    assert "read back from the store" in env["second"].stderr and "loading" not in env["second"].stderr
    assert "loading" in env["first"].stderr
    assert env["out"].read_text() == env["second"].stdout
    text = env["second"].stdout
    assert "dose-response: tse acc_mean" in text and "selectivity index" in text and "w_dist-std" in text
    r = env["rows"].filter((pl.col("kind") == "dose") & (pl.col("benchmark") == "copa")).row(0, named=True)
    assert f"{r['value']:+.4f} [{r['ci_lo']:+.4f}, {r['ci_hi']:+.4f}]" in text


def test_per_seed_tables_list_each_seeds_delta(env):
    text = env["second"].stdout  # tse and copa only: no grammar or suite means, so their primary metrics
    pts = env["points"].filter(pl.struct("benchmark", "metric").is_in([{"benchmark": "tse", "metric": "acc_mean"},
                                                                       {"benchmark": "copa", "metric": "acc"}]))
    assert set(pts["benchmark"].to_list()) == {"tse", "copa"} and "per seed: wikitext2" not in text
    for (bench, metric), sub in pts.group_by("benchmark", "metric"):
        block = text.split(f"per seed: {bench} {metric}")[1].split("\n\n")[0]
        for (sel, mode, cond, frac), g in sub.group_by("selector", "mode", "condition", "fraction"):
            cell = " / ".join(f"{d:+.4f}" for d in g.sort("seed")["delta"].to_list())
            line = next(x for x in block.splitlines() if x.split()[:3] == [sel, mode, cond])
            assert cell in line and g.height == 2, (bench, sel, mode, cond, frac)


def test_csv_and_json(env, short_wikitext):
    res = cli(env["store"], "sweep", "--model", env["model"], *GRID, "--format", "csv")
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(io.StringIO(res.stdout)))
    assert list(rows[0]) == [c for c, _, _ in SWEEP_SUMMARY.columns] and len(rows) == env["rows"].height
    assert {r["analysis_id"] for r in rows} == {env["doc"]["analysis_id"]}
    doc = json.loads(cli(env["store"], "sweep", "--model", env["model"], *GRID, "--format", "json").stdout)
    assert doc["points"] == env["doc"]["points"] and doc["rows"] == env["doc"]["rows"]
    assert doc["estimate"]["complete"] == env["doc"]["analysis_id"]


# ------------------------------------------------------------------------------------------ estimate, resume


def test_estimate_counts_stored_work(env):
    assert "0 stored" in env["dry"].stdout and "up to" in env["dry"].stdout
    before = env["doc"]["estimate"]
    assert before["stored"] == 0 and before["to_compute"] >= len(env["computed"])
    with negdb.connect(str(env["store"])) as cat:
        opts = SweepSpec(env["model"], **OPTS)
        after = estimate(cat, opts, setup(cat, opts))  # the counts, bypassing "the sweep is stored"
        stored = set(cat.sql("SELECT result_id FROM eval_results")["result_id"].to_list())
    assert after.stored == after.planned > 0 and after.pending == after.probes_left == after.to_compute == 0
    ids = set(env["points"]["result_id"].drop_nulls().to_list()) | set(env["points"]["baseline_id"].drop_nulls())
    assert ids <= set(after.result_ids) <= stored
    assert plan(opts, env["store"]).complete == env["doc"]["analysis_id"]
    assert "nothing to compute" in cli(env["store"], "sweep", "--model", env["model"], *GRID, "--dry-run").stdout


def test_interrupted_sweep_resumes(env, short_wikitext, monkeypatch):
    opts = SweepSpec(env["model"], fractions=[0.3, 0.4], by=["w_dist"], modes=["neg"], seeds=[5],
                     controls=Controls(kinds=["random"]), evals=["copa", "ppl"],
                     sampling=Sampling(limit=3, ppl_tokens=128), scoring=Scoring(window=64), n_boot=50)
    with negdb.connect(str(env["store"])) as cat:
        est1 = estimate(cat, opts, setup(cat, opts))
    first: list[str] = []
    monkeypatch.setattr(conditions, "evaluate", _counting(first, stop_after=3))
    with pytest.raises(KeyboardInterrupt):
        run(opts, env["store"], progress=False, log=lambda m: None)
    assert len(first) == 3 and plan(opts, env["store"]).complete is None  # nothing published
    with negdb.connect(str(env["store"])) as cat:
        est2 = estimate(cat, opts, setup(cat, opts))
    assert est2.stored == est1.stored + 3 and est2.to_compute == est1.to_compute - 3
    second: list[str] = []
    monkeypatch.setattr(conditions, "evaluate", _counting(second))
    sw = run(opts, env["store"], progress=False, log=lambda m: None)
    assert not set(first) & set(second) and sw.computed == len(second) == est2.to_compute
    used = set(pl.DataFrame(sw.points)["result_id"].drop_nulls()) | set(
        pl.DataFrame(sw.points)["baseline_id"].drop_nulls())
    assert set(first) | set(second) <= used  # everything computed is used, once
    assert len(sw.points) == 2 * 2 * 2 and {r["condition"] for r in sw.points} == {"ablation", "random"}


# ------------------------------------------------------------------------------------------ figures


def test_sweep_figures_write_pngs(env, tmp_path):
    from negdb.report.sweep_figures import sweep_figures

    with negdb.connect(str(env["store"])) as cat:
        model_id = cat.sql("SELECT model_id FROM analyses WHERE analysis_id = ?",
                           [env["doc"]["analysis_id"]])["model_id"][0]
        figs = sweep_figures(cat, model_id, tmp_path, env["doc"]["analysis_id"])
        latest = sweep_figures(cat, model_id, tmp_path / "latest")  # the resumed sweep when it ran: no selectivity
        assert sweep_figures(cat, "no-such-model", tmp_path / "none") == []
    titles = [f["title"] for f in figs]
    assert any("dose-response (neg)" in t for t in titles) and any("selectivity" in t for t in titles)
    assert any("sign" in t for t in titles) and any("selector" in t for t in titles)
    for f in figs:
        data = (tmp_path / f["png"]).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
        assert model_id in f["caption"] and "bootstrap" in f["caption"] and f["table_html"].startswith("<table")
    assert latest and all((tmp_path / "latest" / f["png"]).stat().st_size > 0 for f in latest)


# ------------------------------------------------------------------------------------------ errors


@pytest.mark.parametrize("args", [
    ["--by", "nope"],
    ["--by", ""],
    ["--fractions", "0"],
    ["--fractions", "150"],
    ["--fractions", "abc"],
    ["--modes", "zap"],
    ["--seeds", "0"],
    ["--direction", "sideways"],
    ["--evals", "nope"],
    ["--limit", "0"],
    ["--controls", "bogus"],
    ["--n-boot", "0"],
    ["--resolution", "0.95"],
    ["--checkpoint", "step999"],
])
def test_bad_input_gives_one_error_line(env, args):
    before = table_files(env["store"], "eval_results")
    res = cli(env["store"], "sweep", "--model", env["model"], *GRID, *args)
    assert_one_error(res)
    assert table_files(env["store"], "eval_results") == before


def test_missing_store_and_model(env, tmp_path):
    res = cli(tmp_path / "nowhere", "sweep", "--model", env["model"], "--quiet")
    assert_one_error(res, StoreError)
    assert "not a negdb store" in res.stderr and not (tmp_path / "nowhere").exists()
    assert_one_error(cli(env["store"], "sweep", "--model", "no-such-model", "--dry-run"), NotFound)


def test_per_seed_tables_prefer_the_grammar_and_suite_means():
    from types import SimpleNamespace

    from negdb.sweep.render import _per_seed

    pts = [{"selector": "w_dist", "mode": "neg", "condition": c, "fraction": 0.01, "seed": s, "benchmark": b,
            "metric": m, "delta": d}
           for c, s, b, m, d in [("ablation", 1, "grammar", "mean", -0.02), ("ablation", 0, "grammar", "mean", -0.04),
                                 ("random", 0, "grammar", "mean", 0.001), ("random", 1, "grammar", "mean", 0.0),
                                 ("ablation", 0, "blimp", "acc_sum", -0.5), ("ablation", 1, "blimp", "acc_sum", -0.5)]]
    text = "\n".join(_per_seed(SimpleNamespace(points=pts, config={"seeds": [0, 1]}), [0.01]))
    assert "per seed: grammar mean" in text and "blimp" not in text
    assert "ablation   -0.0400 / -0.0200" in text and "random     +0.0010 / +0.0000" in text
