"""negdb's exceptions: one base class, and a small hierarchy a program can catch by kind.

Every error negdb raises for bad input or a refused operation is a :class:`NegdbError`: its message is one line
that says what went wrong and what to do, the CLI prints it as ``error: ...`` and exits with ``exit_code``, and
nothing stored is changed by the operation that raised it. A notebook catches the subclass it cares about::

    try:
        db.ablate(sel, evals=["blimp"])
    except negdb.UnknownModel:
        ...

The subclasses keep the base class's exit code (2) unless stated; the CLI's messages do not change with the kind.
"""

from __future__ import annotations


class NegdbError(Exception):
    """A user-facing error: one line that says what went wrong and what to do.

    The CLI prints ``str(err)`` as ``error: ...`` and exits with a non-zero code;
    nothing stored is changed by the operation that raised it.
    """

    exit_code: int = 2


class BadArgument(NegdbError, ValueError):
    """An option or argument is malformed or out of range (``--limit abc``, ``--seeds 0``, an unknown mode)."""


class UnknownModel(NegdbError, LookupError):
    """A model alias, hub id, folder or checkpoint that cannot be resolved or loaded."""


class ModelLoadError(NegdbError):
    """A model that was found but cannot be loaded (damaged weights, a bad config, an unsupported family)."""


class NotFound(NegdbError, LookupError):
    """Something asked for is not in the store: a neuron set, a result, a checkpoint that was never ingested."""


class BadQuery(NegdbError, ValueError):
    """User SQL (``negdb sql``, ``--where``, the service) that is refused or fails: not read-only, unknown view,
    a syntax or type error."""


class QueryTimeout(BadQuery):
    """A user query stopped at its time limit."""


class QueryTooLarge(BadQuery):
    """A user query refused or stopped because it would use more memory than its bound."""


class StoreError(NegdbError):
    """The store cannot be used as asked: not a negdb store, a path under a file, read-only, a damaged file."""


class StoreConflict(StoreError):
    """Two writers disagree: a segment with the same key but other content, a name taken by another set."""


class StoreDamaged(StoreError):
    """A stored file is truncated or unreadable; ``negdb check`` / ``negdb repair`` say what is affected."""


class NotEnoughDisk(StoreError, OSError):
    """The disk (or quota) is full, or a planned run would not fit; nothing partial was published."""


def one_line(err: BaseException) -> str:
    """An exception's message as one line: its first lines, up to a SQL excerpt (``LINE n:`` / ``^``)."""
    keep = []
    for line in (ln.strip() for ln in str(err).strip().splitlines()):
        if line.startswith(("LINE ", "^")):
            break
        if line:
            keep.append(line)
    return "; ".join(keep) or type(err).__name__


def preview(items, n: int = 8) -> str:  # type: ignore[no-untyped-def]
    """The first ``n`` of ``items`` for an error message: ``a, b, c`` or ``a, b, ... (12 in all)``; ``none``."""
    items = [str(i) for i in items]
    if not items:
        return "none"
    return ", ".join(items) if len(items) <= n else f"{', '.join(items[:n])}, ... ({len(items)} in all)"
