"""``negdb ablate`` as a function: pick the set, build the controls, evaluate every condition, compare.

Conditions: ``baseline`` (no intervention), ``ablation`` (the main set), ``random`` (one set per seed) and
``ppl-matched`` (see :mod:`negdb.ablate.controls`). Every evaluation is a stored result
(:mod:`negdb.ablate.evaluate`), so a repeated call only reads; the model is loaded the first time something is
missing. The experiment itself is recorded in the ``ablations`` table, one row per condition.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from negdb.ablate.compare import Comparison, Condition, compare
from negdb.ablate.controls import (MatchResult, intervention_for, main_fraction, ppl_matched, random_controls,
                                   restrict_set, save_auto)
from negdb.ablate.evaluate import Target, evaluate, make_key
from negdb.ablate.interventions import MODES
from negdb.errors import NegdbError
from negdb.evals import registry
from negdb.evals.run import ScoringRule
from negdb.query import sets as setlib
from negdb.query.setstore import NeuronSet
from negdb.store.catalog import Catalog
from negdb.store.layout import StoreLayout, short_hash
from negdb.store.results import StoredResult, lookup
from negdb.store.runs import now
from negdb.store.segments import write_segment
from negdb.store.tables import ABLATIONS

CONTROLS = ("random", "ppl-matched")
PPL_BENCHMARK = "wikitext2"


@dataclass(frozen=True)
class AblateOptions:
    """Arguments of ``negdb ablate`` (see the CLI help for each)."""

    model: str
    checkpoint: str | None = None
    where: str | None = None
    set_name: str | None = None
    top: str | None = None
    by: str = "w_dist"
    layers: str | None = None
    save: str | None = None
    mode: str = "neg"
    evals: str = "ppl,blimp,tse,suite"
    controls: str = "random,ppl-matched"
    seeds: int = 3
    seed: int = 0
    limit: int | str | None = None
    sample_seed: int = 0
    ppl_tokens: int | None = None
    probe_tokens: int = 16384
    tolerance: float = 0.05
    resolution: float = 0.005
    max_fraction: float = 0.9
    bos: str = "lm-eval"
    window: int | None = None
    batch_tokens: int = 8192
    device: str = "auto"
    n_boot: int = 1000

    def control_list(self) -> list[str]:
        names = [c.strip() for c in (self.controls or "").split(",") if c.strip() and c.strip() != "none"]
        for c in names:
            if c not in CONTROLS:
                raise NegdbError(f"unknown control {c!r}: use {', '.join(CONTROLS)} (comma-separated) or none")
        return list(dict.fromkeys(names))

    def limits(self, benches: list[str]) -> dict[str, int | None]:
        """``--limit`` per benchmark: ``N`` for all, or ``N,suite=200,tse=20`` (names and aliases override N)."""
        out: dict[str, int | None] = dict.fromkeys(benches)
        if self.limit is None:
            return out
        usage = f"bad --limit {self.limit!r}: use a count like 50, or 50,suite=200,tse=20"
        default: int | None = None
        overrides: dict[str, int] = {}
        for part in str(self.limit).split(","):
            name, eq, value = part.strip().rpartition("=")
            if not value.strip().isdigit() or int(value) < 1 or (eq and not name.strip()):
                raise NegdbError(usage)
            if not eq:
                default = int(value)
                continue
            for b in registry.expand(name.strip()):
                overrides[b] = int(value)
        for b in benches:
            if registry.get(b).kind != "perplexity":
                out[b] = overrides.get(b, default)
        return out

    def validate(self) -> None:
        given = [n for n, v in (("--where", self.where), ("--set", self.set_name), ("--top", self.top)) if v]
        if len(given) != 1:
            raise NegdbError("choose the neurons with exactly one of --where EXPR, --set NAME or --top K "
                             f"(got {', '.join(given) or 'none'})")
        if self.mode not in MODES:
            raise NegdbError(f"unknown --mode {self.mode!r}: use one of {', '.join(MODES)}")
        if self.seeds < 1:
            raise NegdbError("--seeds must be at least 1")
        if self.ppl_tokens is not None and self.ppl_tokens < 1:
            raise NegdbError("--ppl-tokens must be at least 1")
        self.limits(registry.expand(self.evals))
        if self.probe_tokens < 2:
            raise NegdbError("--probe-tokens must be at least 2")
        if not 0 <= self.tolerance < 1:
            raise NegdbError("--tolerance must lie in [0, 1)")
        if self.n_boot < 1:
            raise NegdbError("--n-boot must be at least 1")
        ScoringRule(self.bos, self.window)
        self.control_list()
        registry.expand(self.evals)


@dataclass
class Experiment:
    """What :func:`run` did: the conditions, the comparison and the perplexity match (when asked)."""

    ablation_id: str
    main: NeuronSet
    comparison: Comparison
    match: MatchResult | None = None
    computed: int = 0
    reused: int = 0
    conditions: list[Condition] = field(default_factory=list)


def main_set(cat: Catalog, opts: AblateOptions) -> NeuronSet:
    """The neurons ``opts`` picks (``--set``, or ``--where``/``--top`` saved as ``auto-<hash>`` or ``--save``)."""
    if opts.set_name:
        ns = setlib.get(cat, opts.set_name)
        if ns.keys.model_id != setlib.resolve_model(cat, opts.model):
            raise NegdbError(f"set {opts.set_name} holds neurons of {ns.keys.model_id}, not {opts.model}")
        if opts.layers is None:
            return ns
        restricted = restrict_set(cat, ns, setlib.parse_layer_list(opts.layers, cat, ns.keys))
        if restricted is None:
            raise NegdbError(f"set {opts.set_name} has no neurons in --layers {opts.layers}")
        return restricted
    sel = setlib.select(cat, opts.model, opts.checkpoint, where=opts.where, top=opts.top, by=opts.by,
                        layers=opts.layers)
    if sel.n_members == 0:
        raise NegdbError("the selection is empty: loosen --where / --top (preview it with `negdb select`)")
    return save_auto(cat, sel, opts.save)


def resolve_revision(cat: Catalog, main: NeuronSet, checkpoint: str | None) -> str:
    """The checkpoint to evaluate: ``checkpoint`` (resolved) or the one the set's statistics come from."""
    if checkpoint and checkpoint != main.keys.revision:
        return setlib.resolve_keys(cat, main.keys.model_id, checkpoint).revision
    return checkpoint or main.keys.revision


