"""``negdb analyze``: the paper's analyses (pos, layers, training, pairs), each stored in the catalog."""

from __future__ import annotations

import click


@click.group("analyze")
def analyze() -> None:
    """The paper's analyses, stored in the catalog: pos, layers, training, pairs."""


def _register() -> None:
    from negdb.cli import analyze_layers_cmd, analyze_pairs_cmd, analyze_pos_cmd, analyze_training_cmd

    analyze.add_command(analyze_pos_cmd.pos)
    analyze.add_command(analyze_layers_cmd.layers)
    analyze.add_command(analyze_training_cmd.training)
    analyze.add_command(analyze_pairs_cmd.pairs)


_register()
