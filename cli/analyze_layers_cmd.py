"""``negdb analyze layers``: a neuron set ablated one layer group at a time and cumulatively."""

from __future__ import annotations

import click

from negdb.cli import parse
from negdb.cli.groups import (bootstrap_options, device_option, evals_option, mode_option, sampling_options,
                              scoring_options, seed_option, set_options)
from negdb.cli.options import emit, options


@click.command("layers")
@set_options(only=("model", "checkpoint", "where", "set_name", "top", "by"))
@mode_option()
@click.option("--groups", default=8, show_default=True, type=int,
              help="Contiguous layer groups (sizes as equal as possible, larger first).")
@click.option("--variants", default="alone,cumulative", show_default=True,
              help="alone (only a group's layers), cumulative (groups 0..g), comma-separated.")
@evals_option("ppl,blimp,tse", help="Benchmarks and groups (ppl, grammar, blimp, tse, suite, ...), comma-separated.")
@sampling_options(helps={"limit": "Items per group (BLiMP paradigm, TSE phenomenon; per benchmark otherwise), "
                                  "seeded subsample: N, or N,tse=20 to set some benchmarks apart."})
@scoring_options()
@bootstrap_options()
@seed_option("Bootstrap seed (unless --bootstrap-seed).")
@device_option()
@options("format", "out", "quiet")
@click.pass_obj
def layers(obj: dict, fmt: str, out: str | None, quiet: bool, device: str, variants: str, **kw: object) -> None:
    """Ablate a neuron set one layer group at a time and cumulatively; deltas with paired-bootstrap CIs."""
    from negdb.analyze.layers import LayersSpec, run

    spec = LayersSpec(variants=parse.names(variants), **kw)  # type: ignore[arg-type]
    an = run(spec, obj["store"], device=device, progress=not quiet)
    how = ("read back from the store" if an.from_store
           else f"{an.computed} evaluations computed, {an.reused} read from the store")
    emit(an.render(fmt), out, f"layers analysis {an.analysis_id}: {how} ({obj['store']})")
