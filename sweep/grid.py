"""The grid of ``negdb sweep``: its options, its points and each point's neuron set.

A grid point is ``(by, fraction, mode)``: ablate (``mode``) the top (or ``--direction bottom``) ``fraction`` of
each layer's neurons ranked by the statistic ``by`` — the set ``negdb ablate --top F% --by B`` picks
(:func:`negdb.query.sets.select`, saved as ``auto-<hash>``). Each point runs once per seed ``s`` in
``seed .. seed + seeds - 1``: ``s`` seeds the ``--limit`` item subsample, the random control set and the
bootstrap, exactly as ``negdb ablate --seed s --sample-seed s --seeds 1`` would.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from negdb.ablate.evaluate import Target, make_key
from negdb.ablate.experiment import AblateOptions, checkpoint_row
from negdb.ablate.interventions import MODES, Intervention
from negdb.errors import NegdbError
from negdb.evals import registry
from negdb.evals.run import ScoringRule
from negdb.query import sets as setlib
from negdb.store.catalog import Catalog

DIRECTIONS = ("top", "bottom")
_PERCENT = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)\s*%?$")


def _split(text: str | None) -> list[str]:
    return list(dict.fromkeys(p.strip() for p in (text or "").split(",") if p.strip()))


@dataclass(frozen=True)
class GridPoint:
    """One grid point: the selector, the share of each layer's neurons (0.01 = 1%) and the mode."""

    by: str
    fraction: float
    mode: str

    @property
    def k(self) -> str:
        """The ``--top``/``--bottom`` argument of the point (a percentage)."""
        return f"{self.fraction * 100:.6g}%"

    def label(self) -> str:
        return f"{self.by} {self.k} {self.mode}"


@dataclass(frozen=True)
class SweepOptions:
    """Arguments of ``negdb sweep`` (see the CLI help for each)."""

    model: str
    checkpoint: str | None = None
    fractions: str = "0.5,1,2,5"
    by: str = "w_dist,kurtosis,skew,std"
    direction: str = "top"
    modes: str = "neg,pos,both"
    controls: str = "random,ppl-matched"
    seeds: int = 3
    seed: int = 0
    evals: str = "ppl,blimp,tse,suite"
    limit: int | str | None = None
    layers: str | None = None
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

    def fraction_list(self) -> list[float]:
        """``--fractions`` as shares (``"0.5,1,2,5"`` percent -> 0.005, 0.01, 0.02, 0.05), order kept."""
        out: list[float] = []
        for part in _split(self.fractions):
            m = _PERCENT.match(part)
            value = float(m.group(1)) if m else -1.0
            if not 0 < value <= 100:
                raise NegdbError(f"bad --fractions entry {part!r}: use percentages in (0, 100], e.g. 0.5,1,2,5")
            f = round(value / 100, 12)
            if f not in out:
                out.append(f)
        if not out:
            raise NegdbError("--fractions is empty: give percentages like 0.5,1,2,5")
        return out

    def by_list(self) -> list[str]:
        names = _split(self.by)
        allowed = setlib.stat_columns()
        bad = [b for b in names if b not in allowed]
        if bad or not names:
            raise NegdbError(f"--by {','.join(bad) or '(empty)'}: not a statistic column; use any of "
                             f"{', '.join(allowed)} (comma-separated)")
        return names

    def mode_list(self) -> list[str]:
        names = _split(self.modes)
        bad = [m for m in names if m not in MODES]
        if bad or not names:
            raise NegdbError(f"unknown --modes {','.join(bad) or '(empty)'}: use any of {', '.join(MODES)} "
                             "(comma-separated)")
        return names

    def seed_list(self) -> list[int]:
        return [self.seed + i for i in range(self.seeds)]

    def points(self) -> list[GridPoint]:
        """Every grid point, selector-major, modes innermost (a set's modes run one after another)."""
        return [GridPoint(b, f, m) for b in self.by_list() for f in self.fraction_list() for m in self.mode_list()]

    def ablate_options(self, point: GridPoint | None = None, seed: int | None = None) -> AblateOptions:
        """The ``negdb ablate`` options of one point and seed (the shared options when ``point`` is None)."""
        p = point or GridPoint(self.by_list()[0], self.fraction_list()[0], self.mode_list()[0])
        s = self.seed if seed is None else seed
        return AblateOptions(model=self.model, checkpoint=self.checkpoint, top=p.k, by=p.by, layers=self.layers,
                             mode=p.mode, evals=self.evals, controls=self.controls, seeds=1, seed=s, limit=self.limit,
                             sample_seed=s, ppl_tokens=self.ppl_tokens, probe_tokens=self.probe_tokens,
                             tolerance=self.tolerance, resolution=self.resolution, max_fraction=self.max_fraction,
                             bos=self.bos, window=self.window, batch_tokens=self.batch_tokens, device=self.device,
                             n_boot=self.n_boot)

    def rule(self) -> ScoringRule:
        return ScoringRule(self.bos, self.window)

    def benches(self) -> list[str]:
        return registry.expand(self.evals)

    def limits(self) -> dict[str, int | None]:
        return self.ablate_options().limits(self.benches())

    def validate(self) -> None:
        if self.direction not in DIRECTIONS:
            raise NegdbError(f"unknown --direction {self.direction!r}: use top or bottom")
        if self.seeds < 1:
            raise NegdbError("--seeds must be at least 1")
        if self.seed < 0:
            raise NegdbError("--seed must be non-negative")
        self.points()
        self.ablate_options().validate()
        if not 0 < self.resolution < self.max_fraction <= 1:
            raise NegdbError("--resolution and --max-fraction must satisfy 0 < resolution < max fraction <= 1")


