"""``negdb analyze training``: w_dist, the top-1% sets and the ablation effect across training checkpoints."""

from __future__ import annotations

import click

from negdb.cli import parse
from negdb.cli.groups import (bootstrap_options, controls_options, evals_option, executor_options, ingest_options,
                              mode_option, resource_options, sampling_options, scoring_options, seed_option)
from negdb.cli.options import emit, options


@click.command("training")
@ingest_options(only=("model", "checkpoints", "dataset", "text_field", "tokens", "seq_len", "prepend_bos",
                      "layers", "activations", "w_reference", "seed", "md_pairs", "dtype", "store_dtype"),
                decls={"seed": ("--ingest-seed",)}, model=None, checkpoints="all", activations="none",
                helps={"model": "Alias (pythia-70m ...), hub id, or a folder of step<N>/ checkpoints (as `negdb "
                                "ingest`).",
                       "checkpoints": "all | step1000,step2000 | every:K | first:N (at least two); the last one is "
                                      "the final one.",
                       "dataset": "Ingest corpus (as `negdb ingest`).",
                       "tokens": "Ingest token budget per checkpoint.", "seq_len": "Ingest tokens per window.",
                       "prepend_bos": "Ingest: prepend the tokenizer's BOS (--bos: the former name).",
                       "layers": "Ingest layers: all or e.g. 0-3,7.",
                       "seed": "Seed of the md pairs and W1 sample (default: --seed).",
                       "md_pairs": "Ingest: token pairs for md.", "dtype": "Dtype of the ingest forward pass."})
@resource_options(only=("device", "mem_budget_mb"),
                  helps={"device": "cpu, cuda, cuda:N or auto (ingest and evaluations; never part of a key).",
                         "mem_budget_mb": "Ingest working-memory budget in MB."})
@click.option("--top", default="1%", show_default=True, help="Each checkpoint's set: the top K per layer by --by.")
@click.option("--by", default="w_dist", show_default=True, help="Statistic ranked by --top.")
@mode_option(help="Intervention (as `negdb ablate`).")
@evals_option("ppl,blimp,tse", help="Benchmarks of the ablation at each checkpoint (as `negdb ablate`), or none.")
@controls_options(only=("kinds", "seeds", "seed", "probe_tokens"), kinds="random", seeds=1,
                  helps={"kinds": "random, ppl-matched, or both.", "seeds": "Random control sets per checkpoint.",
                         "probe_tokens": "WikiText-2 tokens of each perplexity-matching probe (--controls "
                                         "ppl-matched)."})
@sampling_options(helps={"limit": "Items per group (BLiMP paradigm, TSE phenomenon), as `negdb ablate`."})
@scoring_options(bos_aliases=("--eval-bos",), only=("bos_policy", "window", "batch_tokens"))
@bootstrap_options()
@seed_option("Seed of every random stream without a flag of its own given: the ingest (--ingest-seed), the "
             "random controls (--control-seed) and the bootstrap (--bootstrap-seed).")
@executor_options()
@options("format", "out", "quiet")
@click.pass_obj
def training(obj: dict, fmt: str, out: str | None, quiet: bool, top: str, resources: object, executor: object,
             **kw: object) -> None:
    """Across checkpoints: w_dist per layer, the final top-1% cohort, set overlaps, ablation vs random."""
    from negdb.analyze.training import TrainingSpec, render, run

    spec = TrainingSpec(top=parse.k(top), **kw)  # type: ignore[arg-type]
    if executor.fanned_out:  # type: ignore[attr-defined]
        from negdb.cluster import run as fan_out

        result = fan_out(spec, obj["store"], executor, resources=resources, progress=not quiet)
    else:
        result = run(spec, obj["store"], resources=resources, progress=not quiet)
    what = ("read from the store" if result.reused else
            f"{len(result.ingested)} checkpoint(s) ingested, {result.evaluations_computed} evaluations computed, "
            f"{result.evaluations_reused} read from the store")
    emit(render(result, fmt).rstrip("\n"), out, f"training analysis {result.analysis_id}: {what} ({obj['store']})")
