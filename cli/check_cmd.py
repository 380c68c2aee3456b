"""``negdb check`` and ``negdb repair``: find damaged files of a store, quarantine them, say what is lost."""

from __future__ import annotations

import sys

import click


@click.command()
@click.option("--full", is_flag=True, help="Also decode every stored array chunk and check its CRC-32C (reads "
                                           "every array; slower).")
@click.pass_obj
def check(obj: dict, full: bool) -> None:
    """Check the store: its marker, every catalog segment, layers held twice, every stored array, leftovers.

    Changes nothing; exits 1 when something is damaged (`negdb repair` quarantines it).
    """
    from negdb.store.integrity import check as run_check

    report = run_check(obj["store"], full=full)
    click.echo(report.render())
    if not report.ok:
        click.echo("run `negdb repair` to quarantine the damaged files (nothing is deleted)", err=True)
        sys.exit(1)


@click.command()
@click.option("--full", is_flag=True, help="Check every array chunk too (as `negdb check --full`).")
@click.pass_obj
def repair(obj: dict, full: bool) -> None:
    """Move damaged files to <store>/quarantine/<time>/ (never deletes them), drop layers held twice, remove
    leftovers of interrupted writes; print what was lost and the command that restores it."""
    from negdb.store.integrity import repair as run_repair

    click.echo(run_repair(obj["store"], full=full).render())
