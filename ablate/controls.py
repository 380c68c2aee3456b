"""Neuron sets of an ablation: the main set, random controls, and the perplexity-matched control.

- random: for each seed, the same count per layer drawn outside the main set (``sets.select(random_like=)``);
- ppl-matched: the smallest fraction ``f`` of lowest-``w_dist`` neurons per layer (the main set's layers) whose
  ablation raises perplexity to within ``tolerance`` of the main ablation's increase. Found by doubling ``f``
  until the perplexity is reached, then bisecting on a grid of ``resolution`` down to one grid step; every probe is a stored set and a
  stored perplexity result, so a repeated search costs nothing.

Every set is saved (immutable, content-hashed) under ``auto-<hash>`` unless it already has a name.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

import polars as pl

from negdb.ablate.interventions import Intervention, make_intervention
from negdb.errors import BadArgument
from negdb.query import sets as setlib
from negdb.query.setstore import NeuronSet
from negdb.store.catalog import Catalog


def save_auto(cat: Catalog, selection: setlib.Selection, name: str | None = None) -> NeuronSet:
    """Save ``selection`` as ``name`` (default ``auto-<first 16 hex of its hash>``); an existing equal set is kept."""
    saved = setlib.save(cat.layout, selection, name or f"auto-{selection.content_hash[:16]}")
    cat.refresh()
    return saved


def restrict_set(cat: Catalog, main: NeuronSet, layers: list[int]) -> NeuronSet | None:
    """``main``'s members in ``layers``, saved as a set (``main`` itself when that is all of it; ``None`` if empty)."""
    members = main.members.filter(pl.col("layer").is_in(layers)).select(
        pl.col("layer").cast(pl.Int32), pl.col("neuron").cast(pl.Int32)).sort("layer", "neuron")
    if members.height == 0:
        return None
    if members.height == main.n_members:
        return main
    per_layer = dict(members.group_by("layer").len().iter_rows())
    sel = setlib.Selection(keys=main.keys, expression=json.dumps({"layers": layers, "restrict": main.set_id}, sort_keys=True, separators=(",", ":")),
                           members=members, counts={int(li): int(per_layer.get(li, 0)) for li in layers},
                           content_hash=setlib.content_hash(main.keys, members))
    return save_auto(cat, sel)


def intervention_for(cat: Catalog, neuron_set: NeuronSet, mode: str) -> Intervention:
    """The intervention ``mode`` on ``neuron_set``; ``mean`` reads each layer's stored means."""
    members = neuron_set.members
    neurons: dict[int, list[int]] = {}
    for layer, neuron in members.select("layer", "neuron").iter_rows():
        neurons.setdefault(int(layer), []).append(int(neuron))
    means = None
    if mode == "mean":
        k = neuron_set.keys
        means = {}
        for layer in neurons:
            df = cat.sql("SELECT neuron, mean FROM neuron_stats WHERE model_id = ? AND revision = ? AND slice_id = ? "
                         "AND spec_id = ? AND layer = ? ORDER BY neuron", [k.model_id, k.revision, k.slice_id,
                                                                         k.spec_id, layer])
            arr = np.full(int(df["neuron"].max()) + 1, np.nan)
            arr[df["neuron"].to_numpy()] = df["mean"].to_numpy()
            means[layer] = arr
    return make_intervention(mode, neurons, means)


def random_controls(cat: Catalog, main: NeuronSet, seeds: list[int]) -> list[NeuronSet]:
    """One random set per seed: the main set's count per layer, drawn outside it."""
    out = []
    for s in seeds:
        sel = setlib.select(cat, main.keys.model_id, main.keys.revision, random_like=main.name, seed=s,
                            slice_id=main.keys.slice_id, spec_id=main.keys.spec_id)
        out.append(save_auto(cat, sel))
    return out