def checkpoint_row(cat: Catalog, model_id: str, revision: str) -> dict[str, Any]:
    """The ``checkpoints`` row of ``model_id@revision`` (``NegdbError`` when it was never ingested)."""
    rows = cat.arrow("SELECT * FROM checkpoints WHERE model_id = ? AND revision = ?", [model_id, revision]).to_pylist()
    if not rows:
        raise NegdbError(f"{model_id}@{revision} is not in the store: run `negdb ingest --model {model_id} "
                         f"--checkpoints {revision}` first")
    return rows[0]


def _d_mlp(cat: Catalog, model_id: str) -> int:
    rows = cat.arrow("SELECT d_mlp FROM models WHERE model_id = ?", [model_id]).to_pylist()
    return int(rows[0]["d_mlp"])


class Loader:
    """Loads the checkpoint the first time it is needed."""

    def __init__(self, model_id: str, revision: str, device: str, log: Callable[[str], None]) -> None:
        self.model_id, self.revision, self.device, self.log = model_id, revision, device, log
        self.lm: Any = None

    def __call__(self) -> Any:
        if self.lm is None:
            import torch

            from negdb.models.checkpoints import select
            from negdb.models.loading import load
            from negdb.models.registry import resolve

            source = resolve(self.model_id)
            ckpt = next((c for c in select(source, self.revision) if c.revision == self.revision), None)
            if ckpt is None:
                ckpt = select(source, self.revision)[0]
            self.log(f"loading {self.model_id}@{self.revision} ...")
            self.lm = load(source, ckpt, device=self.device, dtype=torch.float32)
        return self.lm


