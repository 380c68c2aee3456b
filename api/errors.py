"""The one exception type negdb raises for bad input or a refused operation."""

from __future__ import annotations


class NegdbError(Exception):
    """A user-facing error: one line that says what went wrong and what to do.

    The CLI prints ``str(err)`` as ``error: ...`` and exits with a non-zero code;
    nothing stored is changed by the operation that raised it.
    """

    exit_code: int = 2


def one_line(err: BaseException) -> str:
    """An exception's message as one line: its first lines, up to a SQL excerpt (``LINE n:`` / ``^``)."""
    keep = []
    for line in (ln.strip() for ln in str(err).strip().splitlines()):
        if line.startswith(("LINE ", "^")):
            break
        if line:
            keep.append(line)
    return "; ".join(keep) or type(err).__name__
