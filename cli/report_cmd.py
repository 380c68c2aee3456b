"""``negdb report``: a self-contained HTML page with PNG figures, drawn only from stored results."""

from __future__ import annotations

import click


@click.command("report")
@click.option("--model", "models", multiple=True,
              help="Model to report (repeatable; one section each). Default: every stored model.")
@click.option("--out", default="negdb-report", show_default=True,
              help="Folder for index.html and the PNG figures (an earlier report there is replaced).")
@click.option("--checkpoint", default=None,
              help="Checkpoint whose statistics are shown (default: the ablation's, else the latest step).")
@click.option("--ablation", "ablations", multiple=True,
              help="Stored ablation id to show instead of the model's latest (repeatable, one per model).")
@click.option("--analysis", "analyses", multiple=True,
              help="Stored analysis id to show instead of the latest of its kind (repeatable; "
                   "several sweeps may be given, default: every stored sweep).")
@click.option("--neuron", default=None, help="Example neuron LAYER:INDEX (default: the highest w_dist).")
@click.option("--bins", default=60, show_default=True, type=int, help="Histogram bins of the example neuron.")
@click.pass_obj
def report(obj: dict, models: tuple[str, ...], out: str, checkpoint: str | None, ablations: tuple[str, ...],
           analyses: tuple[str, ...], neuron: str | None, bins: int) -> None:
    """Write an HTML report (w_dist, an example neuron, ablation vs controls, analyses) from stored results."""
    from negdb.report import build

    rep = build(obj["store"], out, list(models) or None, checkpoint=checkpoint, ablations=ablations,
                analyses=analyses, neuron=neuron, bins=bins)
    click.echo(str(rep.page))
    click.echo(f"{len(rep.figures)} figures for {len(rep.models)} model(s); {len(rep.notes)} sections without "
               "stored results (see the notes on the page)", err=True)
