"""Typed option groups of an ablation: its controls, and the whole experiment as one value (:class:`AblateSpec`).

Like the evaluation groups (:mod:`negdb.evals.options`), each validates itself once on construction, raising
:class:`negdb.errors.BadArgument`; the CLI builds them from its flags (``negdb.cli.groups``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from negdb.ablate.interventions import get_intervention
from negdb.errors import BadArgument
from negdb.evals.options import Bootstrap, Sampling, Scoring, benchmarks
from negdb.query.setspec import SetSpec
from negdb.values import as_float, as_int, as_names


class ControlKind(str, enum.Enum):
    """A control condition: ``random`` (the same count per layer, drawn outside the set, once per seed) or
    ``ppl-matched`` (the lowest-``w_dist`` fraction whose ablation matches the ablation's perplexity)."""

    RANDOM = "random"
    PPL_MATCHED = "ppl-matched"

    def __str__(self) -> str:
        return self.value


def control_kinds(value: Any) -> tuple[ControlKind, ...]:
    """Control kinds from a list of names or :class:`ControlKind` (``[]`` or ``None``: no controls)."""
    if value is None:
        return ()
    out = []
    for name in as_names(value, "controls"):
        try:
            out.append(ControlKind(name))
        except ValueError:
            raise BadArgument(f"unknown control {name!r}: use {', '.join(k.value for k in ControlKind)} "
                              "(a list), or none") from None
    return tuple(out)


@dataclass(frozen=True)
class Controls:
    """The control conditions of an ablation.

    Attributes:
        kinds: which controls (:class:`ControlKind`; empty: none).
        seeds: random control sets (seeds ``seed``, ``seed + 1``, ...).
        seed: the first random-control seed (``--control-seed``).
        tolerance: ppl-matched accepts a probe within this share of the ablation's perplexity increase.
        resolution: ppl-matched searches fractions on this grid (0.005 = 0.5% of each layer).
        max_fraction: ppl-matched's largest fraction.
        probe_tokens: WikiText-2 tokens of each perplexity-matching probe.
    """

    kinds: tuple[ControlKind, ...] = (ControlKind.RANDOM, ControlKind.PPL_MATCHED)
    seeds: int = 3
    seed: int = 0
    tolerance: float = 0.05
    resolution: float = 0.005
    max_fraction: float = 0.9
    probe_tokens: int = 16384

    def __post_init__(self) -> None:
        object.__setattr__(self, "kinds", control_kinds(self.kinds))
        object.__setattr__(self, "seeds", as_int(self.seeds, "seeds", minimum=1))
        object.__setattr__(self, "seed", as_int(self.seed, "control seed", minimum=0))
        object.__setattr__(self, "probe_tokens", as_int(self.probe_tokens, "probe_tokens", minimum=2))
        tol, res, top = (as_float(self.tolerance, "tolerance"), as_float(self.resolution, "resolution"),
                         as_float(self.max_fraction, "max_fraction"))
        if not 0 <= tol < 1:
            raise BadArgument(f"tolerance must lie in [0, 1), got {tol}")
        if not 0 < res < top <= 1:
            raise BadArgument(f"resolution and max fraction must satisfy 0 < resolution < max fraction <= 1, got "
                              f"{res} and {top}")
        object.__setattr__(self, "tolerance", tol)
        object.__setattr__(self, "resolution", res)
        object.__setattr__(self, "max_fraction", top)

    @property
    def random(self) -> bool:
        return ControlKind.RANDOM in self.kinds

    @property
    def ppl_matched(self) -> bool:
        return ControlKind.PPL_MATCHED in self.kinds

    def seed_list(self) -> list[int]:
        """The random-control seeds, ``seed .. seed + seeds - 1``."""
        return [self.seed + i for i in range(self.seeds)]

    def names(self) -> list[str]:
        return [k.value for k in self.kinds]

    def describe(self) -> str:
        """The CLI form of ``kinds`` (``random,ppl-matched`` or ``none``)."""
        return ",".join(self.names()) or "none"

    def key(self) -> dict[str, Any]:
        """What changes a control's numbers (part of an experiment's key)."""
        out: dict[str, Any] = {"kinds": self.names()}
        if self.random:
            out["seeds"] = self.seed_list()
        if self.ppl_matched:
            out.update(tolerance=self.tolerance, resolution=self.resolution, max_fraction=self.max_fraction,
                       probe_tokens=self.probe_tokens)
        return out


def mode_name(value: Any) -> str:
    """A registered intervention mode (``BadArgument`` naming them otherwise)."""
    get_intervention(value)
    return str(value)


@dataclass(frozen=True)
class AblateSpec:
    """``negdb ablate`` as one value: which neurons, which intervention, which benchmarks, controls, sampling,
    scoring and bootstrap.

    ``neurons`` is a :class:`~negdb.query.setspec.SetSpec`, or a picked ``Selection`` / saved ``NeuronSet``
    (:mod:`negdb.query.sets`); ``evals`` a list of benchmark names and aliases (``["ppl", "blimp"]``);
    ``save`` names the main set (default ``auto-<hash>``).
    """

    neurons: Any
    mode: str = "neg"
    evals: tuple[str, ...] = ("ppl", "blimp", "tse", "suite")
    controls: Controls = field(default_factory=Controls)
    sampling: Sampling = field(default_factory=Sampling)
    scoring: Scoring = field(default_factory=Scoring)
    bootstrap: Bootstrap = field(default_factory=Bootstrap)
    save: str | None = None

    def __post_init__(self) -> None:
        from negdb.query.sets import Selection
        from negdb.query.setstore import NeuronSet

        if not isinstance(self.neurons, (SetSpec, Selection, NeuronSet)):
            raise BadArgument(f"neurons must be a SetSpec, a Selection or a NeuronSet, got "
                              f"{type(self.neurons).__name__}")
        object.__setattr__(self, "mode", mode_name(self.mode))
        benchmarks(self.evals)
        object.__setattr__(self, "evals", as_names(self.evals, "evals"))
        for name, kind in (("controls", Controls), ("sampling", Sampling), ("scoring", Scoring),
                           ("bootstrap", Bootstrap)):
            if not isinstance(getattr(self, name), kind):
                raise BadArgument(f"{name} must be a {kind.__name__}, got {type(getattr(self, name)).__name__}")

    @property
    def benchmarks(self) -> tuple[str, ...]:
        """``evals`` with aliases expanded (``ppl`` -> ``wikitext2``)."""
        return benchmarks(self.evals)
