"""The CLI's string grammars, parsed into the typed values of the Python API (the only place strings are parsed).

==================  ============================  =====================================================
flag                text                          value
==================  ============================  =====================================================
``--evals``         ``ppl,blimp``                 ``("ppl", "blimp")`` (names and aliases)
``--controls``      ``random,ppl-matched|none``   ``("random", "ppl-matched")`` / ``()``
``--limit``         ``5,suite=200,tse=20``        ``Limits(5, {"suite": 200, "tse": 20})``
``--layers``        ``0-3,7`` / ``all``           ``(0, 1, 2, 3, 7)`` / ``None``
``--top``           ``1%``, ``0.01``, ``5``       ``0.01`` (a fraction) or ``5`` (a count)
``--fractions``     ``0.5,1,2,5`` (percent)       ``(0.005, 0.01, 0.02, 0.05)``
``--activations``   ``all|none|layers=0,5``       ``"all"`` / ``"none"`` / ``(0, 5)``
==================  ============================  =====================================================

Every parser raises :class:`negdb.errors.BadArgument` with the flag's usage.
"""

from __future__ import annotations

import re

from negdb.errors import BadArgument
from negdb.evals.options import Limits

_RANGE = re.compile(r"^(-?\d+)(?:-(-?\d+))?$")
_PERCENT = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)\s*%$")
_COUNT = re.compile(r"^\d+$")
_DECIMAL = re.compile(r"^(\d*\.\d+|\d+\.\d*)$")
_NUMBER = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)\s*%?$")


def names(text: str | None) -> tuple[str, ...]:
    """``"a, b,a"`` -> ``("a", "b")`` (stripped, order kept, no repeats, empty parts dropped)."""
    return tuple(dict.fromkeys(p.strip() for p in (text or "").split(",") if p.strip()))


def controls(text: str | None) -> tuple[str, ...]:
    """``--controls``: ``random,ppl-matched``, ``none`` or empty -> the control names."""
    return tuple(n for n in names(text) if n != "none")


def evals(text: str | None) -> tuple[str, ...]:
    """``--evals``: benchmark names and aliases, or ``none`` (-> ``()``)."""
    got = names(text)
    return () if got == ("none",) else got


def limit(text: str | int | None) -> Limits:
    """``--limit``: ``N`` for every benchmark, or ``N,suite=200,tse=20`` (names and aliases override N)."""
    if text is None:
        return Limits()
    usage = f"bad --limit {text!r}: use a count like 50, or 50,suite=200,tse=20"
    default: int | None = None
    per: dict[str, int] = {}
    for part in str(text).split(","):
        name, eq, value = part.strip().rpartition("=")
        if not value.strip().isdigit() or int(value) < 1 or (eq and not name.strip()):
            raise BadArgument(usage)
        if eq:
            per[name.strip()] = int(value)
        else:
            default = int(value)
    return Limits(default, per)


def layers(text: str | None, flag: str = "--layers") -> tuple[int, ...] | None:
    """``0-3,7`` -> ``(0, 1, 2, 3, 7)``; ``all`` or nothing -> ``None``. Negative indices count from the end
    (``-2--1``: the last two layers); a range runs from its lower end, both ends of one sign."""
    if text is None or text.strip() in ("", "all"):
        return None
    out: set[int] = set()
    for part in text.split(","):
        m = _RANGE.match(part.strip())
        if not m:
            raise BadArgument(f"bad {flag} '{text}': use 'all' or e.g. '0-3,7' (negative indices from the end)")
        lo, hi = int(m[1]), int(m[2] if m[2] is not None else m[1])
        if (lo < 0) != (hi < 0):
            raise BadArgument(f"bad {flag} range '{part.strip()}': give both ends from the start (0-11) or both "
                              "from the end (-3--1)")
        if lo > hi:
            raise BadArgument(f"bad {flag} range '{part.strip()}': write the lower layer first")
        out.update(range(lo, hi + 1))
    return tuple(sorted(out))


def k(text: str | None, flag: str = "--top") -> float | int | None:
    """``1%`` or ``0.01`` -> ``0.01`` (a fraction of each layer); ``5`` -> ``5`` (a count)."""
    if text is None:
        return None
    raw = str(text).strip()
    usage = f"bad {flag} '{text}': use a percentage like 1% or 35%, a fraction like 0.01, or a count like 5"
    if _COUNT.match(raw):
        if int(raw) < 1:
            raise BadArgument(usage)
        return int(raw)
    m = _PERCENT.match(raw)
    frac = float(m.group(1)) / 100.0 if m else float(raw) if _DECIMAL.match(raw) else -1.0
    if not 0.0 < frac <= 1.0:
        raise BadArgument(usage)
    return frac


def percentages(text: str | None, flag: str = "--fractions") -> tuple[float, ...]:
    """``0.5,1,2,5`` (percent of each layer) -> ``(0.005, 0.01, 0.02, 0.05)``, order kept."""
    out: list[float] = []
    for part in names(text):
        m = _NUMBER.match(part)
        value = float(m.group(1)) if m else -1.0
        if not 0 < value <= 100:
            raise BadArgument(f"bad {flag} entry {part!r}: use percentages in (0, 100], e.g. 0.5,1,2,5")
        f = round(value / 100, 12)
        if f not in out:
            out.append(f)
    if not out:
        raise BadArgument(f"{flag} is empty: give percentages like 0.5,1,2,5")
    return tuple(out)


def activations(text: str) -> str | tuple[int, ...]:
    """``--activations``: ``auto``, ``all``, ``none`` or ``layers=0,5`` (-> ``(0, 5)``)."""
    spec = text.strip()
    if spec in ("auto", "all", "none"):
        return spec
    if spec.startswith("layers="):
        got = layers(spec.removeprefix("layers="), "--activations layers=")
        if got is not None:
            return got
    raise BadArgument(f"bad --activations '{text}': use auto, all, none or layers=0,5")