def main_fraction(main: NeuronSet, d_mlp: int) -> float:
    """The main set's share of the neurons of the layers it was picked from."""
    layers = [layer for layer in main.counts] or sorted(set(main.members["layer"].to_list()))
    return main.n_members / max(1, len(layers) * d_mlp)


@dataclass
class MatchResult:
    """The outcome of the perplexity match.

    Attributes:
        fraction: the chosen fraction (share of each layer's neurons, lowest ``w_dist`` first).
        neuron_set: its set.
        ppl: its probe perplexity; ``target`` the main ablation's, ``baseline`` the unablated one.
        matched: whether ``ppl`` reached ``target - tolerance * (target - baseline)``.
        probes: ``(fraction, ppl)`` of every probe, in the order run.
    """

    fraction: float
    neuron_set: NeuronSet
    ppl: float
    target: float
    baseline: float
    matched: bool
    probes: list[tuple[float, float]] = field(default_factory=list)


def _grid(f: float, resolution: float) -> float:
    return round(max(resolution, math.floor(f / resolution + 1e-9) * resolution), 10)


def ppl_matched(cat: Catalog, main: NeuronSet, *, d_mlp: int, target: float, baseline: float,
                probe: Callable[[NeuronSet], float], tolerance: float = 0.05, resolution: float = 0.005,
                max_fraction: float = 0.9, on_probe: Callable[[float, float], None] | None = None) -> MatchResult:
    """Find the smallest fraction of lowest-``w_dist`` neurons whose ablation matches ``target`` perplexity.

    Args:
        probe: the perplexity of ablating a set (stored and re-used by the caller).
        tolerance: a probe matches when its perplexity is at least ``target - tolerance * (target - baseline)``.
        resolution: the grid of fractions searched (0.005 = half a percent of each layer).
        max_fraction: the largest fraction tried.
    """
    if not target > baseline:
        raise BadArgument(f"the ablation does not raise perplexity ({baseline:.4g} -> {target:.4g}), so there is "
                         "nothing to match: drop --controls ppl-matched or ablate more neurons")
    if not 0 < resolution < max_fraction <= 1:
        raise BadArgument("ppl-matched needs 0 < resolution < max fraction <= 1")
    layers = sorted(main.counts) or sorted(set(main.members["layer"].to_list()))
    need = target - tolerance * (target - baseline)
    probes: list[tuple[float, float]] = []
    seen: dict[float, tuple[NeuronSet, float]] = {}

    def run(f: float) -> float:
        if f not in seen:
            sel = setlib.select(cat, main.keys.model_id, main.keys.revision, bottom=f"{f * 100:.6g}%", by="w_dist",
                                layers=layers, slice_id=main.keys.slice_id, spec_id=main.keys.spec_id)
            ns = save_auto(cat, sel)
            seen[f] = (ns, probe(ns))
            probes.append((f, seen[f][1]))
            if on_probe is not None:
                on_probe(f, seen[f][1])
        return seen[f][1]

    lo, hi = 0.0, None
    f = _grid(2 * main_fraction(main, d_mlp), resolution)
    while hi is None:
        f = min(f, max_fraction)
        if run(f) >= need:
            hi = f
        elif f >= max_fraction:
            break
        else:
            lo, f = f, _grid(2 * f, resolution)
    if hi is None:  # even the largest fraction falls short
        ns, p = seen[max_fraction]
        return MatchResult(max_fraction, ns, p, target, baseline, False, probes)
    while hi - lo > resolution + 1e-12:
        mid = _grid((lo + hi) / 2, resolution)
        if mid <= lo or mid >= hi:
            break
        if run(mid) >= need:
            hi = mid
        else:
            lo = mid
    ns, p = seen[hi]
    return MatchResult(hi, ns, p, target, baseline, True, probes)


def describe_probes(result: MatchResult) -> str:
    """The probes as JSON (for the record)."""
    return json.dumps([{"fraction": f, "ppl": p} for f, p in result.probes])
