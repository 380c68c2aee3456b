"""``negdb analyze pos``: excess surprisal of an ablation per part-of-speech tag (WikiText-2 test, spaCy UPOS)."""

from __future__ import annotations

import click

from negdb.cli.groups import (bootstrap_options, controls_options, device_option, mode_option, scoring_options,
                              seed_option, set_options)
from negdb.cli.options import emit, options


@click.command("pos")
@set_options()
@mode_option()
@controls_options(only=("kinds", "seeds", "seed", "probe_tokens"), seeds=1)
@click.option("--ppl-tokens", default=None, type=int, help="WikiText-2 test tokens analysed (default: all).")
@scoring_options(only=("window", "bos_policy", "dtype"))
@bootstrap_options(helps={"n_boot": "Bootstrap draws of the CIs (windows)."})
@seed_option("First random-control seed and bootstrap seed (unless --control-seed / --bootstrap-seed).")
@device_option()
@options("format", "out", "quiet")
@click.pass_obj
def pos(obj: dict, fmt: str, out: str | None, quiet: bool, device: str, **kw: object) -> None:
    """Excess surprisal of a sign-specific ablation per universal POS tag, against the controls."""
    from negdb.analyze.pos import PosSpec, run

    res = run(PosSpec(**kw), obj["store"], device=device, progress=not quiet)  # type: ignore[arg-type]
    exp = res.experiment
    evals = "" if exp is None else f"; {exp.computed} evaluations computed, {exp.reused} read from the store"
    emit(res.render(fmt), out, f"pos analysis {res.analysis_id}: "
         f"{'computed' if res.computed else 'read from the store'}{evals} ({obj['store']})")
