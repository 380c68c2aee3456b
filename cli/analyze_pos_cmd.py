"""``negdb analyze pos`` (placeholder while it is being built)."""

from __future__ import annotations

import click

from negdb.errors import NegdbError


@click.command("pos")
def pos() -> None:
    """Not built yet."""
    raise NegdbError("negdb analyze pos is not built yet")
