"""``negdb analyze pairs`` on a tiny ingested store: pair scores, the both-negative filter, ranking, contexts and
the per-layer negative shares against independent numpy/polars computations from the stored arrays and
statistics; reruns read the stored analysis back; bad input gives one error line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest
import zarr

import negdb
from negdb.analyze import pairs as ap
from negdb.errors import BadArgument, NotFound
from negdb.stats.mapping import mapping_difficulty
from tests.ingest_helpers import assert_one_error, cli, ingest_into
from tests.tiny_models import save_tiny, tiny_tokenizer

pytestmark = pytest.mark.timeout(300)
P = 100  # TINY's --md-pairs


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A tiny model whose layers 0 and 1 keep activations and md inputs (layer 2: statistics only)."""
    folder = save_tiny(tmp_path_factory.mktemp("m") / "neox", "gpt_neox", seed=3)
    store = ingest_into(tmp_path_factory, folder, "--activations", "layers=0,1")
    with negdb.connect(str(store)) as cat:
        path = cat.sql("SELECT array_path FROM activations WHERE layer = 0")["array_path"][0]
        stats = cat.sql("SELECT * FROM neuron_stats ORDER BY layer, neuron")
    return {"store": store, "model": str(folder.resolve()), "group": (store / path).parent.parent, "stats": stats}


def _reference(env: dict, layer: int, index: int) -> dict[str, np.ndarray]:
    """Pair scores straight from the Zarr arrays, from the definition."""
    g = zarr.open_group(str(env["group"]), mode="r")
    (md_key,) = [k for k in g["md"].group_keys()]
    pairs = np.asarray(g["md"][md_key]["pairs"][:])
    h_rows = np.asarray(g["md"][md_key][f"L{layer:03d}"][:]).astype(np.float64)
    x = np.asarray(g["preact"][f"L{layer:03d}"][:, index]).astype(np.float64)
    row_of = {t: i for i, t in enumerate(sorted(set(pairs.ravel().tolist())))}  # stored rows: sorted pair tokens
    a, b = pairs[:, 0], pairs[:, 1]
    dist = np.array([np.sqrt(((h_rows[row_of[int(i)]] - h_rows[row_of[int(j)]]) ** 2).sum()) for i, j in pairs])
    d_in = dist / dist.max()
    used = d_in > 0  # identical MLP inputs (e.g. one token at position 0 of two windows) leave 0/0: dropped
    diff = np.abs(x[a] - x[b])
    d_out = np.where(used, diff / np.median(diff[used]), np.nan)
    ratio = np.where(used, d_out / np.where(used, d_in, 1.0), np.nan)
    return {"a": a, "b": b, "x_a": x[a], "x_b": x[b], "d_in": d_in, "d_out": d_out, "ratio": ratio,
            "used": used, "token_ids": np.asarray(g["token_ids"][:])}


def _run(env: dict, n_boot: int = 1000, seed: int = 0, **kw) -> ap.PairAnalysis:
    from negdb.evals.options import Bootstrap

    return ap.run(ap.PairsSpec(model=env["model"], bootstrap=Bootstrap(n_boot, seed), **kw), env["store"],
                  tokenizer=tiny_tokenizer())


@pytest.mark.parametrize(("layer", "index"), [(0, 3), (1, 40)])
def test_pair_scores_and_ranking_all_signs(env, layer, index) -> None:
    ref = _reference(env, layer, index)
    used = [k for k in range(P) if ref["used"][k]]
    assert len(ref["a"]) == P and len(used) > P // 2
    res = _run(env, layer=layer, index=index, k=P, all_signs=True)
    df = res.pairs
    assert df.height == len(used) and df["rank"].to_list() == list(range(1, len(used) + 1))
    order = sorted(used, key=lambda k: (-ref["ratio"][k], k))
    np.testing.assert_array_equal(df["token_a"].to_numpy(), ref["a"][order])
    np.testing.assert_array_equal(df["token_b"].to_numpy(), ref["b"][order])
    for col in ("x_a", "x_b", "d_in", "d_out", "ratio"):
        np.testing.assert_allclose(df[col].to_numpy(), ref[col][order], rtol=1e-9, err_msg=col)
    signs = ["neg" if xa < 0 and xb < 0 else "pos" if xa >= 0 and xb >= 0 else "mixed"
             for xa, xb in zip(ref["x_a"][order], ref["x_b"][order])]
    assert df["signs"].to_list() == signs
    # md = mean ratio: equal to the stored statistic and to stats.mapping
    nr = res.summary["neuron"]
    stored = env["stats"].filter((pl.col("layer") == layer) & (pl.col("neuron") == index))["md"][0]
    assert nr["md"] == pytest.approx(ref["ratio"][used].mean(), rel=1e-9)
    assert nr["md"] == pytest.approx(stored, rel=1e-6) and nr["md_stored"] == pytest.approx(stored, rel=1e-12)
    md = mapping_difficulty(ref["x_a"][:, None], ref["x_b"][:, None], ref["d_in"])[0]
    assert nr["md"] == pytest.approx(md, rel=1e-9)
    assert nr["n_pairs"] == P and nr["n_used"] == nr["eligible"] == len(used)


