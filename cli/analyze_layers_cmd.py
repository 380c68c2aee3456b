"""``negdb analyze layers``: a neuron set ablated one layer group at a time and cumulatively."""

from __future__ import annotations

import click

from negdb.cli.options import emit, options


@click.command("layers")
@options("model", "checkpoint", "where", "set", "top", "by", "mode")
@click.option("--groups", default=8, show_default=True, type=int,
              help="Contiguous layer groups (sizes as equal as possible, larger first).")
@click.option("--variants", default="alone,cumulative", show_default=True,
              help="alone (only a group's layers), cumulative (groups 0..g), comma-separated.")
@options("evals", "limit", "sample-seed", "ppl-tokens", "window", "bos", "batch-tokens", "n-boot", "seed", "device",
         "format", "out", "quiet", evals="ppl,blimp,tse",
         helps={"evals": "Benchmarks and groups (ppl, grammar, blimp, tse, suite, ...), comma-separated.",
                "limit": "Items per group (BLiMP paradigm, TSE phenomenon; per benchmark otherwise), seeded "
                         "subsample: N, or N,tse=20 to set some benchmarks apart.",
                "seed": "Bootstrap seed."})
@click.pass_obj
def layers(obj: dict, fmt: str, out: str | None, quiet: bool, **kw: object) -> None:
    """Ablate a neuron set one layer group at a time and cumulatively; deltas with paired-bootstrap CIs."""
    from negdb.analyze.layers import LayerOptions, run

    an = run(LayerOptions(**kw), obj["store"], progress=not quiet)  # type: ignore[arg-type]
    how = ("read back from the store" if an.from_store
           else f"{an.computed} evaluations computed, {an.reused} read from the store")
    emit(an.render(fmt), out, f"layers analysis {an.analysis_id}: {how} ({obj['store']})")
