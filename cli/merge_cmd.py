"""``negdb merge`` and ``negdb export``: many stores, one catalog."""

from __future__ import annotations

import click


@click.command("merge")
@click.argument("sources", nargs=-1, required=True)
@click.option("--into", default=None, help="Destination store, created if missing (default: --store).")
@click.option("--no-arrays", is_flag=True, help="Copy catalog segments only, not activation arrays.")
@click.pass_obj
def merge_cmd(obj: dict, sources: tuple[str, ...], into: str | None, no_arrays: bool) -> None:
    """Copy what the store INTO lacks from each SOURCE store: idempotent, the first writer wins.

    A segment stored in INTO under the same key with other content is reported and kept (exit code 2).
    """
    from negdb.store.merge import merge

    into = into or obj["store"]
    report = merge(list(sources), into, arrays=not no_arrays)
    click.echo(f"merged {len(sources)} store(s) into {into}: {report.summary()}")


@click.command("export")
@click.option("--results", "out", required=True, type=click.Path(),
              help="Write everything but activations here: a new store folder, or a .tar.gz of one.")
@click.pass_obj
def export_cmd(obj: dict, out: str) -> None:
    """Export a small bundle of the store's results (statistics, sets, evaluations, analyses, runs)."""
    from negdb.store.merge import export_results

    report = export_results(obj["store"], out)
    click.echo(f"exported {len(report.copied)} segment(s) of {obj['store']} to {out}")


@click.command("gc")
@click.option("--grace", default=3600.0, show_default=True, type=float,
              help="Keep unreferenced array prefixes and ended leases younger than this many seconds (publications "
                   "in flight).")
@click.option("--dry-run", is_flag=True, help="List what would be removed.")
@click.pass_obj
def gc_cmd(obj: dict, grace: float, dry_run: bool) -> None:
    """Remove from an object-store store the array prefixes that no activations row names (lost or killed
    publications) and the leases no one holds any more."""
    from negdb.store.lease import PREFIX
    from negdb.store.merge import gc

    removed = gc(obj["store"], grace_s=grace, dry_run=dry_run)
    leases = sum(p.startswith(PREFIX + "/") for p in removed)
    verb = "would remove" if dry_run else "removed"
    click.echo(f"{verb} {len(removed) - leases} unreferenced array prefix(es) and {leases} ended lease(s)"
               + "".join(f"\n  {p}" for p in removed))
