"""``negdb analyze pairs``: the token pairs one neuron differentiates, and per layer the negative share of w_dist."""

from __future__ import annotations

import click

from negdb.cli.groups import bootstrap_options, seed_option
from negdb.cli.options import emit, options


@click.command("pairs")
@click.option("--model", required=True, help="Model key, alias, folder or hub id (as given to `negdb ingest`).")
@click.option("--checkpoint", default=None, help="Checkpoint (default: the latest ingested; `final` finds the last).")
@click.option("--layer", default=None, type=int, help="Layer of the neuron (with --index).")
@click.option("--index", default=None, type=int,
              help="Neuron index within --layer; omit both for the per-layer share table only.")
@click.option("--k", default=20, show_default=True, type=int, help="Pairs to report.")
@click.option("--context", "--window", "context", default=8, show_default=True, type=int,
              help="Context tokens shown either side of a pair's tokens (--window: the former name).")
@click.option("--all-signs", is_flag=True, help="Rank every pair, not only those with both values negative.")
@bootstrap_options(helps={"n_boot": "Bootstrap draws of the share CIs."})
@seed_option("Bootstrap seed (unless --bootstrap-seed).")
@options("format", "out")
@click.pass_obj
def pairs(obj: dict, fmt: str, out: str | None, **kw: object) -> None:
    """Token pairs with nearby MLP inputs that one neuron maps far apart (both negative by default), with
    contexts; and per layer the share of w_dist in the negative region (top 1% vs rest vs all)."""
    from negdb.analyze.pairs import PairsSpec, run

    res = run(PairsSpec(**kw), obj["store"])  # type: ignore[arg-type]
    emit(res.render(fmt), out, f"analysis {res.analysis_id}: {'read from' if res.reused else 'stored in'} "
         f"{obj['store']}" if fmt == "table" else None)
