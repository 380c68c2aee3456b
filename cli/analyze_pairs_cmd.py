"""``negdb analyze pairs`` (placeholder while it is being built)."""

from __future__ import annotations

import click

from negdb.errors import NegdbError


@click.command("pairs")
def pairs() -> None:
    """Not built yet."""
    raise NegdbError("negdb analyze pairs is not built yet")
