"""``negdb top`` and ``negdb runs``: read the catalog."""

from __future__ import annotations

import click
import polars as pl


def _print(df: pl.DataFrame) -> None:
    with pl.Config(tbl_rows=-1, tbl_cols=-1, tbl_width_chars=200, float_precision=4,
                   tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True):
        click.echo(str(df))


@click.command()
@click.option("--k", default=3, show_default=True, type=int, help="Neurons per layer.")
@click.option("--model", default=None, help="Model key (default: the latest ingest's).")
@click.option("--checkpoint", "revision", default=None, help="Checkpoint (default: the latest ingest's).")
@click.pass_obj
def top(obj: dict, k: int, model: str | None, revision: str | None) -> None:
    """Print the top Wasserstein neurons (highest w_dist) of each layer."""
    import negdb
    from negdb.query.top import top_neurons

    with negdb.connect(obj["store"]) as cat:
        df = top_neurons(cat, k=k, model=model, revision=revision)
    first = df.row(0, named=True)
    click.echo(f"top {k} Wasserstein neurons per layer of {first['model_id']}@{first['revision']} "
               "(w_dist: 1-Wasserstein distance of the z-scored pre-activations to N(0,1); "
               "neg_share: part of it in the negative region)")
    _print(df.drop("model_id", "revision"))


@click.command()
@click.pass_obj
def runs(obj: dict) -> None:
    """List runs with their status and timings."""
    import negdb

    with negdb.connect(obj["store"]) as cat:
        df = cat.sql("SELECT run_id, kind, model_id, revision, status, resumes, len(layers) AS layers, "
                     "started_at, updated_at, timings_json, message FROM runs ORDER BY started_at")
    _print(df)