def test_both_negative_filter_and_class_summary(env) -> None:
    layer, index, k = 1, 40, 7
    ref = _reference(env, layer, index)
    neg = [i for i in range(P) if ref["x_a"][i] < 0 and ref["x_b"][i] < 0 and ref["used"][i]]
    assert 0 < len(neg) < P  # the filter has something to drop
    full = _run(env, layer=layer, index=index, k=P).pairs
    assert sorted(zip(full["token_a"].to_list(), full["token_b"].to_list())) == sorted(
        (int(ref["a"][i]), int(ref["b"][i])) for i in neg)
    assert (full["x_a"] < 0).all() and (full["x_b"] < 0).all() and set(full["signs"]) == {"neg"}
    top = _run(env, layer=layer, index=index, k=k)
    want = sorted(neg, key=lambda i: (-ref["ratio"][i], i))[:k]
    assert top.pairs["token_a"].to_list() == [int(ref["a"][i]) for i in want]
    np.testing.assert_allclose(top.pairs["ratio"].to_numpy(), ref["ratio"][want], rtol=1e-9)
    assert top.analysis_id != _run(env, layer=layer, index=index, k=k, all_signs=True).analysis_id
    classes = top.summary["neuron"]["classes"]
    for name, pick in (("neg", lambda xa, xb: xa < 0 and xb < 0), ("pos", lambda xa, xb: xa >= 0 and xb >= 0),
                       ("mixed", lambda xa, xb: (xa < 0) != (xb < 0)), ("all", lambda xa, xb: True)):
        r = [ref["ratio"][i] for i in range(P) if ref["used"][i] and pick(ref["x_a"][i], ref["x_b"][i])]
        assert classes[name]["n"] == len(r)
        assert classes[name]["mean_ratio"] == pytest.approx(float(np.mean(r)), rel=1e-9)
        assert classes[name]["median_ratio"] == pytest.approx(float(np.median(r)), rel=1e-9)
    assert top.summary["neuron"]["eligible"] == len(neg)
    best_any = sorted(np.flatnonzero(ref["used"]), key=lambda i: (-ref["ratio"][i], i))[:k]
    assert top.summary["neuron"]["top_any_neg_share"] == pytest.approx(
        np.mean([i in neg for i in best_any]))


@pytest.mark.parametrize("width", [0, 3])
def test_contexts_contain_the_token(env, width) -> None:
    ref = _reference(env, 0, 3)
    tok = tiny_tokenizer()
    df = _run(env, layer=0, index=3, k=5, context=width).pairs
    assert df.height == 5
    for r in df.iter_rows(named=True):
        for side in ("a", "b"):
            text = tok.decode([int(ref["token_ids"][r[f"token_{side}"]])], skip_special_tokens=False,
                              clean_up_tokenization_spaces=False)
            assert r[f"text_{side}"] == text
            assert f"[[{text}]]" in r[f"context_{side}"]
            if width == 0:
                assert r[f"context_{side}"].strip(".") == f"[[{text}]]"


