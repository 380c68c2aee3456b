"""``negdb models``: the known aliases and families."""

from __future__ import annotations

import click


@click.command()
def models() -> None:
    """List model aliases and the supported architecture families."""
    from negdb.models.families import FAMILIES
    from negdb.models.registry import list_aliases

    click.echo("aliases:")
    for alias in list_aliases():
        click.echo(f"  {alias.name:<22} {alias.description}")
    click.echo("\nfamilies: model types, pre-activation module, activation module (gated MLPs: the gate)")
    for fam in FAMILIES:
        click.echo(f"  {fam.name:<10} {', '.join(fam.model_types):<36} {fam.preact:<20} {fam.act}")
    click.echo("\nAlso accepted: any hub id (org/name), a local model folder, a folder of step<N>/ "
               "checkpoints, or a .gguf file.")
