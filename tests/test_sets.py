"""Neuron sets on a real store: pickers equal independent numpy/polars computations; sets are immutable."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

import negdb
from negdb.errors import BadArgument, BadQuery, NotFound, StoreConflict
from negdb.query import sets
from tests.ingest_helpers import assert_one_error, cli, ingest_into
from tests.tiny_models import save_step_run

MODEL_LAYERS, D_MLP = 3, 64


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A store holding both checkpoints (step0, step1000) of a tiny run; returns (store, model_id)."""
    run = save_step_run(tmp_path_factory.mktemp("m"), steps=(0, 1000))
    return ingest_into(tmp_path_factory, run, "--checkpoints", "all"), str(run.resolve())


@pytest.fixture()
def cat(env):
    with negdb.connect(str(env[0])) as c:
        yield c


def _stats(cat, model_id: str, revision: str = "step1000") -> pl.DataFrame:
    return cat.sql("SELECT * FROM neurons WHERE model_id = ? AND revision = ? ORDER BY layer, neuron",
                   [model_id, revision])


def _pairs(df: pl.DataFrame) -> set[tuple[int, int]]:
    return {(int(a), int(b)) for a, b in df.select("layer", "neuron").iter_rows()}


def _reference_rank(stats: pl.DataFrame, col: str, k_of, descending: bool) -> set[tuple[int, int]]:
    """numpy: per layer, sort by the column (descending for top), ties by neuron index, NaN dropped."""
    out = set()
    for layer in range(MODEL_LAYERS):
        part = stats.filter(pl.col("layer") == layer)
        vals, neurons = part[col].to_numpy().astype(np.float64), part["neuron"].to_numpy()
        ok = ~np.isnan(vals)
        vals, neurons = vals[ok], neurons[ok]
        order = np.lexsort((neurons, -vals if descending else vals))
        out |= {(layer, int(n)) for n in neurons[order[:k_of(len(part))]]}
    return out


@pytest.mark.parametrize(("arg", "k_of"), [
    ("1%", lambda d: max(1, round(0.01 * d))),
    ("5%", lambda d: max(1, round(0.05 * d))),
    ("0.1", lambda d: max(1, round(0.1 * d))),
    ("3", lambda d: 3),
])
def test_top_equals_numpy_argsort_per_layer(cat, env, arg, k_of) -> None:
    sel = sets.select(cat, env[1], top=arg)
    assert _pairs(sel.members) == _reference_rank(_stats(cat, env[1]), "w_dist", k_of, True)
    assert sel.counts == {layer: k_of(D_MLP) for layer in range(MODEL_LAYERS)}
    assert sel.members.to_dicts() == sorted(sel.members.to_dicts(), key=lambda r: (r["layer"], r["neuron"]))


def test_bottom_and_by_column_with_ties(cat, env) -> None:
    stats = _stats(cat, env[1])
    # frac_neg is a multiple of 1/512: ties exist, and the reference breaks them by neuron index
    assert stats.group_by("layer", "frac_neg").len()["len"].max() > 1
    for picker, desc in (("bottom", False), ("top", True)):
        sel = sets.select(cat, env[1], **{picker: "35%"}, by="frac_neg")
        assert _pairs(sel.members) == _reference_rank(stats, "frac_neg", lambda d: round(0.35 * d), desc)
        assert sel.n_members == MODEL_LAYERS * 22


def test_nan_never_picked_and_ties_by_index() -> None:
    pool = pl.DataFrame({"layer": [0] * 6, "neuron": [0, 1, 2, 3, 4, 5],
                         "x": [float("nan"), 1.0, None, 1.0, 0.5, float("nan")]},
                        schema={"layer": pl.Int32, "neuron": pl.Int32, "x": pl.Float64})
    top = sets._ranked(pool, "x", True, ("count", 5), {0: 6})
    assert top["neuron"].to_list() == [1, 3, 4]
    bottom = sets._ranked(pool, "x", False, ("count", 2), {0: 6})
    assert bottom["neuron"].to_list() == [4, 1]


def test_where_equals_polars_filter(cat, env) -> None:
    stats = _stats(cat, env[1])
    sel = sets.select(cat, env[1], where="w_dist > 0.15 AND frac_neg < 0.6 AND dataset = 'wikitext-2:valid'")
    ref = stats.filter((pl.col("w_dist") > 0.15) & (pl.col("frac_neg") < 0.6))
    assert 0 < ref.height < stats.height
    assert _pairs(sel.members) == _pairs(ref)
    sel = sets.select(cat, env[1], where="kurtosis > 0", layers="1-2")
    assert _pairs(sel.members) == _pairs(stats.filter((pl.col("kurtosis") > 0) & (pl.col("layer") >= 1)))
    assert set(sel.counts) == {1, 2}


