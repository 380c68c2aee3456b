"""The grid of ``negdb sweep``: its spec, its points and each point's neuron set.

A grid point is ``(by, fraction, mode)``: ablate (``mode``) the top (or ``direction="bottom"``) ``fraction`` of
each layer's neurons ranked by the statistic ``by`` — the set ``negdb ablate --top F% --by B`` picks
(:func:`negdb.query.sets.select`, saved as ``auto-<hash>``). Each point runs once per seed ``s`` of
:attr:`SweepSpec.seeds`, and ``s`` is, explicitly, three seeds of that run: the ``--limit`` item subsample
(``Sampling.seed``), the random control set (``Controls.seed``, one set) and the bootstrap (``Bootstrap.seed``).
A point and seed is therefore exactly ``negdb ablate --set <the point's set> --mode M --seeds 1
--control-seed s --sample-seed s --bootstrap-seed s`` with the sweep's other flags
(:meth:`negdb.sweep.runner.Sweep.ablate_command` prints it).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from typing import Any

from negdb.ablate.conditions import checkpoint_row, d_mlp
from negdb.ablate.evaluate import Target, make_key
from negdb.ablate.interventions import make_intervention
from negdb.ablate.options import Controls, mode_name
from negdb.errors import BadArgument
from negdb.evals.options import Bootstrap, Sampling, Scoring, benchmarks
from negdb.evals.run import ScoringRule
from negdb.query import sets as setlib
from negdb.store.catalog import Catalog
from negdb.values import as_int, as_names, k_text, layer_list


class Direction(str, enum.Enum):
    """Which end of the ranking a grid point's set takes."""

    TOP = "top"
    BOTTOM = "bottom"

    def __str__(self) -> str:
        return self.value


DIRECTIONS = tuple(d.value for d in Direction)


@dataclass(frozen=True)
class GridPoint:
    """One grid point: the selector, the share of each layer's neurons (0.01 = 1%) and the mode."""

    by: str
    fraction: float
    mode: str

    @property
    def k(self) -> str:
        """The ``--top``/``--bottom`` argument of the point (a percentage)."""
        return k_text(self.fraction)

    def label(self) -> str:
        return f"{self.by} {self.k} {self.mode}"


def _fractions(value: Any) -> tuple[float, ...]:
    items = [value] if isinstance(value, (int, float)) else value
    out: list[float] = []
    for f in items:
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 < f <= 1:
            raise BadArgument(f"fractions must be shares of each layer in (0, 1] (0.01 = 1%), got {f!r}")
        f = round(float(f), 12)
        if f not in out:
            out.append(f)
    if not out:
        raise BadArgument("fractions is empty: give shares like [0.005, 0.01, 0.02, 0.05]")
    return tuple(out)


