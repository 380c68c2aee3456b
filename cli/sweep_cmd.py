"""``negdb sweep``: a grid of sign-specific ablations (selector x fraction x mode x seed) with summaries."""

from __future__ import annotations

import click

from negdb.cli import parse
from negdb.cli.groups import (controls_options, device_option, evals_option, executor_options, sampling_options,
                               scoring_options)
from negdb.cli.options import emit, options


@click.command("sweep")
@click.option("--model", required=True, help="Model key, alias, folder or hub id (as given to `negdb ingest`).")
@click.option("--checkpoint", default=None, help="Checkpoint (default: the latest ingested statistics).")
@click.option("--fractions", default="0.5,1,2,5", show_default=True,
              help="Percent of each layer's neurons in the main set, comma-separated.")
@click.option("--by", default="w_dist,kurtosis,skew,std", show_default=True,
              help="Statistics (neuron_stats columns) to rank neurons by, comma-separated.")
@click.option("--direction", default="top", show_default=True,
              help="top (the highest values of --by) or bottom (the lowest).")
@click.option("--modes", default="neg,pos,both", show_default=True,
              help="Interventions: neg, pos, both, mean, posrelu, signflip, comma-separated.")
@controls_options(only=("kinds", "probe_tokens", "tolerance", "resolution", "max_fraction"))
@click.option("--seeds", default=3, show_default=True, type=int,
              help="Run seeds --seed .. --seed+N-1; run seed s is the --limit subsample seed, the random-control "
                   "seed and the bootstrap seed of its points (`negdb ablate --control-seed s --sample-seed s "
                   "--bootstrap-seed s --seeds 1`).")
@click.option("--seed", default=0, show_default=True, type=int, help="First run seed.")
@evals_option()
@sampling_options(only=("limit", "ppl_tokens"))
@click.option("--layers", default=None, help="Restrict the sets to layers, e.g. 0-3,7.")
@scoring_options()
@click.option("--n-boot", default=1000, show_default=True, type=int, help="Bootstrap draws of the CIs.")
@device_option()
@click.option("--dry-run", is_flag=True, help="Print the work estimate only.")
@executor_options()
@options("format", "out", "quiet",
         helps={"format": "table (compact tables), json (points, summaries, record) or csv (the summary rows)."})
@click.pass_obj
def sweep(obj: dict, dry_run: bool, fmt: str, out: str | None, quiet: bool, device: str, seeds: int, seed: int,
          fractions: str, by: str, modes: str, layers: str | None, executor: object, **kw: object) -> None:
    """Sweep selectors x fractions x modes x seeds: dose-response, selectivity, sign and selector contrasts."""
    from negdb.errors import BadArgument
    from negdb.sweep import SweepSpec, plan, run

    if seeds < 1:
        raise BadArgument("--seeds must be at least 1")
    spec = SweepSpec(fractions=parse.percentages(fractions), by=parse.names(by), modes=parse.names(modes),
                     layers=parse.layers(layers), seeds=tuple(range(seed, seed + seeds)),
                     **kw)  # type: ignore[arg-type]
    if dry_run:
        emit(plan(spec, obj["store"]).text(), out)
        return
    if executor.fanned_out:  # type: ignore[attr-defined]
        from negdb.cluster import run as fan_out

        sw = fan_out(spec, obj["store"], executor, device=device, progress=not quiet)
    else:
        sw = run(spec, obj["store"], device=device, progress=not quiet)
    how = ("read back from the store" if sw.from_store
           else f"{sw.computed} evaluations computed, {sw.reused} read from the store")
    emit(sw.render(fmt), out, f"sweep {sw.analysis_id}: {how} ({obj['store']})")
