"""``negdb analyze training`` (placeholder while it is being built)."""

from __future__ import annotations

import click

from negdb.errors import NegdbError


@click.command("training")
def training() -> None:
    """Not built yet."""
    raise NegdbError("negdb analyze training is not built yet")
