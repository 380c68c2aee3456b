"""``negdb analyze layers`` (placeholder while it is being built)."""

from __future__ import annotations

import click

from negdb.errors import NegdbError


@click.command("layers")
def layers() -> None:
    """Not built yet."""
    raise NegdbError("negdb analyze layers is not built yet")