def test_where_then_top(cat, env) -> None:
    stats = _stats(cat, env[1])
    sel = sets.select(cat, env[1], where="frac_neg > 0.5", top="10%", layers=[0, 2])
    ref = _reference_rank(stats.filter((pl.col("frac_neg") > 0.5) & (pl.col("layer") != 1)), "w_dist",
                          lambda _d: round(0.1 * D_MLP), True)
    assert _pairs(sel.members) == ref
    assert json.loads(sel.expression) == {"by": "w_dist", "k": {"fraction": 0.1}, "layers": [0, 2],
                                          "pick": "top", "where": "frac_neg > 0.5"}


def test_random_like(cat, env, tmp_path) -> None:
    source = sets.save(cat, sets.select(cat, env[1], top="10%", layers="0-1"), "rl-source")
    draws = {s: sets.select(cat, env[1], random_like="rl-source", seed=s) for s in (0, 0, 1, 2)}
    a, b = sets.select(cat, env[1], random_like="rl-source", seed=0), draws[0]
    src_counts = source.members.group_by("layer").len().sort("layer")
    for seed, sel in draws.items():
        assert sel.members.group_by("layer").len().sort("layer").equals(src_counts)
        assert not _pairs(sel.members) & _pairs(source.members)
        assert sel.counts == {0: 6, 1: 6}
        assert json.loads(sel.expression)["seed"] == seed
    assert a.members.equals(b.members) and a.content_hash == b.content_hash
    assert len({draws[s].content_hash for s in (0, 1, 2)}) == 3
    # the documented procedure: default_rng(seed), layers in order, candidates sorted, choice without replacement
    rng = np.random.default_rng(2)
    ref = set()
    for layer in (0, 1):
        taken = {n for l, n in _pairs(source.members) if l == layer}
        cand = np.array(sorted(set(range(D_MLP)) - taken))
        ref |= {(layer, int(n)) for n in rng.choice(cand, size=len(taken), replace=False)}
    assert _pairs(draws[2].members) == ref
    # combined with where: candidates come from the filtered neurons only
    sel = sets.select(cat, env[1], random_like="rl-source", where="frac_neg > 0.4", seed=5)
    allowed = _pairs(_stats(cat, env[1]).filter(pl.col("frac_neg") > 0.4))
    assert _pairs(sel.members) <= allowed and sel.n_members == source.n_members


def test_hash_is_content_only(cat, env) -> None:
    top3 = sets.select(cat, env[1], top="3")
    again = sets.select(cat, env[1], "final", top=3)
    listed = " OR ".join(f"(layer = {l} AND neuron = {n})" for l, n in sorted(_pairs(top3.members)))
    by_where = sets.select(cat, env[1], where=listed)
    assert top3.content_hash == again.content_hash == by_where.content_hash
    assert top3.expression != by_where.expression
    rows = sorted(_pairs(top3.members))
    blob = json.dumps({"keys": list(top3.keys), "members": [list(r) for r in rows]}, separators=(",", ":"))
    assert top3.content_hash == hashlib.sha256(blob.encode()).hexdigest()
    assert sets.select(cat, env[1], top="4").content_hash != top3.content_hash
    early = sets.select(cat, env[1], "step0", where=listed)
    assert _pairs(early.members) == _pairs(top3.members) and early.content_hash != top3.content_hash


def test_keys_default_latest_and_final(cat, env) -> None:
    sel = sets.select(cat, env[1], top="1")
    assert sel.keys.revision == "step1000" and sel.keys.model_id == env[1]
    assert sets.select(cat, env[1], "final", top="1").keys.revision == "step1000"
    assert sets.select(cat, env[1], "step0", top="1").keys.revision == "step0"
    with pytest.raises(NotFound, match="step0, step1000"):
        sets.select(cat, env[1], "step5", top="1")
    with pytest.raises(NotFound, match="stored models"):
        sets.select(cat, "/no/such/model", top="1")


@pytest.mark.parametrize("bad", ["0", "0%", "101%", "1.5", "x", "-1", "1e-2", ""])
def test_bad_counts(cat, env, bad) -> None:
    with pytest.raises(BadArgument, match="bad neuron count"):
        sets.select(cat, env[1], top=bad)


def test_bad_pickers(cat, env) -> None:
    with pytest.raises(BadArgument, match="choose one"):
        sets.select(cat, env[1], top="1", bottom="1")
    with pytest.raises(BadArgument, match="choose neurons"):
        sets.select(cat, env[1])
    with pytest.raises(BadQuery, match="boolean"):
        sets.select(cat, env[1], where="w_dist * 2")
    with pytest.raises(BadQuery):
        sets.select(cat, env[1], where="no_such_column > 1")
    with pytest.raises(BadQuery):
        sets.select(cat, env[1], where="1; DROP VIEW neurons")
    with pytest.raises(BadArgument, match="--by"):
        sets.select(cat, env[1], top="1", by="model_id")
    with pytest.raises(BadArgument, match="out of range"):
        sets.select(cat, env[1], top="1", layers="3")


