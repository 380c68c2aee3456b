"""Typed option groups of an evaluation: how items are scored, which items are kept, how CIs are drawn.

Each group is a frozen dataclass that validates itself once, on construction, raising
:class:`negdb.errors.BadArgument` with a one-line message; every other module takes the group as given. The CLI
builds them from its flags (``negdb.cli.groups``); Python code builds them directly::

    Scoring(bos_policy="model", window=512)
    Sampling(limit=Limits(50, {"suite": 200}), ppl_tokens=65_536, seed=0)
    Bootstrap(n_boot=2000, seed=1)

What enters a stored key: :meth:`Scoring.rule` (BOS policy and perplexity window, never ``batch_tokens``: the
scores are batch-invariant), :meth:`Sampling.limit_for` and the sample seed. ``Bootstrap`` changes only the CIs
of a comparison, computed again from the stored items.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from negdb.errors import BadArgument
from negdb.evals import registry
from negdb.evals.run import DTYPES, ScoringRule, dtype_key
from negdb.values import as_int, as_names


class BosPolicy(str, enum.Enum):
    """Which BOS token an evaluation prepends (stored with every result as ``bos_policy``).

    ``LM_EVAL``: none, except the tokenizer's BOS (else EOS) before an empty context, as lm-evaluation-harness;
    ``MODEL``: the model family's policy on every request and window.
    """

    LM_EVAL = "lm-eval"
    MODEL = "model"

    def __str__(self) -> str:
        return self.value


def benchmarks(evals: Any) -> tuple[str, ...]:
    """Benchmark names from a list of names and aliases (``["ppl", "blimp", "suite"]``), order kept."""
    names = as_names(evals, "evals")
    if not names:
        raise BadArgument("evals is empty: name at least one benchmark (ppl, blimp, tse, suite, ...)")
    return tuple(registry.expand(list(names)))


@dataclass(frozen=True)
class Scoring:
    """How requests are scored.

    Attributes:
        bos_policy: :class:`BosPolicy` (``"lm-eval"`` or ``"model"``).
        window: perplexity window in tokens (``None``: the model's context).
        batch_tokens: padded tokens per forward pass (speed only: scores do not depend on it, no key holds it).
        dtype: the model's forward dtype (``float32``, or ``bfloat16`` on GPUs): part of every key when it is not
            float32, recorded with every result.
    """

    bos_policy: BosPolicy = BosPolicy.LM_EVAL
    window: int | None = None
    batch_tokens: int = 8192
    dtype: str = "float32"

    def __post_init__(self) -> None:
        try:
            policy = BosPolicy(self.bos_policy)
        except ValueError:
            raise BadArgument(f"unknown BOS policy {self.bos_policy!r}: use lm-eval or model") from None
        object.__setattr__(self, "bos_policy", policy)
        window = as_int(self.window, "window", optional=True)
        if window is not None and window < 2:
            raise BadArgument(f"window must be at least 2 tokens, got {window}")
        object.__setattr__(self, "window", window)
        object.__setattr__(self, "batch_tokens", as_int(self.batch_tokens, "batch_tokens", minimum=1))
        if self.dtype not in DTYPES:
            raise BadArgument(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")

    def rule(self) -> ScoringRule:
        """The scoring conventions that enter a result's key."""
        return ScoringRule(self.bos_policy.value, self.window, self.dtype)

    def key(self) -> dict[str, Any]:
        return {"bos": self.bos_policy.value, "window": self.window, **dtype_key(self.dtype)}


@dataclass(frozen=True)
class Limits:
    """Items kept per group of each benchmark (BLiMP paradigm, TSE phenomenon; the whole benchmark otherwise).

    ``default`` applies to every benchmark not named in ``per`` (``None``: all items); ``per`` maps benchmark
    names or aliases (``suite``, ``grammar``) to a count, given as a mapping and kept as ``(name, count)`` pairs
    in the order given (a later entry wins where two name the same benchmark). Perplexity is limited by
    ``Sampling.ppl_tokens`` instead.
    """

    default: int | None = None
    per: Any = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "default", as_int(self.default, "limit", minimum=1, optional=True))
        pairs = self.per.items() if isinstance(self.per, Mapping) else self.per
        try:
            pairs = [(k, v) for k, v in pairs]
        except (TypeError, ValueError):
            raise BadArgument(f"per-benchmark limits must be a mapping name -> count, got {self.per!r}") from None
        per: dict[str, int] = {}
        for name, n in pairs:
            if not isinstance(name, str) or not name.strip():
                raise BadArgument(f"per-benchmark limits are keyed by benchmark names, got {name!r}")
            registry.expand([name.strip()])  # a known benchmark or alias
            per[name.strip()] = as_int(n, f"limit of {name}", minimum=1)  # type: ignore[assignment]
        object.__setattr__(self, "per", tuple(per.items()))

    @classmethod
    def of(cls, value: Limits | int | Mapping[str, int] | None) -> Limits:
        """``None`` (all), a count for every benchmark, ``{"*": 50, "suite": 200}``, or a ``Limits``."""
        if isinstance(value, Limits):
            return value
        if value is None or (isinstance(value, int) and not isinstance(value, bool)):
            return cls(value)
        if isinstance(value, Mapping):
            return cls(value.get("*"), {k: v for k, v in value.items() if k != "*"})
        raise BadArgument(f"limit must be a count, a mapping benchmark -> count or None, got {value!r}")

    def for_benchmark(self, bench: str) -> int | None:
        out = self.default
        for name, n in self.per:
            if bench in registry.expand([name]):
                out = n
        return out

    def describe(self) -> str | None:
        """The CLI form (``50,suite=200``), or ``None`` for no limit."""
        if self.default is None and not self.per:
            return None
        parts = [] if self.default is None else [str(self.default)]
        return ",".join(parts + [f"{b}={n}" for b, n in self.per])


@dataclass(frozen=True)
class Sampling:
    """Which items an evaluation scores.

    Attributes:
        limit: :class:`Limits` (or what :meth:`Limits.of` takes): items per group, a seeded subsample.
        ppl_tokens: WikiText-2 test tokens scored for perplexity (the first ones; ``None``: all).
        seed: seed of the ``limit`` subsample (``--sample-seed``; pairs are never split).
    """

    limit: Limits = field(default_factory=Limits)
    ppl_tokens: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "limit", Limits.of(self.limit))  # type: ignore[arg-type]
        object.__setattr__(self, "ppl_tokens", as_int(self.ppl_tokens, "ppl_tokens", minimum=1, optional=True))
        object.__setattr__(self, "seed", as_int(self.seed, "sample seed", minimum=0))

    def limit_for(self, bench: str) -> int | None:
        """Items per group of ``bench``, or tokens for perplexity (the ``limit`` of its key)."""
        if registry.get(bench).kind == "perplexity":
            return self.ppl_tokens
        return self.limit.for_benchmark(bench)

    def limits(self, benches: Iterable[str]) -> dict[str, int | None]:
        """Items per group of each non-perplexity benchmark (``None`` for perplexity: see ``ppl_tokens``)."""
        return {b: None if registry.get(b).kind == "perplexity" else self.limit.for_benchmark(b) for b in benches}


@dataclass(frozen=True)
class Bootstrap:
    """The 95% paired-bootstrap intervals of a comparison: ``n_boot`` draws from ``numpy`` seeded by ``seed``."""

    n_boot: int = 1000
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "n_boot", as_int(self.n_boot, "n_boot", minimum=1))
        object.__setattr__(self, "seed", as_int(self.seed, "bootstrap seed", minimum=0))
