"""Checks of the typed values the option groups hold (``negdb.values``): ints, numbers, names, layer lists and
neuron counts, each refusing a wrong value with :class:`negdb.errors.BadArgument`; and their CLI forms.

A bottom-layer module (it imports only :mod:`negdb.errors`), so the option groups of every layer share it: the
evaluation groups (:mod:`negdb.evals.options`), the ingest spec (:mod:`negdb.ingest.plan`), the set spec
(:mod:`negdb.query.setspec`) and the ablation groups (:mod:`negdb.ablate.options`).
"""

from __future__ import annotations

import enum
import operator
from collections.abc import Iterable
from typing import Any

from negdb.errors import BadArgument


def as_int(value: Any, what: str, *, minimum: int | None = None, optional: bool = False) -> int | None:
    """``value`` as an int (bools and floats refused), at least ``minimum``; ``None`` allowed if ``optional``."""
    if value is None:
        if optional:
            return None
        raise BadArgument(f"{what} is required")
    if isinstance(value, bool):
        raise BadArgument(f"{what} must be an integer, got {value!r}")
    try:
        out = operator.index(value)
    except TypeError:
        raise BadArgument(f"{what} must be an integer, got {value!r}") from None
    if minimum is not None and out < minimum:
        raise BadArgument(f"{what} must be at least {minimum}, got {out}")
    return int(out)


def as_float(value: Any, what: str) -> float:
    """``value`` as a float (an int or a float; bools refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadArgument(f"{what} must be a number, got {value!r}")
    return float(value)


def as_names(value: Any, what: str) -> tuple[str, ...]:
    """A list of names (a single name is one): stripped, order kept, no repeats; strings with commas refused
    (a list is wanted, not the CLI's comma-separated text)."""
    items = [value] if isinstance(value, (str, enum.Enum)) else value
    if not isinstance(items, Iterable):
        raise BadArgument(f"{what} must be a list of names, got {value!r}")
    out: list[str] = []
    for v in items:
        name = v.value if isinstance(v, enum.Enum) else v
        if not isinstance(name, str) or not name.strip():
            raise BadArgument(f"{what} must be a list of names, got {value!r}")
        if "," in name:
            raise BadArgument(f"{what}: give a list ({name.split(',')!r}), not a comma-separated string")
        if name.strip() not in out:
            out.append(name.strip())
    return tuple(out)


def layer_list(value: Any, what: str = "layers") -> tuple[int, ...] | None:
    """``None`` (every layer) or a non-empty list of layer indices (negative ones count from the end), sorted."""
    if value is None:
        return None
    items = [value] if isinstance(value, int) else value
    if isinstance(items, str) or not isinstance(items, Iterable):
        raise BadArgument(f"{what} must be a list of layer indices like [0, 1, 2, 7], got {value!r}")
    out = {as_int(v, f"a layer of {what}") for v in items}
    if not out:
        raise BadArgument(f"{what} is empty: give at least one layer index")
    return tuple(sorted(out))  # type: ignore[arg-type]


def top_k(value: Any, what: str = "top") -> float | int:
    """A neuron count per layer: a fraction in (0, 1] (a float, 0.01 = 1%) or a count >= 1 (an int)."""
    if isinstance(value, str):
        raise BadArgument(f"{what}={value!r}: give a number (0.01 for 1%, or a count like 5), not a string")
    if isinstance(value, float):
        if not 0.0 < value <= 1.0:
            raise BadArgument(f"{what} must be a fraction in (0, 1] (0.01 = 1%) or a count >= 1, got {value}")
        return float(value)
    return as_int(value, what, minimum=1)  # type: ignore[return-value]


def k_text(k: float | int) -> str:
    """The ``--top`` form of a count or fraction (``0.01`` -> ``1%``, ``5`` -> ``5``)."""
    return str(k) if isinstance(k, int) else f"{k * 100:.12g}%"


def duration_text(seconds: float) -> str:
    """A rough duration for plans and estimates: ``45 s``, ``12 min``, ``3.5 h`` (``1,234.0 h`` for long runs)."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:,.1f} h"


def layers_text(layers: tuple[int, ...] | None) -> str | None:
    """``(0, 1, 2, 5)`` -> ``0-2,5`` (the ``--layers`` form; ``None`` stays ``None``)."""
    if layers is None:
        return None
    runs: list[list[int]] = []
    for i in layers:
        if runs and runs[-1][-1] == i - 1 and (i < 0) == (runs[-1][-1] < 0):
            runs[-1].append(i)
        else:
            runs.append([i])
    return ",".join(str(r[0]) if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs)
