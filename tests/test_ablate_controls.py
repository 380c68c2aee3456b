"""negdb.ablate.controls on a tiny ingested store: random controls, the perplexity-matched search (with a
synthetic, monotone probe), and the interventions built from saved sets."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

import negdb
import negdb.ablate.controls as controls
from negdb.ablate.controls import (describe_probes, intervention_for, main_fraction, ppl_matched,
                                   random_controls, save_auto)
from negdb.errors import BadArgument
from negdb.query import sets as setlib
from negdb.query import setstore
from tests.ingest_helpers import ingest_into
from tests.tiny_models import save_tiny

N_LAYERS, D_MLP = 3, 64
BASE, SLOPE = 10.0, 100.0  # synthetic probe: ppl = BASE + SLOPE * fraction


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    model = save_tiny(tmp_path_factory.mktemp("m") / "neox", "gpt_neox", seed=0)
    return ingest_into(tmp_path_factory, model), str(model.resolve())


@pytest.fixture(scope="module")
def cat(env):
    with negdb.connect(str(env[0])) as c:
        yield c


@pytest.fixture(scope="module")
def main(cat, env):
    sel = setlib.select(cat, env[1], top="10%")
    return setstore.save(cat, sel, "main10")


@pytest.fixture(scope="module")
def main01(cat, env):
    return setstore.save(cat, setlib.select(cat, env[1], top="10%", layers="0-1"), "main10-l01")


def _w_dist(cat, model_id) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    df = cat.sql("SELECT layer, neuron, w_dist FROM neuron_stats WHERE model_id = ? ORDER BY layer, neuron",
                 [model_id])
    out = {}
    for layer in range(N_LAYERS):
        part = df.filter(df["layer"] == layer)
        out[layer] = (part["neuron"].to_numpy(), part["w_dist"].to_numpy().astype(np.float64))
    return out


def _pairs(ns) -> set[tuple[int, int]]:
    return {(int(a), int(b)) for a, b in ns.members.select("layer", "neuron").iter_rows()}


class Probe:
    """ppl = BASE + SLOPE * (the set's share of its layers' neurons), monotone in the set's size; records calls.

    (A set's stored expression is not a reliable label of the fraction asked for: two fractions that pick the
    same neurons share one content-addressed set, saved under the first one's expression.)
    """

    def __init__(self, n_layers: int = N_LAYERS):
        self.n_layers = n_layers
        self.sets: list = []

    def __call__(self, ns) -> float:
        self.sets.append(ns)
        return ppl_of(ns.n_members / self.n_layers)


def ppl_of(per_layer: int | float) -> float:
    return BASE + SLOPE * per_layer / D_MLP


def k_of(fraction: float) -> int:
    return max(1, round(fraction * D_MLP))


def _grid(resolution: float, max_fraction: float) -> list[float]:
    return [round(k * resolution, 10) for k in range(1, int(round(max_fraction / resolution)) + 1)]


def _smallest_on_grid(need: float, resolution: float = 0.005, max_fraction: float = 0.9) -> float | None:
    """Brute force: the first grid fraction whose probe perplexity reaches ``need``."""
    return next((g for g in _grid(resolution, max_fraction) if ppl_of(k_of(g)) >= need), None)


@pytest.fixture()
def asked(monkeypatch):
    """The fractions the search asks ``sets.select`` for, in order (one select per probe)."""
    out: list[float] = []
    real = setlib.select

    def select(*a, **kw):
        if kw.get("bottom") is not None:
            out.append(float(kw["bottom"].rstrip("%")) / 100)
        return real(*a, **kw)

    monkeypatch.setattr(controls.setlib, "select", select)
    return out


# ------------------------------------------------------------------------------------------ random


def test_random_controls_match_counts_avoid_the_set_and_follow_the_seed(cat, main):
    rand = random_controls(cat, main, [0, 1, 2])
    again = random_controls(cat, main, [0, 2])
    main_pairs = _pairs(main)
    per_layer = {layer: sum(1 for l, _ in main_pairs if l == layer) for layer in range(N_LAYERS)}
    assert per_layer == {0: 6, 1: 6, 2: 6}
    for ns in rand:
        pairs = _pairs(ns)
        assert {layer: sum(1 for l, _ in pairs if l == layer) for layer in range(N_LAYERS)} == per_layer
        assert not pairs & main_pairs
        assert ns.name.startswith("auto-") and ns.name == f"auto-{ns.set_id[:16]}"
        assert setstore.get(cat, ns.name).set_id == ns.set_id  # saved
    assert len({ns.set_id for ns in rand}) == 3  # different seeds, different sets
    assert again[0].set_id == rand[0].set_id and again[1].set_id == rand[2].set_id  # same seed, same set
    assert _pairs(again[0]) == _pairs(rand[0])
    # the documented procedure: default_rng(seed), layers in order, candidates sorted, drawn without replacement
    rng = np.random.default_rng(1)
    ref = set()
    for layer in range(N_LAYERS):
        taken = {n for l, n in main_pairs if l == layer}
        cand = np.array(sorted(set(range(D_MLP)) - taken))
        ref |= {(layer, int(n)) for n in rng.choice(cand, size=len(taken), replace=False)}
    assert _pairs(rand[1]) == ref


def test_random_controls_keep_to_the_main_sets_layers(cat, main01):
    (ns,) = random_controls(cat, main01, [5])
    assert {l for l, _ in _pairs(ns)} == {0, 1}
    assert ns.n_members == main01.n_members == 12


def test_save_auto_names_by_content_and_keeps_equal_sets(cat, env):
    sel = setlib.select(cat, env[1], top="3", layers="2")
    a = save_auto(cat, sel)
    b = save_auto(cat, setlib.select(cat, env[1], top=3, layers=[2]))
    assert a.name == b.name == f"auto-{sel.content_hash[:16]}" and a.set_id == b.set_id
    named = save_auto(cat, sel, "my-name")
    assert named.name == "my-name" and named.set_id == a.set_id


def test_main_fraction(main, main01):
    assert main_fraction(main, D_MLP) == pytest.approx(18 / (3 * 64))
    assert main_fraction(main01, D_MLP) == pytest.approx(12 / (2 * 64))


# ------------------------------------------------------------------------------------------ intervention_for


@pytest.mark.parametrize("mode", ["neg", "mean", "signflip"])
def test_intervention_for_a_saved_set(cat, env, main, mode):
    iv = intervention_for(cat, main, mode)
    assert iv.mode == mode and iv.size == main.n_members
    assert {(l, n) for l, ns in iv.neurons.items() for n in ns} == _pairs(main)
    if mode != "mean":
        assert iv.means is None
        return
    df = cat.sql("SELECT layer, neuron, mean FROM neurons WHERE model_id = ?", [env[1]])
    stored = {(int(l), int(n)): float(m) for l, n, m in df.iter_rows()}
    for layer, neurons in iv.neurons.items():
        for n in neurons:
            assert iv.means[layer][n] == pytest.approx(stored[(layer, n)], rel=1e-6)
    # a different layer's value at the same index would not do
    l0, l1 = 0, 1
    n = iv.neurons[l0][0]
    assert stored[(l0, n)] != stored[(l1, n)]


# ------------------------------------------------------------------------------------------ ppl-matched


def _match(cat, ns, target, probe, **kw):
    kw.setdefault("tolerance", 0.05)
    kw.setdefault("resolution", 0.005)
    return ppl_matched(cat, ns, d_mlp=D_MLP, target=target, baseline=BASE, probe=probe, **kw)


# targets between the probe's steps, as neurons per layer (the probe moves in steps of one neuron per layer)
LEVELS = [2.3, 8.6, 12.7, 19.3, 32.3, 50.2, 57.4]


@pytest.mark.parametrize("level", LEVELS)
def test_exact_match_finds_the_smallest_grid_fraction(cat, main, asked, level):
    """With tolerance 0 the answer is the first grid fraction whose probe reaches the target (brute force)."""
    probe = Probe()
    target = ppl_of(level)
    res = _match(cat, main, target, probe, tolerance=0.0)
    want = _smallest_on_grid(target)
    assert res.matched
    assert res.fraction == pytest.approx(want, abs=1e-9)
    assert res.ppl == pytest.approx(ppl_of(k_of(want))) and res.ppl >= target
    assert res.neuron_set.n_members == N_LAYERS * k_of(want)
    assert (res.target, res.baseline) == (target, BASE)
    # every fraction probed once; the log holds the probes in order, with their perplexities
    assert len(asked) == len(set(asked)) == len(res.probes) == len(probe.sets)
    assert [f for f, _ in res.probes] == pytest.approx(asked)
    assert [p for _, p in res.probes] == pytest.approx([ppl_of(ns.n_members / N_LAYERS) for ns in probe.sets])
    assert all(abs(f / 0.005 - round(f / 0.005)) < 1e-6 for f in asked)  # on the grid
    assert json.loads(describe_probes(res)) == [{"fraction": f, "ppl": p} for f, p in res.probes]
    # doubling from twice the main set's fraction, then bisection: logarithmic, not a scan of the grid
    assert asked[0] == pytest.approx(0.185)  # 2 * 18 / 192 = 0.1875, floored to the grid
    assert len(asked) <= 2 * math.ceil(math.log2(0.9 / 0.005)) + 2


@pytest.mark.parametrize("level", LEVELS)
def test_tolerant_match_lies_within_tolerance(cat, main, asked, level):
    target = ppl_of(level)
    res = _match(cat, main, target, Probe(), tolerance=0.05)
    need = target - 0.05 * (target - BASE)
    assert res.matched and res.ppl >= need
    # never worse than the brute-force smallest by more than the tolerance band allows
    assert res.ppl <= target + 0.05 * (target - BASE) + SLOPE / D_MLP or res.fraction == 0.9
    assert res.fraction >= _smallest_on_grid(need) - 1e-9
    assert len(asked) == len(set(asked))


def test_tolerant_match_is_the_smallest_grid_fraction(cat, main):
    wrong = []
    for level in LEVELS:
        target = ppl_of(level)
        res = _match(cat, main, target, Probe(), tolerance=0.05)
        want = _smallest_on_grid(target - 0.05 * (target - BASE))
        if res.neuron_set.n_members != N_LAYERS * k_of(want):
            wrong.append((level, res.fraction, want))
    assert not wrong, wrong


def test_probe_sets_are_the_lowest_w_dist_neurons_of_the_main_layers(cat, env, main01, asked):
    probe = Probe(n_layers=2)
    res = _match(cat, main01, ppl_of(21.3), probe, tolerance=0.0)
    assert res.fraction == pytest.approx(_smallest_on_grid(ppl_of(21.3)))
    w = _w_dist(cat, env[1])
    assert len(asked) == len(probe.sets)
    for ns, f in zip(probe.sets, asked):
        ref = set()
        for layer in (0, 1):  # only the main set's layers
            neurons, vals = w[layer]
            order = np.lexsort((neurons, vals))  # ascending w_dist, ties by neuron index
            ref |= {(layer, int(n)) for n in neurons[order[:k_of(f)]]}
        assert _pairs(ns) == ref, f
        assert setstore.get(cat, ns.name).set_id == ns.set_id  # every probe set is saved
    chosen = probe.sets[[round(f, 10) for f in asked].index(round(res.fraction, 10))]
    assert res.neuron_set.set_id == chosen.set_id


def test_unreachable_target_is_reported_unmatched_at_the_largest_fraction(cat, main, asked):
    seen = []
    res = _match(cat, main, ppl_of(62.5), Probe(), max_fraction=0.9, on_probe=lambda f, p: seen.append((f, p)))
    assert not res.matched
    assert res.fraction == 0.9 and res.ppl == pytest.approx(ppl_of(k_of(0.9)))
    assert res.neuron_set.n_members == N_LAYERS * k_of(0.9)
    assert seen == res.probes and asked[-1] == pytest.approx(0.9)
    assert len(asked) == len(set(asked))
    assert [f for f, _ in res.probes] == pytest.approx([0.185, 0.37, 0.74, 0.9])  # doubled, capped


def test_no_damage_to_match_is_refused(cat, main, asked):
    probe = Probe()
    for target in (BASE, BASE - 1.0):
        with pytest.raises(BadArgument, match="does not raise perplexity"):
            _match(cat, main, target, probe)
    for kw in ({"resolution": 0.0}, {"resolution": 0.9, "max_fraction": 0.9}, {"max_fraction": 1.5}):
        with pytest.raises(BadArgument):
            _match(cat, main, BASE + 5, probe, **kw)
    assert probe.sets == [] and asked == []  # refused before any probe
