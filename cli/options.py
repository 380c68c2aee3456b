"""Click options of the commands' output (``--format``, ``--out``, ``--quiet``), and their common tail.

The option groups that become typed values (the neurons, controls, sampling, scoring, bootstrap, ingest) are
in :mod:`negdb.cli.groups`. ``@options("format", "out", "quiet")`` adds the named options in that order; a
keyword argument overrides an option's default for that command, and ``helps={"out": "..."}`` its help text.
:func:`emit` is the commands' common tail: print the rendered text, a status line on stderr, write ``--out``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import click

from negdb.store.segments import atomic_write_bytes

F = TypeVar("F", bound=Callable[..., Any])

SHARED: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {
    "format": (("--format", "fmt"), {"default": "table", "show_default": True,
                                     "type": click.Choice(["table", "json", "csv"])}),
    "out": (("--out",), {"default": None, "type": click.Path(dir_okay=False),
                         "help": "Also write the output here."}),
    "quiet": (("--quiet",), {"is_flag": True, "help": "No progress bars."}),
}
"""Option key -> (click parameter declarations, click keyword arguments)."""


def _key(name: str) -> str:
    key = name.lstrip("-").replace("-", "_")
    if key not in SHARED:
        raise KeyError(f"no shared option {name!r}; the shared ones: {', '.join(SHARED)}")
    return key


def options(*names: str, helps: Mapping[str, str] | None = None, **defaults: Any) -> Callable[[F], F]:
    """A decorator adding the shared options ``names`` (``"n-boot"`` or ``"n_boot"``) in that order.

    ``defaults``: per-command defaults by key (``seeds=1``); ``helps``: per-command help texts by key.
    """
    keys = [_key(n) for n in names]
    extra = [_key(k) for k in [*defaults, *(helps or {})] if _key(k) not in keys]
    if extra:
        raise KeyError(f"defaults or helps for options not added: {', '.join(extra)}")

    def decorate(fn: F) -> F:
        for key in reversed(keys):  # click lists options in the reverse order they are applied
            decls, kw = SHARED[key]
            kw = dict(kw)
            if key in defaults:
                kw["default"] = defaults[key]
                if defaults[key] is not None:
                    kw["show_default"] = True
            if helps and key in helps:
                kw["help"] = helps[key]
            fn = click.option(*decls, **kw)(fn)
        return fn

    return decorate


def emit(text: str, out: str | None, status: str | None = None) -> None:
    """Print ``text``, then ``status`` (if any) on stderr; write ``text`` and a newline to ``out`` atomically."""
    click.echo(text)
    if status is not None:
        click.echo(status, err=True)
    if out is not None:
        atomic_write_bytes(Path(out), (text + "\n").encode())
