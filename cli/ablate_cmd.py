"""``negdb ablate`` (ablate a neuron set against controls and compare) and ``negdb results`` (list stored ones)."""

from __future__ import annotations

import click
import polars as pl

from negdb.cli.groups import (bootstrap_options, controls_options, device_option, evals_option, executor_options,
                               mode_option, sampling_options, scoring_options, seed_option, set_options)
from negdb.cli.options import emit, options


def _print(df: pl.DataFrame) -> None:
    with pl.Config(tbl_rows=-1, tbl_cols=-1, tbl_width_chars=220, float_precision=4, fmt_str_lengths=60,
                   tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True):
        click.echo(str(df))


@click.command()
@set_options()
@click.option("--save", default=None, help="Save the main set under this name (default: auto-<hash>).")
@mode_option()
@evals_option()
@controls_options()
@sampling_options()
@scoring_options()
@bootstrap_options()
@seed_option("First random-control seed and bootstrap seed (unless --control-seed / --bootstrap-seed).")
@device_option()
@executor_options()
@options("format", "out", "quiet", helps={"out": "Also write the comparison here."})
@click.pass_obj
def ablate(obj: dict, fmt: str, out: str | None, quiet: bool, device: str, executor: object, **kw: object) -> None:
    """Ablate a neuron set (sign-specific) against random and perplexity-matched controls; compare with CIs."""
    from negdb.ablate.experiment import run
    from negdb.ablate.options import AblateSpec

    spec = AblateSpec(**kw)  # type: ignore[arg-type]
    if executor.fanned_out:  # type: ignore[attr-defined]
        from negdb.cluster import run as fan_out

        exp = fan_out(spec, obj["store"], executor, device=device, progress=not quiet)
    else:
        exp = run(spec, obj["store"], device=device, progress=not quiet)
    emit(exp.comparison.render(fmt), out,
         f"ablation {exp.ablation_id}: {exp.computed} evaluations computed, {exp.reused} read from the store "
         f"({obj['store']})" if fmt == "table" else None)


@click.command()
@click.option("--model", default=None, help="Only this model key.")
@click.option("--benchmark", default=None, help="Only this benchmark.")
@click.option("--ablations", "show_ablations", is_flag=True, help="List ablation experiments instead.")
@click.option("--show", "ablation_id", default=None, help="Print the comparison of a stored ablation.")
@options("format")
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
