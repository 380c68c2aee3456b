"""The conditions engine: baseline, ablation, random and perplexity-matched conditions, assembled once.

``negdb ablate``, ``negdb sweep`` and every ``negdb analyze`` command evaluate their conditions through an
:class:`Engine`: stored evaluations of one checkpoint (:mod:`negdb.ablate.evaluate`), counted as ``computed`` or
``reused``, with the model loaded the first time something is missing (:class:`Loader`).
:meth:`Engine.assemble` builds the four conditions of an experiment:

- ``baseline``: no intervention;
- ``ablation``: the intervention on the main set;
- ``random``: the intervention on one random set per control seed (the main set's count per layer, drawn
  outside it), decisions averaged over the seeds by the comparison;
- ``ppl-matched``: the intervention on the smallest lowest-``w_dist`` fraction whose perplexity matches the
  ablation's (:func:`negdb.ablate.controls.ppl_matched`, probes on ``Controls.probe_tokens`` tokens).

When the ablation does not raise perplexity (on the probe tokens) there is nothing to match: the ppl-matched
condition is left out, the assembly says why (``skipped``), and the experiment goes on with the other conditions.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from negdb.ablate.compare import Condition
from negdb.ablate.controls import MatchResult, intervention_for, ppl_matched, random_controls, restrict_set, save_auto
from negdb.ablate.evaluate import Target, evaluate, make_key
from negdb.ablate.options import Controls
from negdb.errors import BadArgument, NotFound, StoreError
from negdb.evals.options import Sampling, Scoring
from negdb.evals.registry import PERPLEXITY_BENCHMARK
from negdb.models.loading import LoadedModel
from negdb.query import sets as setlib
from negdb.query.setspec import SetSpec
from negdb.query.setstore import NeuronSet
from negdb.store.catalog import Catalog
from negdb.store.layout import StoreLayout
from negdb.store.results import StoredResult, lookup
from negdb.values import k_text

Log = Callable[[str], None]


def stderr(msg: str) -> None:
    """The default log: one line on stderr."""
    print(msg, file=sys.stderr, flush=True)


def check_store(layout: StoreLayout, model: str) -> None:
    """``NotFound`` unless ``layout`` is a negdb store."""
    if not layout.is_store():
        raise StoreError(f"{layout.location} is not a negdb store: run `negdb ingest --model {model}` first")


# ------------------------------------------------------------------------------------------ the main set


def main_set(cat: Catalog, neurons: SetSpec | setlib.Selection | NeuronSet, save: str | None = None) -> NeuronSet:
    """The neurons to ablate, saved: a saved set (restricted to ``layers``), or a picked selection saved as
    ``save`` (default ``auto-<hash>``)."""
    if isinstance(neurons, NeuronSet):
        return neurons
    if isinstance(neurons, setlib.Selection):
        if neurons.n_members == 0:
            raise BadArgument("the selection is empty: there is nothing to ablate")
        return save_auto(cat, neurons, save)
    spec = neurons
    if spec.set_name is not None:
        ns = setlib.get(cat, spec.set_name)
        if ns.keys.model_id != setlib.resolve_model(cat, spec.model):
            raise BadArgument(f"set {spec.set_name} holds neurons of {ns.keys.model_id}, not {spec.model}")
        if spec.layers is None:
            return ns
        restricted = restrict_set(cat, ns, setlib.parse_layer_list(_layer_arg(spec.layers), cat, ns.keys))
        if restricted is None:
            raise BadArgument(f"set {spec.set_name} has no neurons in layers {_layer_arg(spec.layers)}")
        return restricted
    sel = setlib.select(cat, spec.model, spec.checkpoint, where=spec.where,
                        top=None if spec.top is None else k_text(spec.top), by=spec.by,
                        layers=None if spec.layers is None else _layer_arg(spec.layers))
    if sel.n_members == 0:
        raise BadArgument("the selection is empty: loosen --where / --top (preview it with `negdb select`)")
    return save_auto(cat, sel, save)


def _layer_arg(layers: tuple[int, ...]) -> str:
    """Layer indices in the form :func:`negdb.query.sets.parse_layer_list` resolves (negative: from the end)."""
    return ",".join(map(str, layers))


def resolve_revision(cat: Catalog, main: NeuronSet, checkpoint: str | None) -> str:
    """The checkpoint to evaluate: ``checkpoint`` (resolved) or the one the set's statistics come from."""
    if checkpoint and checkpoint != main.keys.revision:
        return setlib.resolve_keys(cat, main.keys.model_id, checkpoint).revision
    return checkpoint or main.keys.revision