def test_pair_scores_edge_cases() -> None:
    s = ap.pair_scores(np.array([0.0, 1.0, 3.0, -2.0]), np.array([0.0, 0.0, 0.0, -1.0]),
                       np.array([0.5, 1.0, 0.0, 0.25]))
    # d_in == 0 drops pair 2: |diff| of the others = 0, 1, 1 -> median 1
    assert s.median == 1.0 and s.used.tolist() == [True, True, False, True]
    np.testing.assert_array_equal(s.d_out, [0.0, 1.0, np.nan, 1.0])
    np.testing.assert_array_equal(s.ratio, [0.0, 1.0, np.nan, 4.0])
    assert s.md == pytest.approx(5 / 3)
    signs = ap.sign_classes(np.array([-1, -1, 0, 2, 0, -1]), np.array([-3, 1, 0, -2, -1, 0]))
    assert signs.tolist() == ["neg", "mixed", "pos", "mixed", "mixed", "mixed"]  # zero counts as non-negative
    # ties go to the lower index; NaN never ranks
    idx = ap.top_pairs(np.array([2.0, np.nan, 5.0, 2.0, 5.0]), np.array(["neg"] * 5), 4)
    assert idx.tolist() == [2, 4, 0, 3]
    assert ap.top_pairs(np.array([9.0, 1.0]), np.array(["pos", "neg"]), 5).tolist() == [1]
    zero = ap.pair_scores(np.ones(3), np.ones(3), np.ones(3))  # zero median: undefined, not a division by zero
    assert np.isnan(zero.ratio).all() and np.isnan(zero.md)
    rng = np.random.default_rng(1)
    xa, xb, d = rng.normal(size=50), rng.normal(size=50), rng.uniform(size=50)
    d[[3, 7]] = 0.0
    assert ap.pair_scores(xa, xb, d).md == pytest.approx(mapping_difficulty(xa[:, None], xb[:, None], d)[0])
    with pytest.raises(BadArgument):
        ap.pair_scores(np.ones(3), np.ones(2), np.ones(3))


def _share_reference(df: pl.DataFrame, n_boot: int, seed: int) -> dict:
    w, neg, frac = (df[c].to_numpy().astype(np.float64) for c in ("w_dist", "w_dist_neg", "frac_neg"))
    share = neg / w
    rng = np.random.default_rng(seed)  # neurons resampled with replacement: one (n_boot, n) draw
    boots = share[rng.integers(0, len(share), size=(n_boot, len(share)))].mean(axis=1)
    return {"n_neurons": len(share), "share_mean": share.mean(), "share_pooled": neg.sum() / w.sum(),
            "neg_mass_mean": frac.mean(), "ci_lo": np.percentile(boots, 2.5), "ci_hi": np.percentile(boots, 97.5)}


def test_neg_shares_against_neuron_stats(env) -> None:
    stats = env["stats"]
    np.testing.assert_allclose((stats["w_dist_neg"] + stats["w_dist_pos"]).to_numpy(), stats["w_dist"].to_numpy(),
                               rtol=1e-9)
    res = _run(env, n_boot=200, seed=7)
    assert res.pairs.height == 0 and res.summary["neuron"] is None
    got = {(r["layer"], r["selection"]): r for r in res.shares.to_dicts()}
    assert sorted(got, key=str) == sorted([(layer, s) for layer in (0, 1, 2, None)
                                           for s in ("top1", "rest", "all")], key=str)
    tops = []
    for layer in (0, 1, 2):
        part = stats.filter(pl.col("layer") == layer)
        k = max(1, round(0.01 * part.height))
        order = sorted(range(part.height), key=lambda i: (-part["w_dist"][i], part["neuron"][i]))
        is_top = pl.Series(np.isin(np.arange(part.height), order[:k]))
        tops.append(part.filter(is_top))
        for sel, df in (("top1", part.filter(is_top)), ("rest", part.filter(~is_top)), ("all", part)):
            want = _share_reference(df, 200, 7)
            for key, value in want.items():
                assert got[(layer, sel)][key] == pytest.approx(value, rel=1e-9), (layer, sel, key)
    top_all = pl.concat(tops)
    rest_all = stats.join(top_all.select("layer", "neuron"), on=["layer", "neuron"], how="anti")
    for sel, df in (("top1", top_all), ("rest", rest_all), ("all", stats)):
        for key, value in _share_reference(df, 200, 7).items():
            assert got[(None, sel)][key] == pytest.approx(value, rel=1e-9), (sel, key)
        assert res.summary["shares"][sel]["share_mean"] == pytest.approx(got[(None, sel)]["share_mean"])
    assert res.render("csv").splitlines()[0].startswith("layer,selection")
    assert _run(env, n_boot=200, seed=8).shares.filter(pl.col("selection") == "rest")["ci_lo"].to_list() != \
        res.shares.filter(pl.col("selection") == "rest")["ci_lo"].to_list()


