"""The one exception type negdb raises for bad input or a refused operation."""

from __future__ import annotations


class NegdbError(Exception):
    """A user-facing error: one line that says what went wrong and what to do.

    The CLI prints ``str(err)`` as ``error: ...`` and exits with a non-zero code;
    nothing stored is changed by the operation that raised it.
    """

    exit_code: int = 2
