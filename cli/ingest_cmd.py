"""``negdb ingest``: stream pre-activations into the store and compute per-neuron statistics."""

from __future__ import annotations

import click


@click.command()
@click.option("--model", default="smollm2-135m", show_default=True,
              help="Alias (see `negdb models`), hub id, local model folder, folder of step<N>/ checkpoints, or .gguf.")
@click.option("--checkpoints", default="final", show_default=True,
              help="all | final | step1000,step2000 | every:K | first:N")
@click.option("--dataset", default="wikitext-2", show_default=True,
              help="wikitext-2 (bundled validation split), wikitext-2:test, a .txt/.jsonl file, or hf:NAME[:CONFIG][:SPLIT].")
@click.option("--text-field", default="text", show_default=True, help="Field of a .jsonl corpus holding the text.")
@click.option("--tokens", default=16384, show_default=True, type=int, help="Token budget per checkpoint.")
@click.option("--seq-len", default=512, show_default=True, type=int, help="Tokens per window.")
@click.option("--bos/--no-bos", default=False, show_default=True, help="Prepend the tokenizer's BOS to each window.")
@click.option("--layers", default="all", show_default=True, help="all or e.g. 0-3,7 (negative counts from the end).")
@click.option("--activations", default="all", show_default=True,
              help="Which ingested layers keep their activations: all | none | layers=0,5.")
@click.option("--w-reference", type=click.Choice(["exact", "sample"]), default="exact", show_default=True,
              help="exact: analytic N(0,1) quantiles (deterministic); sample: the authors' seeded N(0,1) sample.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the md token pairs and of --w-reference sample.")
@click.option("--md-pairs", default=50_000, show_default=True, type=int,
              help="Token pairs for mapping difficulty (at most tokens/2).")
@click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda | cuda:N")
@click.option("--dtype", type=click.Choice(["float32", "bfloat16", "float16"]), default="float32", show_default=True,
              help="Dtype of the model's forward pass.")
@click.option("--store-dtype", type=click.Choice(["float16", "float32"]), default="float16", show_default=True,
              help="Dtype of stored pre-activations (statistics are computed from the stored values).")
@click.option("--compression", type=click.Choice(["zstd", "none"]), default="zstd", show_default=True,
              help="Codec of stored activations (zstd level 1 saves ~10%; none writes fastest).")
@click.option("--batch-tokens", type=int, default=None, help="Tokens per forward batch (default: from --mem-budget).")
@click.option("--mem-budget", "mem_budget_mb", default=1024, show_default=True, type=int,
              help="Working-memory budget in MB for captured batches and statistics blocks.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.pass_obj
def ingest(obj: dict, quiet: bool, **kwargs: object) -> None:
    """Stream MLP pre-activations of a model's checkpoints into Zarr and statistics into the catalog."""
    from negdb.ingest.pipeline import IngestOptions, ingest as run

    results = run(IngestOptions(**kwargs), store=obj["store"], progress=not quiet)  # type: ignore[arg-type]
    done = sum(r.status != "already" for r in results)
    click.echo(f"{done} checkpoint(s) ingested, {len(results) - done} already in {obj['store']}")