@dataclass(frozen=True)
class SweepSpec:
    """``negdb sweep`` as one value (see the module docstring for what each seed seeds).

    Attributes:
        model, checkpoint: the statistics (default: the latest ingest of ``model``).
        fractions: shares of each layer's neurons (0.01 = 1%).
        by: selectors (``neuron_stats`` columns) ranking the neurons.
        direction: ``top`` (highest values) or ``bottom``.
        modes: interventions.
        layers: restrict the sets to layers (``None``: every layer with statistics).
        seeds: the run seeds (each point runs once per seed).
        evals: benchmark names and aliases.
        controls: control kinds and the perplexity match (its ``seeds``/``seed`` are replaced by each run seed).
        sampling: ``limit`` and ``ppl_tokens`` (its ``seed`` is replaced by each run seed).
        scoring: BOS policy, window, batch size.
        n_boot: bootstrap draws (each run's bootstrap is seeded by its seed; the summaries by the first seed).
    """

    model: str
    checkpoint: str | None = None
    fractions: tuple[float, ...] = (0.005, 0.01, 0.02, 0.05)
    by: tuple[str, ...] = ("w_dist", "kurtosis", "skew", "std")
    direction: Direction = Direction.TOP
    modes: tuple[str, ...] = ("neg", "pos", "both")
    layers: tuple[int, ...] | None = None
    seeds: tuple[int, ...] = (0, 1, 2)
    evals: tuple[str, ...] = ("ppl", "blimp", "tse", "suite")
    controls: Controls = field(default_factory=Controls)
    sampling: Sampling = field(default_factory=Sampling)
    scoring: Scoring = field(default_factory=Scoring)
    n_boot: int = 1000

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model.strip():
            raise BadArgument("model is required")
        object.__setattr__(self, "fractions", _fractions(self.fractions))
        by = as_names(self.by, "by")
        allowed = setlib.stat_columns()
        bad = [b for b in by if b not in allowed]
        if bad or not by:
            raise BadArgument(f"--by {','.join(bad) or '(empty)'}: not a statistic column; use any of "
                              f"{', '.join(allowed)} (comma-separated)")
        object.__setattr__(self, "by", by)
        try:
            object.__setattr__(self, "direction", Direction(self.direction))
        except ValueError:
            raise BadArgument(f"unknown --direction {self.direction!r}: use top or bottom") from None
        modes = as_names(self.modes, "modes")
        if not modes:
            raise BadArgument("--modes is empty: use any of neg, pos, both, ... (comma-separated)")
        object.__setattr__(self, "modes", tuple(mode_name(m) for m in modes))
        object.__setattr__(self, "layers", layer_list(self.layers))
        seeds = [as_int(s, "seed", minimum=0) for s in ([self.seeds] if isinstance(self.seeds, int) else self.seeds)]
        if not seeds:
            raise BadArgument("seeds is empty: give at least one run seed")
        object.__setattr__(self, "seeds", tuple(dict.fromkeys(seeds)))
        benchmarks(self.evals)
        object.__setattr__(self, "evals", as_names(self.evals, "evals"))
        object.__setattr__(self, "n_boot", as_int(self.n_boot, "n_boot", minimum=1))
        for name, kind in (("controls", Controls), ("sampling", Sampling), ("scoring", Scoring)):
            if not isinstance(getattr(self, name), kind):
                raise BadArgument(f"{name} must be a {kind.__name__}, got {type(getattr(self, name)).__name__}")

    def points(self) -> list[GridPoint]:
        """Every grid point, selector-major, modes innermost (a set's modes run one after another)."""
        return [GridPoint(b, f, m) for b in self.by for f in self.fractions for m in self.modes]

    @property
    def benchmarks(self) -> tuple[str, ...]:
        return benchmarks(self.evals)

    def run_sampling(self, seed: int) -> Sampling:
        """The sampling of run seed ``seed`` (its ``limit`` subsample seeded by ``seed``)."""
        return replace(self.sampling, seed=seed)

    def run_controls(self, seed: int) -> Controls:
        """The controls of run seed ``seed`` (one random set, seeded by ``seed``)."""
        return replace(self.controls, seeds=1, seed=seed)

    def run_bootstrap(self, seed: int) -> Bootstrap:
        return Bootstrap(self.n_boot, seed)

    def rule(self) -> ScoringRule:
        return self.scoring.rule()

    def limits(self) -> dict[str, int | None]:
        return self.sampling.limits(self.benchmarks)


def selection(cat: Catalog, spec: SweepSpec, keys: setlib.Keys, by: str, fraction: float) -> setlib.Selection:
    """The main set of ``(by, fraction)`` on the statistics ``keys`` (not saved)."""
    pick = {spec.direction.value: k_text(fraction)}
    layers = None if spec.layers is None else ",".join(map(str, spec.layers))
    sel = setlib.select(cat, keys.model_id, keys.revision, by=by, layers=layers, slice_id=keys.slice_id,
                        spec_id=keys.spec_id, **pick)
    if sel.n_members == 0:
        raise BadArgument(f"the {spec.direction.value} {k_text(fraction)} by {by} is empty (every value NaN?): drop "
                          f"{by} from --by")
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

    def limit(self, bench: str, spec: SweepSpec) -> int | None:
        """Items per group of ``bench`` (tokens for perplexity), as ``Sampling.limit_for``."""
        return spec.sampling.limit_for(bench)

    def result_id(self, mode: str, set_id: str | None, bench: str, limit: int | None, seed: int) -> str:
        """The key of ``bench`` under ``mode`` on the set ``set_id`` (``None``: baseline), as ``evaluate`` keys it.

        Only the mode and the set id enter a key, so a set need not be loaded (nor saved) to know it.
        """
        iv = None if set_id is None else make_intervention(mode, {}, {})
        target = Target(self.ckpt["model_id"], self.ckpt["revision"], self.ckpt["commit"], iv, set_id)
        return make_key(target, bench, self.rule, limit, seed).result_id


def setup(cat: Catalog, spec: SweepSpec) -> Setup:
    """Resolve the checkpoint of ``spec`` (``NotFound`` with what to do when something is missing)."""
    keys = setlib.resolve_keys(cat, spec.model, spec.checkpoint)
    ckpt = checkpoint_row(cat, keys.model_id, keys.revision)
    return Setup(keys, ckpt, d_mlp(cat, keys.model_id), list(spec.benchmarks), spec.limits(), spec.rule(),
                 spec.controls.names())
