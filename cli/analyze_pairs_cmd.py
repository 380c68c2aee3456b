"""``negdb analyze pairs``: the token pairs one neuron differentiates, and per layer the negative share of w_dist."""

from __future__ import annotations

from pathlib import Path

import click

from negdb.store.segments import atomic_write_bytes


@click.command("pairs")
@click.option("--model", required=True, help="Model key, alias, folder or hub id (as given to `negdb ingest`).")
@click.option("--checkpoint", default=None, help="Checkpoint (default: the latest ingested; `final` finds the last).")
@click.option("--layer", default=None, type=int, help="Layer of the neuron (with --index).")
@click.option("--index", default=None, type=int,
              help="Neuron index within --layer; omit both for the per-layer share table only.")
@click.option("--k", default=20, show_default=True, type=int, help="Pairs to report.")
@click.option("--window", default=8, show_default=True, type=int, help="Context tokens shown either side.")
@click.option("--all-signs", is_flag=True, help="Rank every pair, not only those with both values negative.")
@click.option("--n-boot", default=1000, show_default=True, type=int, help="Bootstrap draws of the share CIs.")
@click.option("--seed", default=0, show_default=True, type=int, help="Bootstrap seed.")
@click.option("--format", "fmt", default="table", show_default=True, type=click.Choice(["table", "json", "csv"]))
@click.option("--out", default=None, type=click.Path(dir_okay=False), help="Also write the output here.")
@click.pass_obj
def pairs(obj: dict, fmt: str, out: str | None, **kw: object) -> None:
    """Token pairs with nearby MLP inputs that one neuron maps far apart (both negative by default), with
    contexts; and per layer the share of w_dist in the negative region (top 1% vs rest vs all)."""
    from negdb.analyze.pairs import PairOptions, run

    res = run(PairOptions(**kw), obj["store"])  # type: ignore[arg-type]
    text = res.render(fmt)
    click.echo(text)
    if fmt == "table":
        click.echo(f"analysis {res.analysis_id}: {'read from' if res.reused else 'stored in'} {obj['store']}",
                   err=True)
    if out is not None:
        atomic_write_bytes(Path(out), (text + "\n").encode())
