"""``negdb ablate`` as a function: pick the set, build the controls, evaluate every condition, compare.

:func:`run` takes an :class:`~negdb.ablate.options.AblateSpec`; the conditions (``baseline``, ``ablation``,
``random`` per seed, ``ppl-matched``) come from the conditions engine (:mod:`negdb.ablate.conditions`). Every
evaluation is a stored result (:mod:`negdb.ablate.evaluate`), so a repeated call only reads; the model is loaded
the first time something is missing. The experiment is recorded in the ``ablations`` table, one row per
condition and seed, under :func:`ablation_id`.

``ablation_id`` hashes what changes the experiment's numbers only (model, checkpoint, set, mode, benchmark
definitions, limits, sample seed, scoring conventions, controls and bootstrap), never the device or the batch
size. Stores written before issue 12 keyed experiments by every option (device and batch size included); such an
experiment is found by its conditions instead (:func:`find_legacy`: the same sets, the same stored results, the
same bootstrap) and keeps its old id, so nothing is recorded twice.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from negdb.ablate.compare import Comparison, Condition, compare
from negdb.ablate.conditions import (Engine, Loader, check_store, checkpoint_row, d_mlp, main_set, resolve_revision,
                                     stderr)
from negdb.ablate.controls import MatchResult, main_fraction
from negdb.ablate.options import AblateSpec
from negdb.evals import registry
from negdb.query.setstore import NeuronSet
from negdb.store.catalog import Catalog
from negdb.store.layout import StoreLayout, short_hash
from negdb.store.runs import now
from negdb.store.tables import ABLATIONS

KEY_VERSION = 2
"""Version of :func:`ablation_key` (1: the hash of every option, before issue 12)."""

__all__ = ["Experiment", "KEY_VERSION", "ablation_id", "ablation_key", "find_legacy", "run", "search"]


@dataclass
class Experiment:
    """What :func:`run` did: the conditions, the comparison and the perplexity match (when asked).

    ``skipped`` says why the ppl-matched control was left out (the ablation does not raise perplexity), else
    ``None``; ``probes``: the perplexities on the probe tokens this call computed for the match (0 when every probe
    was stored).
    """

    ablation_id: str
    main: NeuronSet
    comparison: Comparison
    match: MatchResult | None = None
    computed: int = 0
    reused: int = 0
    conditions: list[Condition] = field(default_factory=list)
    skipped: str | None = None
    spec: AblateSpec | None = field(default=None, repr=False)
    probes: int = 0

    def frame(self) -> pl.DataFrame:
        """The comparison: one row per condition, benchmark and metric (value, baseline, delta, ci_lo, ci_hi)."""
        return self.comparison.frame()

    def render(self, fmt: str = "table") -> str:
        return self.comparison.render(fmt)


def ablation_key(model_id: str, revision: str, commit: str | None, set_id: str, spec: AblateSpec,
                 benches: list[str]) -> dict[str, Any]:
    """Everything an experiment's numbers depend on (the content of :func:`ablation_id`)."""
    return {"version": KEY_VERSION, "model_id": model_id, "revision": revision, "commit": commit, "set_id": set_id,
            "mode": spec.mode, "benchmarks": {b: registry.spec_hash(b) for b in benches},
            "limits": {b: spec.sampling.limit_for(b) for b in benches}, "sample_seed": spec.sampling.seed,
            "scoring": spec.scoring.key(), "controls": spec.controls.key(),
            "bootstrap": {"n_boot": spec.bootstrap.n_boot, "seed": spec.bootstrap.seed}}


def ablation_id(key: dict[str, Any]) -> str:
    """The 16-hex id of an experiment's :func:`ablation_key`."""
    return short_hash("ablation", key, n=16)


def config(spec: AblateSpec, key: dict[str, Any]) -> dict[str, Any]:
    """The ``config_json`` of an experiment's rows: its key and how it was asked for (the set's picker flat, in
    its CLI form, as the report shows it)."""
    from negdb.query.setspec import SetSpec
    from negdb.values import k_text, layers_text

    n = spec.neurons
    asked: dict[str, Any] = {"set_id": key["set_id"]}
    if isinstance(n, SetSpec):
        asked = {"model": n.model, "checkpoint": n.checkpoint, "where": n.where, "set_name": n.set_name,
                 "top": None if n.top is None else k_text(n.top), "by": n.by, "layers": layers_text(n.layers)}
    return {**key, "key_version": KEY_VERSION, **asked, "evals": list(spec.evals),
            "limit": spec.sampling.limit.describe(), "ppl_tokens": spec.sampling.ppl_tokens,
            "n_boot": spec.bootstrap.n_boot, "seed": spec.bootstrap.seed}


