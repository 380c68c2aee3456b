"""``negdb ingest``: stream pre-activations into the store and compute per-neuron statistics."""

from __future__ import annotations

import click

from negdb.cli.groups import executor_options, ingest_options, resource_options


@click.command()
@ingest_options()
@resource_options()
@executor_options()
@click.option("--dry-run", is_flag=True, help="Print the run's plan (checkpoints, downloads, bytes, disk, time) "
                                               "and stop; offline for the Pythia aliases.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.pass_obj
def ingest(obj: dict, quiet: bool, dry_run: bool, ingest: object, resources: object, executor: object) -> None:
    """Stream MLP pre-activations of a model's checkpoints into Zarr and statistics into the catalog.

    The run's plan is printed first; a run the store's disk cannot hold is refused before anything is written.
    """
    from negdb.ingest.pipeline import ingest as run
    from negdb.ingest.pipeline import plan

    if dry_run:
        click.echo(plan(ingest, store=obj["store"], resources=resources).render())  # type: ignore[arg-type]
        return
    if executor.fanned_out:  # type: ignore[attr-defined]
        from negdb.cluster import run as fan_out

        results = fan_out(ingest, obj["store"], executor, resources=resources, progress=not quiet)
    else:
        results = run(ingest, store=obj["store"], resources=resources, progress=not quiet)  # type: ignore[arg-type]
    done = sum(r.status != "already" for r in results)
    click.echo(f"{done} checkpoint(s) ingested, {len(results) - done} already in {obj['store']}")
