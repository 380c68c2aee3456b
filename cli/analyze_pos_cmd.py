"""``negdb analyze pos``: excess surprisal of an ablation per part-of-speech tag (WikiText-2 test, spaCy UPOS)."""

from __future__ import annotations

from pathlib import Path

import click

from negdb.store.segments import atomic_write_bytes


@click.command("pos")
@click.option("--model", required=True, help="Model key, alias, folder or hub id (as given to `negdb ingest`).")
@click.option("--checkpoint", default=None, help="Checkpoint (default: the one the set's statistics come from).")
@click.option("--where", default=None, help="Ablate the neurons matching this SQL expression, e.g. 'w_dist > 0.9'.")
@click.option("--set", "set_name", default=None, help="Ablate a saved neuron set (`negdb sets`).")
@click.option("--top", default=None, help="Ablate the top K per layer by --by: 1%, 0.01 or a count.")
@click.option("--by", default="w_dist", show_default=True, help="Statistic ranked by --top.")
@click.option("--layers", default=None, help="Restrict the set to layers, e.g. 0-3,7.")
@click.option("--mode", default="neg", show_default=True,
              help="Intervention: neg (zero negative pre-activations), pos, both, mean, posrelu, signflip.")
@click.option("--controls", default="random,ppl-matched", show_default=True,
              help="Controls: random, ppl-matched, or none.")
@click.option("--seeds", default=1, show_default=True, type=int, help="Random control sets (seeds --seed, +1, ...).")
@click.option("--seed", default=0, show_default=True, type=int, help="First random-control seed; bootstrap seed.")
@click.option("--ppl-tokens", default=None, type=int, help="WikiText-2 test tokens analysed (default: all).")
@click.option("--probe-tokens", default=16384, show_default=True, type=int,
              help="WikiText-2 tokens of each perplexity-matching probe.")
@click.option("--window", default=None, type=int, help="Perplexity window in tokens (default: the model's context).")
@click.option("--bos", default="lm-eval", show_default=True, type=click.Choice(["lm-eval", "model"]),
              help="BOS policy: lm-eval (BOS only before an empty context) or model (the family's policy).")
@click.option("--n-boot", default=1000, show_default=True, type=int, help="Bootstrap draws of the CIs (windows).")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:N or auto.")
@click.option("--format", "fmt", default="table", show_default=True, type=click.Choice(["table", "json", "csv"]))
@click.option("--out", default=None, type=click.Path(dir_okay=False), help="Also write the output here.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.pass_obj
def pos(obj: dict, fmt: str, out: str | None, quiet: bool, **kw: object) -> None:
    """Excess surprisal of a sign-specific ablation per universal POS tag, against the controls."""
    from negdb.analyze.pos import PosOptions, run

    res = run(PosOptions(**kw), obj["store"], progress=not quiet)  # type: ignore[arg-type]
    text = res.render(fmt)
    click.echo(text)
    exp = res.experiment
    evals = "" if exp is None else f"; {exp.computed} evaluations computed, {exp.reused} read from the store"
    click.echo(f"pos analysis {res.analysis_id}: {'computed' if res.computed else 'read from the store'}{evals} "
               f"({obj['store']})", err=True)
    if out is not None:
        atomic_write_bytes(Path(out), (text + "\n").encode())