def run(spec: AblateSpec, store: str | Path, *, device: str = "auto", progress: bool = True,
        log: Callable[[str], None] = stderr, record: bool = True) -> Experiment:
    """Run (or read back) the experiment ``spec`` in ``store``; see the module docstring.

    ``record=False`` stores the evaluations but not the experiment (one benchmark of a fanned-out experiment,
    :mod:`negdb.cluster`)."""
    layout = StoreLayout.at(store)
    check_store(layout, getattr(spec.neurons, "model", None) or "MODEL")
    benches = list(spec.benchmarks)
    with Catalog(layout.location) as cat:
        main, revision, ck, width, engine = _engine(spec, layout, cat, device, progress, log)
        model_id = main.keys.model_id
        log(f"{model_id}@{revision}: {spec.mode} ablation of {main.n_members} neurons (set {main.name}, "
            f"{100 * main_fraction(main, width):.2f}% of its layers), evals {', '.join(benches)}")
        got = engine.assemble(main, spec.mode, benches, spec.controls, spec.sampling, d_mlp=width, log_probes=True)
        cmp = compare(got.baseline, got.conditions, n_boot=spec.bootstrap.n_boot, seed=spec.bootstrap.seed)
        cmp.notes.extend(got.notes)
        key = ablation_key(model_id, revision, ck["commit"], main.set_id, spec, benches)
        rows = _rows(spec, model_id, revision, got.all)
        aid = ablation_id(key)
        if not layout.has_segment(ABLATIONS.name, aid):
            aid = find_legacy(cat, rows, spec) or aid
        if record:
            _record(layout, aid, config(spec, key), rows)
            cat.refresh()
        return Experiment(aid, main, cmp, got.match, engine.computed, engine.reused, got.all, got.skipped, spec,
                          engine.probes)


def _engine(spec: AblateSpec, layout: StoreLayout, cat: Catalog, device: str, progress: bool,
            log: Callable[[str], None]) -> tuple[NeuronSet, str, dict[str, Any], int, Engine]:
    """The experiment's main set (saved), checkpoint, its row, the layers' width and the conditions engine."""
    main = main_set(cat, spec.neurons, spec.save)
    model_id = main.keys.model_id
    revision = resolve_revision(cat, main, getattr(spec.neurons, "checkpoint", None))
    ck = checkpoint_row(cat, model_id, revision)
    engine = Engine(layout, cat, ck, spec.scoring, get_lm=Loader(model_id, revision, device, log, spec.scoring.dtype),
                    progress=progress, log=log)
    return main, revision, ck, d_mlp(cat, model_id), engine


def search(spec: AblateSpec, store: str | Path, *, device: str = "auto", progress: bool = True,
           log: Callable[[str], None] = stderr) -> int:
    """Run the experiment's perplexity-matched control search alone, storing its probes (the first task of a
    fanned-out experiment, :mod:`negdb.cluster`: the benchmark tasks then read the match back instead of each
    searching). Returns the probe perplexities computed (0: all were stored)."""
    layout = StoreLayout.at(store)
    check_store(layout, getattr(spec.neurons, "model", None) or "MODEL")
    with Catalog(layout.location) as cat:
        main, _revision, _ck, width, engine = _engine(spec, layout, cat, device, progress, log)
        _found, why = engine.match(main, spec.mode, spec.controls, spec.sampling, d_mlp=width, log_probes=True)
        if why is not None:
            log(why)
        return engine.probes


def _rows(spec: AblateSpec, model_id: str, revision: str, conds: list[Condition]) -> list[dict[str, Any]]:
    """One ``ablations`` row per condition and seed (without ``ablation_id``, ``config_json``, ``created_at``)."""
    rows = []
    seeds = spec.controls.seed_list()
    for c in conds:
        for i, ns in enumerate(c.sets):
            rows.append({"condition": c.name, "seed": seeds[i] if c.name == "random" else None,
                         "model_id": model_id, "revision": revision, "mode": "none" if ns is None else spec.mode,
                         "set_id": None if ns is None else ns.set_id, "set_name": None if ns is None else ns.name,
                         "n_neurons": 0 if ns is None else ns.n_members, "fraction": c.fraction,
                         "result_ids": [res[i].result_id for res in c.results.values()]})
    return rows


def _signature(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return sorted((r["condition"], r["seed"] if r["seed"] is not None else -1, r["set_id"] or "",
                   tuple(sorted(r["result_ids"]))) for r in rows)


def find_legacy(cat: Catalog, rows: list[dict[str, Any]], spec: AblateSpec) -> str | None:
    """The id of an experiment stored before issue 12 (keyed by every option) with these conditions: the same
    sets and stored results per condition and seed, and the same bootstrap; ``None`` when there is none."""
    if not rows:
        return None
    found = cat.sql("SELECT ablation_id, condition, seed, set_id, result_ids, config_json FROM ablations "
                    "WHERE model_id = ? AND revision = ? AND NOT contains(config_json, '\"key_version\"')",
                    [rows[0]["model_id"], rows[0]["revision"]])
    want = _signature(rows)
    for aid in dict.fromkeys(found["ablation_id"].to_list()):
        mine = found.filter(pl.col("ablation_id") == aid).to_dicts()
        cfg = json.loads(mine[0]["config_json"])
        if (cfg.get("n_boot"), cfg.get("seed")) != (spec.bootstrap.n_boot, spec.bootstrap.seed):
            continue
        if _signature(mine) == want:
            return str(aid)
    return None


def _record(layout: StoreLayout, aid: str, cfg: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    """The experiment's ``ablations`` segment (first writer wins: the same experiment is stored once)."""
    if layout.has_segment(ABLATIONS.name, aid):
        return
    text = json.dumps(cfg, sort_keys=True, default=str)
    stamp = now()
    full = [{"ablation_id": aid, **r, "config_json": text, "created_at": stamp} for r in rows]
    layout.put_segment(ABLATIONS.name, aid, ABLATIONS.from_rows(full))
