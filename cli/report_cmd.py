"""``negdb report`` (placeholder while it is being built)."""

from __future__ import annotations

import click

from negdb.errors import NegdbError


@click.command("report")
def report() -> None:
    """Not built yet."""
    raise NegdbError("negdb report is not built yet")
