"""``negdb ablate`` (ablate a neuron set against controls and compare) and ``negdb results`` (list stored ones)."""

from __future__ import annotations

from pathlib import Path

import click
import polars as pl

from negdb.store.segments import atomic_write_bytes


def _print(df: pl.DataFrame) -> None:
    with pl.Config(tbl_rows=-1, tbl_cols=-1, tbl_width_chars=220, float_precision=4, fmt_str_lengths=60,
                   tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True):
        click.echo(str(df))


@click.command()
@click.option("--model", required=True, help="Model key, alias, folder or hub id (as given to `negdb ingest`).")
@click.option("--checkpoint", default=None, help="Checkpoint (default: the one the set's statistics come from).")
@click.option("--where", default=None, help="Ablate the neurons matching this SQL expression, e.g. 'w_dist > 0.9'.")
@click.option("--set", "set_name", default=None, help="Ablate a saved neuron set (`negdb sets`).")
@click.option("--top", default=None, help="Ablate the top K per layer by --by: 1%, 0.01 or a count.")
@click.option("--by", default="w_dist", show_default=True, help="Statistic ranked by --top.")
@click.option("--layers", default=None, help="Restrict the set to layers, e.g. 0-3,7.")
@click.option("--save", default=None, help="Save the main set under this name (default: auto-<hash>).")
@click.option("--mode", default="neg", show_default=True,
              help="Intervention: neg (zero negative pre-activations), pos, both, mean, posrelu, signflip.")
@click.option("--evals", default="ppl,blimp,tse,suite", show_default=True,
              help="Benchmarks and groups (ppl, grammar, suite, blimp, tse, arc_easy, ...), comma-separated.")
@click.option("--controls", default="random,ppl-matched", show_default=True,
              help="Controls: random, ppl-matched, or none.")
@click.option("--seeds", default=3, show_default=True, type=int, help="Random control sets (seeds --seed, +1, ...).")
@click.option("--seed", default=0, show_default=True, type=int, help="First random-control seed; bootstrap seed.")
@click.option("--limit", default=None,
              help="Items per group (BLiMP paradigm, TSE phenomenon; per benchmark otherwise), seeded subsample: "
                   "N, or N,suite=200,tse=20 to set some benchmarks apart.")
@click.option("--sample-seed", default=0, show_default=True, type=int, help="Seed of the --limit subsample.")
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
@click.option("--format", "fmt", default="table", show_default=True, type=click.Choice(["table", "json", "csv"]))
@click.option("--out", default=None, type=click.Path(dir_okay=False), help="Also write the comparison here.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.pass_obj
def ablate(obj: dict, fmt: str, out: str | None, quiet: bool, **kw: object) -> None:
    """Ablate a neuron set (sign-specific) against random and perplexity-matched controls; compare with CIs."""
    from negdb.ablate.experiment import AblateOptions, run

    opts = AblateOptions(**kw)  # type: ignore[arg-type]
    exp = run(opts, obj["store"], progress=not quiet)
    text = exp.comparison.render(fmt)
    click.echo(text)
    if fmt == "table":
        click.echo(f"ablation {exp.ablation_id}: {exp.computed} evaluations computed, {exp.reused} read from "
                   f"the store ({obj['store']})", err=True)
    if out is not None:
        atomic_write_bytes(Path(out), (text + "\n").encode())


@click.command()
@click.option("--model", default=None, help="Only this model key.")
@click.option("--benchmark", default=None, help="Only this benchmark.")
@click.option("--ablations", "show_ablations", is_flag=True, help="List ablation experiments instead.")
@click.option("--show", "ablation_id", default=None, help="Print the comparison of a stored ablation.")
@click.option("--format", "fmt", default="table", show_default=True, type=click.Choice(["table", "json", "csv"]))
@click.pass_obj
def results(obj: dict, model: str | None, benchmark: str | None, show_ablations: bool, ablation_id: str | None,
            fmt: str) -> None:
    """List stored evaluations (or ablation experiments), or re-print one ablation's comparison."""
    import negdb
    from negdb.ablate.stored import ablation_frame, results_frame, stored_comparison

    with negdb.connect(obj["store"]) as cat:
        if ablation_id is not None:
            click.echo(stored_comparison(cat, ablation_id).render(fmt))
            return
        df = ablation_frame(cat) if show_ablations else results_frame(cat, model=model, benchmark=benchmark)
    if df.height == 0:
        click.echo(f"nothing stored in {obj['store']} yet: run `negdb ablate ...`")
        return
    if fmt == "json":
        click.echo(df.write_json())
    elif fmt == "csv":
        click.echo(df.write_csv(), nl=False)
    else:
        _print(df)
