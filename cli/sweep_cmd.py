"""``negdb sweep`` (placeholder while it is being built)."""

from __future__ import annotations

import click

from negdb.errors import NegdbError


@click.command("sweep")
def sweep() -> None:
    """Not built yet."""
    raise NegdbError("negdb sweep is not built yet")