def checkpoint_row(cat: Catalog, model_id: str, revision: str) -> dict[str, Any]:
    """The ``checkpoints`` row of ``model_id@revision`` (``NotFound`` when it was never ingested)."""
    rows = cat.arrow("SELECT * FROM checkpoints WHERE model_id = ? AND revision = ?", [model_id, revision]).to_pylist()
    if not rows:
        raise NotFound(f"{model_id}@{revision} is not in the store: run `negdb ingest --model {model_id} "
                       f"--checkpoints {revision}` first")
    return rows[0]


def d_mlp(cat: Catalog, model_id: str) -> int:
    """Neurons per layer of ``model_id`` (its ``models`` row; else the widest layer with statistics)."""
    rows = cat.arrow("SELECT max(d_mlp) AS d FROM models WHERE model_id = ?", [model_id]).to_pylist()
    if rows and rows[0]["d"] is not None:
        return int(rows[0]["d"])
    keys = setlib.resolve_keys(cat, model_id)
    return max(setlib.layer_widths(cat, keys).values())


# ------------------------------------------------------------------------------------------ evaluations


class Loader:
    """Loads ``model_id@revision`` the first time it is called (``device``: ``auto``, ``cpu``, ``cuda:N``;
    ``dtype``: the forward dtype of the scoring, ``float32`` unless :class:`Scoring` says otherwise)."""

    def __init__(self, model_id: str, revision: str, device: str = "auto", log: Log = stderr,
                 dtype: str = "float32") -> None:
        self.model_id, self.revision, self.device, self.log, self.dtype = model_id, revision, device, log, dtype
        self.lm: LoadedModel | None = None

    def __call__(self) -> LoadedModel:
        if self.lm is None:
            import torch

            from negdb.models.checkpoints import select
            from negdb.models.loading import load
            from negdb.models.registry import resolve

            source = resolve(self.model_id)
            found = select(source, self.revision)
            ckpt = next((c for c in found if c.revision == self.revision), found[0])
            self.log(f"loading {self.model_id}@{self.revision} ...")
            self.lm = load(source, ckpt, device=self.device, dtype=getattr(torch, self.dtype))
        return self.lm


@dataclass
class Assembly:
    """The conditions of one experiment: the baseline, the others in order, the perplexity match (if run) and
    why the ppl-matched condition was left out (``skipped``, else ``None``)."""

    baseline: Condition
    conditions: list[Condition]
    match: MatchResult | None = None
    skipped: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def all(self) -> list[Condition]:
        return [self.baseline, *self.conditions]


