"""``negdb neuron``: one neuron's statistics, a terminal histogram against the fitted Gaussian, and contexts."""

from __future__ import annotations

import json
import math

import click

BAR_WIDTH = 48
_EIGHTHS = " ▏▎▍▌▋▊▉"
FULL = "█"
MARK = "|"
TITLES = {"most_negative": "most negative", "most_positive": "most positive", "near_zero": "closest to zero"}


def _fmt(v: object, digits: int = 4) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.{digits}g}"
    return str(v)


def bar(count: float, expected: float, scale: float, width: int = BAR_WIDTH) -> str:
    """A block-character bar of ``count`` with ``|`` where ``expected`` falls (both scaled by ``scale``)."""
    cells = [" "] * (width + 1)
    if scale > 0:
        eighths = int(round(count / scale * width * 8))
        full, part = divmod(eighths, 8)
        for i in range(min(full, width)):
            cells[i] = FULL
        if part and full < width:
            cells[full] = _EIGHTHS[part]
        if expected is not None and math.isfinite(expected):
            cells[min(width, int(round(expected / scale * width)))] = MARK
    return "".join(cells).rstrip()


def histogram_lines(hist: dict) -> list[str]:
    edges, counts, expected = hist["edges"], hist["counts"], hist["expected"]
    exp = [e if e is not None else 0.0 for e in expected]
    scale = max([*counts, *exp, 0])
    texts = [(f"{edges[i]:.4g}", f"{edges[i + 1]:.4g}") for i in range(len(counts))]
    wl, wr = max(len(a) for a, _ in texts), max(len(b) for _, b in texts)
    wc = max(len(str(c)) for c in counts)
    lines = []
    for i, c in enumerate(counts):
        lo, hi = edges[i], edges[i + 1]
        sign = "-" if hi <= 0 else ("0" if lo < 0 < hi or lo == 0 else " ")
        close = "]" if i == len(counts) - 1 else ")"
        lines.append(f"{sign} [{texts[i][0].rjust(wl)}, {texts[i][1].rjust(wr)}{close} {str(c).rjust(wc)} "
                     f"{exp[i]:7.1f} {bar(c, exp[i], scale)}")
    return lines


@click.command("neuron")
@click.option("--model", required=True, help="Model key, alias, folder or hub id (as given to `negdb ingest`).")
@click.option("--checkpoint", "revision", default=None,
              help="Checkpoint (default: the latest ingested; `final` finds the final step).")
@click.option("--layer", required=True, type=int, help="Layer index.")
@click.option("--index", required=True, type=int, help="Neuron index within the layer.")
@click.option("--bins", default=40, show_default=True, type=int, help="Histogram bins.")
@click.option("--contexts", default=5, show_default=True, type=int, help="Contexts per list.")
@click.option("--window", default=8, show_default=True, type=int, help="Tokens shown either side of the token.")
@click.option("--slice", "slice_id", default=None, help="Token slice id (default: the latest ingested).")
@click.option("--spec", "spec_id", default=None, help="Statistics spec id (default: the latest ingested).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_obj
def neuron(obj: dict, model: str, revision: str | None, layer: int, index: int, bins: int, contexts: int,
           window: int, slice_id: str | None, spec_id: str | None, as_json: bool) -> None:
    """Show one neuron: statistics, histogram of its pre-activations vs N(mean, std), token contexts."""
    import negdb
    from negdb.query.neuron import report

    with negdb.connect(obj["store"]) as cat:
        rep = report(cat, model, revision, layer, index, bins=bins, contexts=contexts, window=window,
                     slice_id=slice_id, spec_id=spec_id)
    data = rep.to_dict()
    if as_json:
        click.echo(json.dumps(data, allow_nan=False))
        return
    s = data["stats"]
    click.echo(f"neuron {index} of layer {layer} of {rep.keys.model_id}@{rep.keys.revision} "
               f"({s.get('n')} tokens of {s.get('dataset')}; slice {rep.keys.slice_id}, spec {rep.keys.spec_id})")
    click.echo(f"  w_dist {_fmt(s.get('w_dist'))} (negative part {_fmt(s.get('w_dist_neg'))}, positive "
               f"{_fmt(s.get('w_dist_pos'))})  w_pct {_fmt(s.get('w_pct'))}  md {_fmt(s.get('md'))}")
    click.echo("  " + "  ".join(f"{k} {_fmt(s.get(k))}" for k in
                                ("mean", "std", "skew", "kurtosis", "frac_neg", "mean_neg", "mean_pos")))
    click.echo("  " + "  ".join(f"{k} {_fmt(s.get(k))}" for k in
                                ("min", "q01", "q05", "q25", "q50", "q75", "q95", "q99", "max")))
    for note in data["notes"]:
        click.echo(f"note: {note}")
    hist = data["histogram"]
    if hist is not None:
        click.echo(f"\nhistogram of the {hist['n']} stored pre-activations ({len(hist['counts'])} bins): "
                   f"count, expected under N({_fmt(hist['mean'])}, {_fmt(hist['std'])}), "
                   f"{FULL} count, {MARK} expected; '-' negative bin, '0' bin holding zero")
        for line in histogram_lines(hist):
            click.echo(line)
    if data["contexts"] is not None:
        for kind, items in data["contexts"].items():
            if not items:
                continue
            click.echo(f"\n{TITLES.get(kind, kind)} (value, window:position, context):")
            for c in items:
                text = (c["text"] or "").replace("\r", "\\r").replace("\n", "\\n")
                where = f"{c['window']}:{c['position']}"
                click.echo(f"  {_fmt(c['value']):>10}  {where:<9} {text}")