def test_save_is_immutable(cat, env) -> None:
    store = env[0]
    first = sets.save(store, sets.select(cat, env[1], top="2"), "imm")
    assert first.new and first.set_id == sets.select(cat, env[1], top="2").content_hash
    segs = sorted((store / "tables").rglob("*.parquet"))
    again = sets.save(cat, sets.select(cat, env[1], top="2", by="w_dist"), "imm")
    assert not again.new and again.set_id == first.set_id
    with pytest.raises(StoreConflict, match="immutable"):
        sets.save(cat, sets.select(cat, env[1], top="3"), "imm")
    assert sorted((store / "tables").rglob("*.parquet")) == segs
    got = sets.get(cat, "imm")
    assert got.set_id == first.set_id and got.members.equals(first.members)
    assert got.counts == {0: 2, 1: 2, 2: 2} and got.n_members == 6 and got.keys == first.keys
    json.dumps(got.to_dict(), allow_nan=False)
    listed = sets.list_sets(cat)
    assert "imm" in listed["name"].to_list()
    # the same members under another name share the members segment
    sets.save(cat, sets.select(cat, env[1], top="2"), "imm.copy")
    assert sets.get(cat, "imm.copy").set_id == first.set_id
    for bad in ("", "a b", "x" * 65, "a/b", "ü"):
        with pytest.raises(BadArgument, match="bad set name"):
            sets.save(cat, sets.select(cat, env[1], top="2"), bad)
    with pytest.raises(BadArgument, match="empty"):
        sets.save(cat, sets.select(cat, env[1], where="w_dist < 0"), "empty")
    with pytest.raises(NotFound, match="no neuron set named 'nope'"):
        sets.get(cat, "nope")


def test_cli(env) -> None:
    store, model = env
    res = cli(store, "select", "--model", model, "--top", "1%")
    assert res.exit_code == 0, res.output
    assert "layer  0 1 2" in res.output and "count  1 1 1" in res.output and "total  3 neurons" in res.output
    assert "w_dist" in res.output
    res = cli(store, "select", "--model", model, "--where", "w_dist > 0.2", "--layers", "0-1",
              "--checkpoint", "step0", "--save", "cli-where")
    assert res.exit_code == 0, res.output
    assert "saved neuron set cli-where" in res.output
    res = cli(store, "select", "--model", model, "--where", "w_dist > 0.2", "--layers", "0-1",
              "--checkpoint", "step0", "--save", "cli-where")
    assert res.exit_code == 0 and "already stored" in res.output
    res = cli(store, "select", "--model", model, "--random-like", "cli-where", "--seed", "4", "--save", "cli-rl")
    assert res.exit_code == 0, res.output
    res = cli(store, "select", "--model", model, "--bottom", "5", "--by", "kurtosis")
    assert res.exit_code == 0 and "kurtosis" in res.output
    res = cli(store, "sets")
    assert res.exit_code == 0 and "cli-where" in res.output and "cli-rl" in res.output
    res = cli(store, "sets", "--json")
    assert res.exit_code == 0
    rows = [json.loads(l) for l in res.output.splitlines()]
    assert {"cli-where", "cli-rl"} <= {r["name"] for r in rows}
    with negdb.connect(str(store)) as cat:
        rl, src = sets.get(cat, "cli-rl"), sets.get(cat, "cli-where")
    assert rl.keys.revision == "step0" and rl.counts == src.counts


@pytest.mark.parametrize(("args", "kind"), [
    (("--model", "no-such-model", "--top", "1%"), NotFound),
    (("--top", "1x"), BadArgument),
    (("--top", "200%"), BadArgument),
    (("--random-like", "no-such-set"), NotFound),
    (("--top", "1%", "--layers", "7"), BadArgument),
    (("--where", "w_dist"), BadQuery),
    (("--where", "w_dist > "), BadQuery),
    (("--top", "1", "--bottom", "1"), BadArgument),
    (("--top", "2", "--save", "taken"), StoreConflict),
    (("--top", "2", "--save", "bad name"), BadArgument),
    (("--top", "2", "--checkpoint", "step7"), NotFound),
])
def test_cli_bad_input(env, args, kind) -> None:
    store, model = env
    assert cli(store, "select", "--model", model, "--top", "1", "--save", "taken").exit_code == 0
    full = args if "--model" in args else ("--model", model, *args)
    assert_one_error(cli(store, "select", *full), kind)


def test_cli_sets_empty(tmp_path) -> None:
    res = cli(tmp_path / "empty", "sets")
    assert res.exit_code == 0 and "no neuron sets" in res.output
