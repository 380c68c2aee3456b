"""``negdb sweep``: a grid of sign-specific ablations (selector x fraction x mode x seed) with summaries."""

from __future__ import annotations

from pathlib import Path

import click

from negdb.store.segments import atomic_write_bytes


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
@click.option("--controls", default="random,ppl-matched", show_default=True,
              help="Controls: random, ppl-matched, or none.")
@click.option("--seeds", default=3, show_default=True, type=int,
              help="Seeds --seed .. --seed+N-1: item subsample, random control set and bootstrap of each run.")
@click.option("--seed", default=0, show_default=True, type=int, help="First seed.")
@click.option("--evals", default="ppl,blimp,tse,suite", show_default=True,
              help="Benchmarks and groups (ppl, grammar, suite, blimp, tse, arc_easy, ...), comma-separated.")
@click.option("--limit", default=None,
              help="Items per group (BLiMP paradigm, TSE phenomenon; per benchmark otherwise), a seeded subsample: "
                   "N, or N,suite=200,tse=20.")
@click.option("--layers", default=None, help="Restrict the sets to layers, e.g. 0-3,7.")
@click.option("--ppl-tokens", default=None, type=int, help="WikiText-2 test tokens for perplexity (default: all).")
@click.option("--probe-tokens", default=16384, show_default=True, type=int,
              help="WikiText-2 tokens of each perplexity-matching probe.")
@click.option("--tolerance", default=0.05, show_default=True, type=float,
              help="ppl-matched: accept within this share of the ablation's perplexity increase.")
@click.option("--resolution", default=0.005, show_default=True, type=float,
              help="ppl-matched: grid of fractions searched (0.005 = 0.5% of each layer).")
@click.option("--max-fraction", default=0.9, show_default=True, type=float, help="ppl-matched: largest fraction.")
@click.option("--bos", default="lm-eval", show_default=True, type=click.Choice(["lm-eval", "model"]),
              help="BOS policy: lm-eval (BOS only before an empty context) or model (the family's policy).")
@click.option("--window", default=None, type=int, help="Perplexity window in tokens (default: the model's context).")
@click.option("--batch-tokens", default=8192, show_default=True, type=int, help="Padded tokens per forward pass.")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:N or auto.")
@click.option("--n-boot", default=1000, show_default=True, type=int, help="Bootstrap draws of the CIs.")
@click.option("--dry-run", is_flag=True, help="Print the work estimate only.")
@click.option("--format", "fmt", default="table", show_default=True, type=click.Choice(["table", "json", "csv"]),
              help="table (compact tables), json (points, summaries, record) or csv (the summary rows).")
@click.option("--out", default=None, type=click.Path(dir_okay=False), help="Also write the output here.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.pass_obj
def sweep(obj: dict, dry_run: bool, fmt: str, out: str | None, quiet: bool, **kw: object) -> None:
    """Sweep selectors x fractions x modes x seeds: dose-response, selectivity, sign and selector contrasts."""
    from negdb.sweep import SweepOptions, plan, run

    opts = SweepOptions(**kw)  # type: ignore[arg-type]
    if dry_run:
        text = plan(opts, obj["store"]).text()
        click.echo(text)
    else:
        sw = run(opts, obj["store"], progress=not quiet)
        text = sw.render(fmt)
        click.echo(text)
        how = ("read back from the store" if sw.from_store
               else f"{sw.computed} evaluations computed, {sw.reused} read from the store")
        click.echo(f"sweep {sw.analysis_id}: {how} ({obj['store']})", err=True)
    if out is not None:
        atomic_write_bytes(Path(out), (text + "\n").encode())