class Engine:
    """Stored evaluations of one checkpoint (``ckpt``: its ``checkpoints`` row) under one :class:`Scoring`.

    Counts the evaluations it ``computed`` and ``reused``, and of the computed ones the ``probes``: perplexities on
    the probe tokens computed by :meth:`match` (0 when the perplexity match was read back from stored probes);
    ``get_lm`` is called only when one is missing.
    """

    def __init__(self, layout: StoreLayout, cat: Catalog, ckpt: dict[str, Any], scoring: Scoring, *,
                 get_lm: Callable[[], LoadedModel], progress: bool = True, log: Log = stderr) -> None:
        self.layout, self.cat, self.ckpt, self.scoring = layout, cat, ckpt, scoring
        self.rule = scoring.rule()
        self.get_lm, self.progress, self.log = get_lm, progress, log
        self.computed = 0
        self.reused = 0
        self.probes = 0

    def target(self, ns: NeuronSet | None, mode: str) -> Target:
        """The checkpoint under ``mode`` on ``ns`` (``None``: the baseline)."""
        iv = None if ns is None else intervention_for(self.cat, ns, mode)
        return Target(self.ckpt["model_id"], self.ckpt["revision"], self.ckpt["commit"], iv,
                      None if ns is None else ns.set_id)

    def result(self, t: Target, bench: str, sampling: Sampling, label: str,
               limit: int | None = None) -> StoredResult:
        """The stored result of ``bench`` on ``t`` (``limit`` overrides ``sampling``'s), computing it if needed."""
        if limit is None:
            limit = sampling.limit_for(bench)
        rid = make_key(t, bench, self.rule, limit, sampling.seed).result_id
        if lookup(self.layout, rid) is not None:
            self.reused += 1
        else:
            self.computed += 1
        return evaluate(self.layout, t, bench, self.rule, get_lm=self.get_lm, limit=limit, seed=sampling.seed,
                        batch_tokens=self.scoring.batch_tokens, progress=self.progress, label=label)

    def condition(self, name: str, label: str, sets: list[NeuronSet | None], mode: str, benches: list[str],
                  sampling: Sampling, **kw: Any) -> Condition:
        """``name``: every benchmark on every set (one result per set; ``[None]``: the baseline)."""
        results: dict[str, list[StoredResult]] = {b: [] for b in benches}
        for ns in sets:
            t = self.target(ns, mode)
            for b in benches:
                results[b].append(self.result(t, b, sampling, label))
        n = 0 if sets[0] is None else sets[0].n_members
        return Condition(name, label, results, n_neurons=n, sets=list(sets), **kw)

    def baseline(self, benches: list[str], sampling: Sampling) -> Condition:
        return self.condition("baseline", "baseline", [None], "none", benches, sampling)

    def perplexity(self, ns: NeuronSet | None, mode: str, sampling: Sampling, tokens: int, label: str) -> float:
        """Perplexity of the first ``tokens`` WikiText-2 test tokens under ``mode`` on ``ns`` (stored)."""
        res = self.result(self.target(ns, mode), PERPLEXITY_BENCHMARK, sampling, label, tokens)
        return float(res.row["primary_value"])

    def match(self, main: NeuronSet, mode: str, controls: Controls, sampling: Sampling, *, d_mlp: int,
              log_probes: bool = False) -> tuple[MatchResult | None, str | None]:
        """The perplexity match of ``main`` under ``mode``, or ``(None, why)`` when the ablation does not raise
        perplexity on the probe tokens."""
        before = self.computed
        try:
            return self._match(main, mode, controls, sampling, d_mlp=d_mlp, log_probes=log_probes)
        finally:
            self.probes += self.computed - before

    def _match(self, main: NeuronSet, mode: str, controls: Controls, sampling: Sampling, *, d_mlp: int,
               log_probes: bool) -> tuple[MatchResult | None, str | None]:
        tokens = controls.probe_tokens
        p0 = self.perplexity(None, "none", sampling, tokens, "baseline")
        pw = self.perplexity(main, mode, sampling, tokens, "ablation")
        if not pw > p0:
            return None, (f"ppl-matched left out: the ablation does not raise perplexity on {tokens} probe tokens "
                          f"({p0:.4g} -> {pw:.4g}), so there is nothing to match")

        def on_probe(f: float, p: float) -> None:
            if log_probes:
                self.log(f"  ppl-matched probe: {100 * f:.2f}% lowest w_dist -> ppl {p:.3f} (target {pw:.3f})")

        found = ppl_matched(self.cat, main, d_mlp=d_mlp, target=pw, baseline=p0,
                            probe=lambda ns: self.perplexity(ns, mode, sampling, tokens, "ppl probe"),
                            tolerance=controls.tolerance, resolution=controls.resolution,
                            max_fraction=controls.max_fraction, on_probe=on_probe)
        return found, None

    def assemble(self, main: NeuronSet, mode: str, benches: list[str], controls: Controls, sampling: Sampling, *,
                 d_mlp: int, log_probes: bool = False) -> Assembly:
        """Baseline, ablation, then the controls in the order of ``controls.kinds``."""
        out = Assembly(self.baseline(benches, sampling),
                       [self.condition("ablation", f"{mode}-ablation", [main], mode, benches, sampling)])
        for kind in controls.kinds:
            if kind.value == "random":
                seeds = controls.seed_list()
                rand = random_controls(self.cat, main, seeds)
                note = (f"seeds {seeds[0]}..{seeds[-1]}: decisions averaged over {len(seeds)} sets" if len(seeds) > 1
                        else f"seed {seeds[0]}")
                out.conditions.append(self.condition("random", "random", rand, mode, benches, sampling, note=note))
                continue
            found, why = self.match(main, mode, controls, sampling, d_mlp=d_mlp, log_probes=log_probes)
            if found is None:
                out.skipped = why
                out.notes.append(str(why))
                self.log(str(why))
                continue
            out.match = found
            note = (f"{100 * found.fraction:.2f}% lowest-w_dist neurons per layer; probe ppl {found.ppl:.3f} vs "
                    f"{found.target:.3f} (baseline {found.baseline:.3f}) on {controls.probe_tokens} tokens"
                    + ("" if found.matched else "; NOT matched: the largest fraction falls short"))
            out.conditions.append(self.condition("ppl-matched", "ppl-matched", [found.neuron_set], mode, benches,
                                                 sampling, fraction=found.fraction, note=note))
        return out
