"""``negdb analyze training``: w_dist, the top-1% sets and the ablation effect across training checkpoints."""

from __future__ import annotations

from pathlib import Path

import click

from negdb.store.segments import atomic_write_bytes


@click.command("training")
@click.option("--model", required=True,
              help="Alias (pythia-70m ...), hub id, or a folder of step<N>/ checkpoints (as `negdb ingest`).")
@click.option("--checkpoints", default="all", show_default=True,
              help="all | step1000,step2000 | every:K | first:N (at least two); the last one is the final one.")
@click.option("--dataset", default="wikitext-2", show_default=True, help="Ingest corpus (as `negdb ingest`).")
@click.option("--text-field", default="text", show_default=True, help="Field of a .jsonl corpus holding the text.")
@click.option("--tokens", default=16384, show_default=True, type=int, help="Ingest token budget per checkpoint.")
@click.option("--seq-len", default=512, show_default=True, type=int, help="Ingest tokens per window.")
@click.option("--bos/--no-bos", default=False, show_default=True, help="Ingest: prepend the tokenizer's BOS.")
@click.option("--layers", default="all", show_default=True, help="Ingest layers: all or e.g. 0-3,7.")
@click.option("--activations", default="none", show_default=True,
              help="Ingested layers that keep their activations: none | all | layers=0,5.")
@click.option("--w-reference", type=click.Choice(["exact", "sample"]), default="exact", show_default=True,
              help="W1 reference of w_dist (as `negdb ingest`).")
@click.option("--seed", default=0, show_default=True, type=int,
              help="Seed of the md pairs (and W1 sample), the first random-control seed and the bootstrap seed.")
@click.option("--md-pairs", default=50_000, show_default=True, type=int, help="Ingest: token pairs for md.")
@click.option("--dtype", type=click.Choice(["float32", "bfloat16", "float16"]), default="float32",
              show_default=True, help="Dtype of the ingest forward pass.")
@click.option("--store-dtype", type=click.Choice(["float16", "float32"]), default="float16", show_default=True,
              help="Dtype of stored pre-activations.")
@click.option("--mem-budget", "mem_budget_mb", default=1024, show_default=True, type=int,
              help="Ingest working-memory budget in MB.")
@click.option("--top", default="1%", show_default=True, help="Each checkpoint's set: the top K per layer by --by.")
@click.option("--by", default="w_dist", show_default=True, help="Statistic ranked by --top.")
@click.option("--mode", default="neg", show_default=True, help="Intervention (as `negdb ablate`).")
@click.option("--evals", default="ppl,blimp,tse", show_default=True,
              help="Benchmarks of the ablation at each checkpoint (as `negdb ablate`), or none.")
@click.option("--controls", default="random", show_default=True, help="random, ppl-matched, or both.")
@click.option("--seeds", default=1, show_default=True, type=int, help="Random control sets per checkpoint.")
@click.option("--limit", default=None, help="Items per group (BLiMP paradigm, TSE phenomenon), as `negdb ablate`.")
@click.option("--sample-seed", default=0, show_default=True, type=int, help="Seed of the --limit subsample.")
@click.option("--ppl-tokens", default=None, type=int, help="WikiText-2 test tokens for perplexity (default: all).")
@click.option("--probe-tokens", default=16384, show_default=True, type=int,
              help="WikiText-2 tokens of each perplexity-matching probe (--controls ppl-matched).")
@click.option("--eval-bos", default="lm-eval", show_default=True, type=click.Choice(["lm-eval", "model"]),
              help="BOS policy of the evaluations (`negdb ablate --bos`).")
@click.option("--window", default=None, type=int, help="Perplexity window in tokens (default: the model's context).")
@click.option("--batch-tokens", default=8192, show_default=True, type=int, help="Padded tokens per forward pass.")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:N or auto.")
@click.option("--n-boot", default=1000, show_default=True, type=int, help="Bootstrap draws of the CIs.")
@click.option("--format", "fmt", default="table", show_default=True, type=click.Choice(["table", "json", "csv"]))
@click.option("--out", default=None, type=click.Path(dir_okay=False), help="Also write the output here.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.pass_obj
def training(obj: dict, fmt: str, out: str | None, quiet: bool, **kw: object) -> None:
    """Across checkpoints: w_dist per layer, the final top-1% cohort, set overlaps, ablation vs random."""
    from negdb.analyze.training import TrainingOptions, render, run

    result = run(TrainingOptions(**kw), obj["store"], progress=not quiet)  # type: ignore[arg-type]
    text = render(result, fmt).rstrip("\n") + "\n"
    click.echo(text, nl=False)
    what = ("read from the store" if result.reused else
            f"{len(result.ingested)} checkpoint(s) ingested, {result.evaluations_computed} evaluations computed, "
            f"{result.evaluations_reused} read from the store")
    click.echo(f"training analysis {result.analysis_id}: {what} ({obj['store']})", err=True)
    if out is not None:
        atomic_write_bytes(Path(out), text.encode())
