"""``negdb select`` (pick a neuron set, optionally save it) and ``negdb sets`` (list saved sets)."""

from __future__ import annotations

import json

import click
import polars as pl

LAYERS_PER_ROW = 16


def _print(df: pl.DataFrame) -> None:
    with pl.Config(tbl_rows=-1, tbl_cols=-1, tbl_width_chars=200, float_precision=4, fmt_str_lengths=80,
                   tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True):
        click.echo(str(df))


def _counts_table(counts: dict[int, int]) -> list[str]:
    """Members per layer as two-row blocks (``layer`` / ``count``) of at most 16 layers."""
    items = sorted(counts.items())
    lines = []
    for i in range(0, len(items), LAYERS_PER_ROW):
        block = items[i:i + LAYERS_PER_ROW]
        widths = [max(len(str(layer)), len(str(n))) for layer, n in block]
        lines.append("layer  " + " ".join(str(layer).rjust(w) for (layer, _), w in zip(block, widths)))
        lines.append("count  " + " ".join(str(n).rjust(w) for (_, n), w in zip(block, widths)))
    return lines


@click.command("select")
@click.option("--model", required=True, help="Model key, alias, folder or hub id (as given to `negdb ingest`).")
@click.option("--checkpoint", "revision", default=None,
              help="Checkpoint (default: the latest ingested; `final` finds the final step).")
@click.option("--where", default=None,
              help="Boolean SQL expression over the neurons view's columns, e.g. 'w_dist > 0.5 AND frac_neg > 0.5'.")
@click.option("--top", default=None, help="Per layer, the highest --by: 1%, 0.01 (fraction of d_mlp) or a count.")
@click.option("--bottom", default=None, help="Per layer, the lowest --by: 35%, 0.35 or a count.")
@click.option("--random-like", "random_like", default=None,
              help="A saved set: as many random neurons per layer, none of its members (seeded by --seed).")
@click.option("--by", default="w_dist", show_default=True, help="Statistic column ranked by --top / --bottom.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of --random-like.")
@click.option("--layers", default=None, help="Restrict to layers, e.g. 0-3,7 (negative counts from the end).")
@click.option("--slice", "slice_id", default=None, help="Token slice id (default: the latest ingested).")
@click.option("--spec", "spec_id", default=None, help="Statistics spec id (default: the latest ingested).")
@click.option("--save", "name", default=None, help="Store the selection as an immutable set with this name.")
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Seconds --where may run before it is stopped [default: the service's limit, 10].")
@click.pass_obj
def select_cmd(obj: dict, model: str, revision: str | None, where: str | None, top: str | None,
               bottom: str | None, random_like: str | None, by: str, seed: int, layers: str | None,
               slice_id: str | None, spec_id: str | None, name: str | None, timeout_s: float) -> None:
    """Pick neurons by a condition, top/bottom fraction or count per layer, or randomly like a saved set."""
    import negdb
    from negdb.query import sets

    if name is not None:
        sets.check_name(name)
    from negdb.store.catalog import QUERY_TIMEOUT_S

    with negdb.connect(obj["store"]) as cat:
        sel = sets.select(cat, model, revision, where=where, top=top, bottom=bottom, by=by, random_like=random_like,
                          seed=seed, layers=layers, slice_id=slice_id, spec_id=spec_id,
                          timeout_s=timeout_s or QUERY_TIMEOUT_S)
        k = sel.keys
        click.echo(f"{k.model_id}@{k.revision}  (slice {k.slice_id}, spec {k.spec_id})")
        click.echo(f"picker: {sel.expression}")
        for line in _counts_table(sel.counts):
            click.echo(line)
        total = sum(sets.layer_widths(cat, k).get(layer, 0) for layer in sel.counts)
        share = f" ({100.0 * sel.n_members / total:.2f}% of {total})" if total else ""
        click.echo(f"total  {sel.n_members} neurons{share}")
        click.echo(f"hash   {sel.content_hash}")
        if sel.n_members:
            preview = sets.member_stats(cat, sel, dict.fromkeys(["w_dist", by]), limit=10)
            click.echo(f"first {preview.height} of {sel.n_members}:")
            _print(preview)
        if name is not None:
            saved = sets.save(cat, sel, name)
            if saved.new:
                click.echo(f"saved neuron set {saved.name}: {saved.n_members} neurons, hash {saved.set_id}")
            else:
                click.echo(f"neuron set {saved.name} is already stored with these members (hash {saved.set_id}); "
                           "nothing to do")


@click.command("sets")
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines instead of a table.")
@click.pass_obj
def sets_cmd(obj: dict, as_json: bool) -> None:
    """List the saved neuron sets."""
    import negdb
    from negdb.query import sets

    with negdb.connect(obj["store"]) as cat:
        df = sets.list_sets(cat)
    if df.height == 0:
        click.echo(f"no neuron sets in {obj['store']}: save one with `negdb select ... --save NAME`")
        return
    if as_json:
        for row in df.iter_rows(named=True):
            row["created_at"] = row["created_at"].isoformat() if row["created_at"] is not None else None
            row["counts"] = json.loads(row.pop("counts_json"))
            row["expression"] = json.loads(row["expression"])
            click.echo(json.dumps(row, sort_keys=True))
        return
    _print(df.select("name", pl.col("set_id").str.slice(0, 12).alias("hash"), "model_id", "revision",
                     "n_members", "expression", pl.col("created_at").dt.strftime("%Y-%m-%d %H:%M:%S")))
