"""``negdb sweep``: a grid of sign-specific ablations (selector x fraction x mode x seed) with summaries."""

from __future__ import annotations

import click

from negdb.cli.options import emit, options


@click.command("sweep")
@options("model", "checkpoint", helps={"checkpoint": "Checkpoint (default: the latest ingested statistics)."})
@click.option("--fractions", default="0.5,1,2,5", show_default=True,
              help="Percent of each layer's neurons in the main set, comma-separated.")
@options("by", by="w_dist,kurtosis,skew,std",
         helps={"by": "Statistics (neuron_stats columns) to rank neurons by, comma-separated."})
@click.option("--direction", default="top", show_default=True,
              help="top (the highest values of --by) or bottom (the lowest).")
@click.option("--modes", default="neg,pos,both", show_default=True,
              help="Interventions: neg, pos, both, mean, posrelu, signflip, comma-separated.")
@options("controls", "seeds", "seed", "evals", "limit", "layers", "ppl-tokens", "probe-tokens", "tolerance",
         "resolution", "max-fraction", "bos", "window", "batch-tokens", "device", "n-boot",
         helps={"seeds": "Seeds --seed .. --seed+N-1: item subsample, random control set and bootstrap of each run.",
                "seed": "First seed.",
                "limit": "Items per group (BLiMP paradigm, TSE phenomenon; per benchmark otherwise), a seeded "
                         "subsample: N, or N,suite=200,tse=20.",
                "layers": "Restrict the sets to layers, e.g. 0-3,7."})
@click.option("--dry-run", is_flag=True, help="Print the work estimate only.")
@options("format", "out", "quiet",
         helps={"format": "table (compact tables), json (points, summaries, record) or csv (the summary rows)."})
@click.pass_obj
def sweep(obj: dict, dry_run: bool, fmt: str, out: str | None, quiet: bool, **kw: object) -> None:
    """Sweep selectors x fractions x modes x seeds: dose-response, selectivity, sign and selector contrasts."""
    from negdb.sweep import SweepOptions, plan, run

    opts = SweepOptions(**kw)  # type: ignore[arg-type]
    if dry_run:
        emit(plan(opts, obj["store"]).text(), out)
        return
    sw = run(opts, obj["store"], progress=not quiet)
    how = ("read back from the store" if sw.from_store
           else f"{sw.computed} evaluations computed, {sw.reused} read from the store")
    emit(sw.render(fmt), out, f"sweep {sw.analysis_id}: {how} ({obj['store']})")