def test_share_stats_skips_undefined() -> None:
    out = ap.share_stats(np.array([0.0, 2.0, np.nan, 1.0]), np.array([0.0, 1.0, 0.5, 0.75]),
                         np.array([0.1, 0.2, 0.3, 0.4]), n_boot=10)
    assert out["n_neurons"] == 2 and out["share_mean"] == pytest.approx(0.625)
    assert out["share_pooled"] == pytest.approx(1.75 / 3) and out["neg_mass_mean"] == pytest.approx(0.3)
    assert ap.share_stats(np.array([]), np.array([]), np.array([]))["share_mean"] is None


def _files(store: Path) -> dict[str, int]:
    return {str(p.relative_to(store)): p.stat().st_mtime_ns for t in ("analyses", "diff_pairs", "neg_share")
            for p in (store / "tables" / t).glob("*.parquet")}


def test_cli_rerun_reuses(env, tmp_path, monkeypatch) -> None:
    args = ["analyze", "pairs", "--model", env["model"], "--layer", "0", "--index", "11", "--k", "4",
            "--window", "2", "--n-boot", "50", "--seed", "3"]
    first = cli(env["store"], *args, "--format", "json")
    assert first.exit_code == 0, first.output
    doc = json.loads(first.stdout)
    assert doc["reused"] is False and len(doc["pairs"]) == 4 and len(doc["shares"]) == 12
    aid = doc["analysis_id"]
    for table in ("analyses", "diff_pairs", "neg_share"):
        assert (env["store"] / "tables" / table / f"{aid}.parquet").exists()
    row = pq.read_table(env["store"] / "tables" / "analyses" / f"{aid}.parquet").to_pylist()[0]
    assert row["kind"] == "pairs" and json.loads(row["config_json"])["neuron"] == [0, 11]
    before = _files(env["store"])

    def boom(*a, **k):
        raise AssertionError("a rerun must not compute")

    monkeypatch.setattr(ap, "_pair_part", boom)
    monkeypatch.setattr(ap, "_share_part", boom)
    out = tmp_path / "again.json"
    second = cli(env["store"], *args, "--format", "json", "--out", str(out))
    assert second.exit_code == 0, second.output
    again = json.loads(second.stdout)
    assert again["reused"] is True and {**again, "reused": False} == doc
    assert json.loads(out.read_text()) == again
    assert _files(env["store"]) == before
    table = cli(env["store"], *args)
    assert table.exit_code == 0 and "read from" in table.stderr and "[[" in table.stdout
    with negdb.connect(str(env["store"])) as cat:  # the catalog sees the stored rows
        assert cat.sql("SELECT count(*) AS n FROM diff_pairs WHERE analysis_id = ?", [aid])["n"][0] == 4


def test_errors_one_line(env, tmp_path) -> None:
    base = ["analyze", "pairs", "--model", env["model"]]
    res = cli(env["store"], *base, "--layer", "0", "--index", "64")
    assert_one_error(res, NotFound)
    assert "neuron 64 out of range" in res.stderr
    assert_one_error(cli(env["store"], *base, "--layer", "9", "--index", "0"), NotFound)
    assert_one_error(cli(env["store"], *base, "--index", "0"), BadArgument)
    assert_one_error(cli(env["store"], *base, "--layer", "0", "--index", "0", "--k", "0"), BadArgument)
    res = cli(env["store"], *base, "--layer", "2", "--index", "0")  # statistics only: no activations kept
    assert_one_error(res, NotFound)
    assert "negdb ingest" in res.stderr and "--activations" in res.stderr and "layer 2" in res.stderr
    # activations kept but the md inputs of the layer missing
    store = tmp_path / "copy"
    shutil.copytree(env["store"], store)
    (md,) = (store / env["group"].relative_to(env["store"]) / "md").glob("p*")
    shutil.rmtree(md / "L001")
    res = cli(store, *base, "--layer", "1", "--index", "0")
    assert_one_error(res, NotFound)
    assert "md inputs" in res.stderr and "--activations" in res.stderr
    assert_one_error(cli(env["store"], "analyze", "pairs", "--model", "no-such-model"), NotFound)
