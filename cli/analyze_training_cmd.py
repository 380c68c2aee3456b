"""``negdb analyze training``: w_dist, the top-1% sets and the ablation effect across training checkpoints."""

from __future__ import annotations

import click

from negdb.cli.options import emit, options


@click.command("training")
@options("model",
         helps={"model": "Alias (pythia-70m ...), hub id, or a folder of step<N>/ checkpoints (as `negdb ingest`)."})
@click.option("--checkpoints", default="all", show_default=True,
              help="all | step1000,step2000 | every:K | first:N (at least two); the last one is the final one.")
@click.option("--dataset", default="wikitext-2", show_default=True, help="Ingest corpus (as `negdb ingest`).")
@click.option("--text-field", default="text", show_default=True, help="Field of a .jsonl corpus holding the text.")
@click.option("--tokens", default=16384, show_default=True, type=int, help="Ingest token budget per checkpoint.")
@click.option("--seq-len", default=512, show_default=True, type=int, help="Ingest tokens per window.")
@click.option("--bos/--no-bos", default=False, show_default=True, help="Ingest: prepend the tokenizer's BOS.")
@options("layers", layers="all", helps={"layers": "Ingest layers: all or e.g. 0-3,7."})
@click.option("--activations", default="none", show_default=True,
              help="Ingested layers that keep their activations: none | all | layers=0,5.")
@click.option("--w-reference", type=click.Choice(["exact", "sample"]), default="exact", show_default=True,
              help="W1 reference of w_dist (as `negdb ingest`).")
@options("seed", helps={"seed": "Seed of the md pairs (and W1 sample), the first random-control seed and the "
                                "bootstrap seed."})
@click.option("--md-pairs", default=50_000, show_default=True, type=int, help="Ingest: token pairs for md.")
@click.option("--dtype", type=click.Choice(["float32", "bfloat16", "float16"]), default="float32",
              show_default=True, help="Dtype of the ingest forward pass.")
@click.option("--store-dtype", type=click.Choice(["float16", "float32"]), default="float16", show_default=True,
              help="Dtype of stored pre-activations.")
@click.option("--mem-budget", "mem_budget_mb", default=1024, show_default=True, type=int,
              help="Ingest working-memory budget in MB.")
@options("top", "by", "mode", "evals", "controls", "seeds", "limit", "sample-seed", "ppl-tokens", "probe-tokens",
         top="1%", evals="ppl,blimp,tse", controls="random", seeds=1,
         helps={"top": "Each checkpoint's set: the top K per layer by --by.",
                "mode": "Intervention (as `negdb ablate`).",
                "evals": "Benchmarks of the ablation at each checkpoint (as `negdb ablate`), or none.",
                "controls": "random, ppl-matched, or both.",
                "seeds": "Random control sets per checkpoint.",
                "limit": "Items per group (BLiMP paradigm, TSE phenomenon), as `negdb ablate`.",
                "probe_tokens": "WikiText-2 tokens of each perplexity-matching probe (--controls ppl-matched)."})
@click.option("--eval-bos", default="lm-eval", show_default=True, type=click.Choice(["lm-eval", "model"]),
              help="BOS policy of the evaluations (`negdb ablate --bos`).")
@options("window", "batch-tokens", "device", "n-boot", "format", "out", "quiet")
@click.pass_obj
def training(obj: dict, fmt: str, out: str | None, quiet: bool, **kw: object) -> None:
    """Across checkpoints: w_dist per layer, the final top-1% cohort, set overlaps, ablation vs random."""
    from negdb.analyze.training import TrainingOptions, render, run

    result = run(TrainingOptions(**kw), obj["store"], progress=not quiet)  # type: ignore[arg-type]
    what = ("read from the store" if result.reused else
            f"{len(result.ingested)} checkpoint(s) ingested, {result.evaluations_computed} evaluations computed, "
            f"{result.evaluations_reused} read from the store")
    emit(render(result, fmt).rstrip("\n"), out, f"training analysis {result.analysis_id}: {what} ({obj['store']})")