def selection(cat: Catalog, opts: SweepOptions, keys: setlib.Keys, by: str, fraction: float) -> setlib.Selection:
    """The main set of ``(by, fraction)`` on the statistics ``keys`` (not saved)."""
    k = GridPoint(by, fraction, "neg").k
    pick = {"top": k} if opts.direction == "top" else {"bottom": k}
    sel = setlib.select(cat, keys.model_id, keys.revision, by=by, layers=opts.layers, slice_id=keys.slice_id,
                        spec_id=keys.spec_id, **pick)
    if sel.n_members == 0:
        raise NegdbError(f"the {opts.direction} {k} by {by} is empty (every value NaN?): drop {by} from --by")
    return sel


@dataclass(frozen=True)
class Setup:
    """What every point shares: the statistics keys, the checkpoint row, the layer width and the benchmarks."""

    keys: setlib.Keys
    ckpt: dict[str, Any]
    d_mlp: int
    benches: list[str]
    limits: dict[str, int | None]
    rule: ScoringRule
    controls: list[str]

    def limit(self, bench: str, opts: SweepOptions) -> int | None:
        """Items per group of ``bench`` (tokens for perplexity), as ``Evaluator.limit``."""
        return opts.ppl_tokens if registry.get(bench).kind == "perplexity" else self.limits.get(bench)

    def result_id(self, mode: str, set_id: str | None, bench: str, limit: int | None, seed: int) -> str:
        """The key of ``bench`` under ``mode`` on the set ``set_id`` (``None``: baseline), as ``evaluate`` keys it.

        Only the mode and the set id enter a key, so a set need not be loaded (nor saved) to know it.
        """
        iv = None if set_id is None else Intervention(mode, {}, {} if mode == "mean" else None)
        target = Target(self.ckpt["model_id"], self.ckpt["revision"], self.ckpt["commit"], iv, set_id)
        return make_key(target, bench, self.rule, limit, seed).result_id


def setup(cat: Catalog, opts: SweepOptions) -> Setup:
    """Validate ``opts`` and resolve the checkpoint (``NegdbError`` with what to do when something is missing)."""
    opts.validate()
    keys = setlib.resolve_keys(cat, opts.model, opts.checkpoint)
    ckpt = checkpoint_row(cat, keys.model_id, keys.revision)
    rows = cat.arrow("SELECT max(d_mlp) AS d FROM models WHERE model_id = ?", [keys.model_id]).to_pylist()
    d_mlp = int(rows[0]["d"]) if rows and rows[0]["d"] is not None else max(setlib.layer_widths(cat, keys).values())
    return Setup(keys, ckpt, d_mlp, opts.benches(), opts.limits(), opts.rule(), opts.ablate_options().control_list())