class Evaluator:
    """Stored evaluations of one checkpoint under one mode; counts what it ``computed`` and ``reused``.

    ``limits``: items per benchmark (``AblateOptions.limits``); perplexity reads ``ppl_tokens`` tokens.
    """

    def __init__(self, layout: StoreLayout, cat: Catalog, ckpt: dict[str, Any], mode: str, rule: ScoringRule, *,
                 limits: dict[str, int | None], ppl_tokens: int | None, sample_seed: int, batch_tokens: int,
                 progress: bool, get_lm: Callable[[], Any]) -> None:
        self.layout, self.cat, self.ckpt, self.mode, self.rule = layout, cat, ckpt, mode, rule
        self.limits, self.ppl_tokens, self.sample_seed = limits, ppl_tokens, sample_seed
        self.batch_tokens, self.progress, self.get_lm = batch_tokens, progress, get_lm
        self.computed = 0
        self.reused = 0

    def target(self, ns: NeuronSet | None) -> Target:
        """The checkpoint under ``mode`` on ``ns`` (``None``: the baseline)."""
        iv = None if ns is None else intervention_for(self.cat, ns, self.mode)
        return Target(self.ckpt["model_id"], self.ckpt["revision"], self.ckpt["commit"], iv,
                      None if ns is None else ns.set_id)

    def limit(self, bench: str) -> int | None:
        return self.ppl_tokens if registry.get(bench).kind == "perplexity" else self.limits.get(bench)

    def __call__(self, t: Target, bench: str, label: str, limit: int | None = None) -> StoredResult:
        """The stored result of ``bench`` on ``t`` (``limit`` overrides the benchmark's), computing it if needed."""
        if limit is None:
            limit = self.limit(bench)
        stored = lookup(self.layout, make_key(t, bench, self.rule, limit, self.sample_seed).result_id) is not None
        if stored:
            self.reused += 1
        else:
            self.computed += 1
        return evaluate(self.layout, t, bench, self.rule, get_lm=self.get_lm, limit=limit, seed=self.sample_seed,
                        batch_tokens=self.batch_tokens, progress=self.progress, label=label)


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run(opts: AblateOptions, store: str | Path, *, progress: bool = True,
        log: Callable[[str], None] = _stderr) -> Experiment:
    """Run (or read back) the ablation experiment ``opts`` in ``store``; see the module docstring."""
    opts.validate()
    layout = StoreLayout(Path(store))
    if not layout.marker.exists():
        raise NegdbError(f"{store} is not a negdb store: run `negdb ingest --model {opts.model}` first")
    rule = ScoringRule(opts.bos, opts.window)
    benches = registry.expand(opts.evals)
    controls = opts.control_list()
    limits = opts.limits(benches)
    with Catalog(layout.root) as cat:
        main = main_set(cat, opts)
        model_id = main.keys.model_id
        revision = resolve_revision(cat, main, opts.checkpoint)
        ck = checkpoint_row(cat, model_id, revision)
        d_mlp = _d_mlp(cat, model_id)
        ev = Evaluator(layout, cat, ck, opts.mode, rule, limits=limits, ppl_tokens=opts.ppl_tokens,
                       sample_seed=opts.sample_seed, batch_tokens=opts.batch_tokens, progress=progress,
                       get_lm=Loader(model_id, revision, opts.device, log))
        target = ev.target

        def condition(name: str, label: str, sets_: list[NeuronSet | None], **kw: Any) -> Condition:
            results: dict[str, list[Any]] = {b: [] for b in benches}
            for ns in sets_:
                t = target(ns)
                for b in benches:
                    results[b].append(ev(t, b, label))
            n = 0 if sets_[0] is None else sets_[0].n_members
            return Condition(name, label, results, n_neurons=n, sets=list(sets_), **kw)

        log(f"{model_id}@{revision}: {opts.mode} ablation of {main.n_members} neurons (set {main.name}, "
            f"{100 * main_fraction(main, d_mlp):.2f}% of its layers), evals {', '.join(benches)}")
        base = condition("baseline", "baseline", [None])
        conds = [condition("ablation", f"{opts.mode}-ablation", [main])]
        match = None
        for c in controls:
            if c == "random":
                seeds = [opts.seed + i for i in range(opts.seeds)]
                rand = random_controls(cat, main, seeds)
                conds.append(condition("random", "random", rand,
                                       note=f"seeds {seeds[0]}..{seeds[-1]}: decisions averaged over {len(seeds)} sets"))
            else:
                probe_limit = opts.probe_tokens
                p0 = ev(target(None), PPL_BENCHMARK, "baseline", probe_limit).row["primary_value"]
                pw = ev(target(main), PPL_BENCHMARK, "ablation", probe_limit).row["primary_value"]

                def probe(ns: NeuronSet) -> float:
                    return float(ev(target(ns), PPL_BENCHMARK, "ppl probe", probe_limit).row["primary_value"])

                match = ppl_matched(cat, main, d_mlp=d_mlp, target=pw, baseline=p0, probe=probe,
                                    tolerance=opts.tolerance, resolution=opts.resolution,
                                    max_fraction=opts.max_fraction,
                                    on_probe=lambda f, p: log(f"  ppl-matched probe: {100 * f:.2f}% lowest w_dist -> "
                                                              f"ppl {p:.3f} (target {pw:.3f})"))
                note = (f"{100 * match.fraction:.2f}% lowest-w_dist neurons per layer; probe ppl {match.ppl:.3f} vs "
                        f"{match.target:.3f} (baseline {match.baseline:.3f}) on {probe_limit} tokens"
                        + ("" if match.matched else "; NOT matched: the largest fraction falls short"))
                conds.append(condition("ppl-matched", "ppl-matched", [match.neuron_set], fraction=match.fraction,
                                       note=note))
        cmp = compare(base, conds, n_boot=opts.n_boot, seed=opts.seed)
        ablation_id = short_hash(model_id, revision, main.set_id, asdict(opts), n=16)
        _record(layout, ablation_id, model_id, revision, opts, [base, *conds])
        cat.refresh()
        return Experiment(ablation_id, main, cmp, match, ev.computed, ev.reused, [base, *conds])


def _record(layout: StoreLayout, ablation_id: str, model_id: str, revision: str, opts: AblateOptions,
            conds: list[Condition]) -> None:
    """One ``ablations`` row per condition and seed (first writer wins: the same experiment is stored once)."""
    rows = []
    config = json.dumps(asdict(opts), sort_keys=True)
    for c in conds:
        for i, ns in enumerate(c.sets):
            rows.append({"ablation_id": ablation_id, "condition": c.name,
                         "seed": opts.seed + i if c.name == "random" else None, "model_id": model_id,
                         "revision": revision, "mode": "none" if ns is None else opts.mode,
                         "set_id": None if ns is None else ns.set_id, "set_name": None if ns is None else ns.name,
                         "n_neurons": 0 if ns is None else ns.n_members, "fraction": c.fraction,
                         "result_ids": [res[i].result_id for res in c.results.values()], "config_json": config,
                         "created_at": now()})
    write_segment(layout.table_dir(ABLATIONS.name) / f"{ablation_id}.parquet", ABLATIONS.from_rows(rows),
                  exclusive=True)
