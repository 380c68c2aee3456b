"""``negdb analyze pos``: excess surprisal of an ablation per part-of-speech tag (WikiText-2 test, spaCy UPOS)."""

from __future__ import annotations

import click

from negdb.cli.options import emit, options


@click.command("pos")
@options("model", "checkpoint", "where", "set", "top", "by", "layers", "mode", "controls", "seeds", "seed",
         "ppl-tokens", "probe-tokens", "window", "bos", "n-boot", "device", "format", "out", "quiet", seeds=1,
         helps={"ppl_tokens": "WikiText-2 test tokens analysed (default: all).",
                "n_boot": "Bootstrap draws of the CIs (windows)."})
@click.pass_obj
def pos(obj: dict, fmt: str, out: str | None, quiet: bool, **kw: object) -> None:
    """Excess surprisal of a sign-specific ablation per universal POS tag, against the controls."""
    from negdb.analyze.pos import PosOptions, run

    res = run(PosOptions(**kw), obj["store"], progress=not quiet)  # type: ignore[arg-type]
    exp = res.experiment
    evals = "" if exp is None else f"; {exp.computed} evaluations computed, {exp.reused} read from the store"
    emit(res.render(fmt), out, f"pos analysis {res.analysis_id}: "
         f"{'computed' if res.computed else 'read from the store'}{evals} ({obj['store']})")
