"""``negdb analyze layers``: a neuron set ablated one layer group at a time and cumulatively."""

from __future__ import annotations

from pathlib import Path

import click

from negdb.store.segments import atomic_write_bytes


@click.command("layers")
@click.option("--model", required=True, help="Model key, alias, folder or hub id (as given to `negdb ingest`).")
@click.option("--checkpoint", default=None, help="Checkpoint (default: the one the set's statistics come from).")
@click.option("--where", default=None, help="Ablate the neurons matching this SQL expression, e.g. 'w_dist > 0.9'.")
@click.option("--set", "set_name", default=None, help="Ablate a saved neuron set (`negdb sets`).")
@click.option("--top", default=None, help="Ablate the top K per layer by --by: 1%, 0.01 or a count.")
@click.option("--by", default="w_dist", show_default=True, help="Statistic ranked by --top.")
@click.option("--mode", default="neg", show_default=True,
              help="Intervention: neg (zero negative pre-activations), pos, both, mean, posrelu, signflip.")
@click.option("--groups", default=8, show_default=True, type=int,
              help="Contiguous layer groups (sizes as equal as possible, larger first).")
@click.option("--variants", default="alone,cumulative", show_default=True,
              help="alone (only a group's layers), cumulative (groups 0..g), comma-separated.")
@click.option("--evals", default="ppl,blimp,tse", show_default=True,
              help="Benchmarks and groups (ppl, grammar, blimp, tse, suite, ...), comma-separated.")
@click.option("--limit", default=None,
              help="Items per group (BLiMP paradigm, TSE phenomenon; per benchmark otherwise), seeded subsample: "
                   "N, or N,tse=20 to set some benchmarks apart.")
@click.option("--sample-seed", default=0, show_default=True, type=int, help="Seed of the --limit subsample.")
@click.option("--ppl-tokens", default=None, type=int, help="WikiText-2 test tokens for perplexity (default: all).")
@click.option("--window", default=None, type=int, help="Perplexity window in tokens (default: the model's context).")
@click.option("--bos", default="lm-eval", show_default=True, type=click.Choice(["lm-eval", "model"]),
              help="BOS policy: lm-eval (BOS only before an empty context) or model (the family's policy).")
@click.option("--batch-tokens", default=8192, show_default=True, type=int, help="Padded tokens per forward pass.")
@click.option("--n-boot", default=1000, show_default=True, type=int, help="Bootstrap draws of the CIs.")
@click.option("--seed", default=0, show_default=True, type=int, help="Bootstrap seed.")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:N or auto.")
@click.option("--format", "fmt", default="table", show_default=True, type=click.Choice(["table", "json", "csv"]))
@click.option("--out", default=None, type=click.Path(dir_okay=False), help="Also write the output here.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.pass_obj
def layers(obj: dict, fmt: str, out: str | None, quiet: bool, **kw: object) -> None:
    """Ablate a neuron set one layer group at a time and cumulatively; deltas with paired-bootstrap CIs."""
    from negdb.analyze.layers import LayerOptions, run

    an = run(LayerOptions(**kw), obj["store"], progress=not quiet)  # type: ignore[arg-type]
    text = an.render(fmt)
    click.echo(text)
    how = ("read back from the store" if an.from_store
           else f"{an.computed} evaluations computed, {an.reused} read from the store")
    click.echo(f"layers analysis {an.analysis_id}: {how} ({obj['store']})", err=True)
    if out is not None:
        atomic_write_bytes(Path(out), (text + "\n").encode())
