"""``negdb sql`` (one read-only SELECT over the catalog) and ``negdb schema`` (its views and columns)."""

from __future__ import annotations

import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any

import click
import pyarrow as pa

from negdb.errors import BadArgument, NotFound, StoreError
from negdb.query.encode import column_values, ordinary_times, table_records, unique_names

FORMATS = ("table", "csv", "json", "parquet")


# ------------------------------------------------------------------------------------------ value conversion

def _json_text(table: pa.Table) -> str:
    """An array of row objects, with the values ``POST /sql`` answers (:mod:`negdb.query.encode`)."""
    return json.dumps(table_records(table), ensure_ascii=False, allow_nan=False) + "\n"


def _plain(col: pa.ChunkedArray) -> bool:
    """Columns polars prints and writes to CSV as they are."""
    t = pa.types
    typ = col.type
    if t.is_dictionary(typ):
        return _plain(col.cast(typ.value_type))
    if t.is_date(typ) or t.is_timestamp(typ):
        return ordinary_times(col)  # polars cannot hold DuckDB's infinite or far dates
    return (t.is_integer(typ) or t.is_floating(typ) or t.is_boolean(typ) or t.is_string(typ)
            or t.is_large_string(typ) or t.is_date(typ) or t.is_timestamp(typ) or t.is_decimal(typ)
            or t.is_time(typ) or t.is_null(typ) or (hasattr(t, "is_string_view") and t.is_string_view(typ)))


def _cell(value: Any) -> str | None:
    """One JSON value as text: strings as they are, everything else as JSON."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, allow_nan=False)


def _flat(table: pa.Table) -> pa.Table:
    """Every column that is not a plain scalar type (lists, structs, maps, intervals, bytes) as JSON text."""
    for i, field in enumerate(table.schema):
        if not _plain(table.column(i)):
            texts = [_cell(v) for v in column_values(table.column(i))]
            table = table.set_column(i, pa.field(field.name, pa.string()), pa.array(texts, pa.string()))
    return table


def _frame(table: pa.Table):
    import polars as pl

    return pl.from_arrow(_flat(unique_names(table)))


def _table_text(table: pa.Table) -> str:
    import polars as pl

    df = _frame(table)
    with pl.Config(tbl_rows=-1, tbl_cols=-1, tbl_width_chars=10_000, fmt_str_lengths=200,
                   tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True):
        return str(df) + "\n"


def _csv_text(table: pa.Table) -> str:
    return _frame(table).write_csv()


# ------------------------------------------------------------------------------------------ output

def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def _write_out(out: Path, fmt: str, table: pa.Table, text: str | None) -> None:
    """Write to ``out`` atomically (a temporary file in the same folder, then renamed)."""
    if not out.parent.is_dir():
        raise BadArgument(f"--out {out}: the folder {out.parent} does not exist: create it or pick another path")
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex}.partial")
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            pq.write_table(table, tmp, compression="zstd")
        else:
            tmp.write_text(text or "", encoding="utf-8")
        os.replace(tmp, out)
    except OSError as err:
        raise BadArgument(f"cannot write --out {out}: {err.strerror or err}: pick another path") from err
    finally:
        tmp.unlink(missing_ok=True)


def render(table: pa.Table, fmt: str) -> str:
    """The text form of a result: ``table`` (aligned), ``csv`` or ``json`` (an array of row objects)."""
    if fmt == "table":
        return _table_text(table)
    if fmt == "csv":
        return _csv_text(table)
    if fmt == "json":
        return _json_text(table)
    raise BadArgument(f"--format {fmt} has no text form: use --out FILE")  # pragma: no cover


@click.command("sql")
@click.argument("query")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True,
              help="Output: aligned table, CSV, JSON (array of rows) or Parquet (needs --out).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the result to this file instead of standard output.")
@click.option("--max-rows", type=click.IntRange(min=1), default=10_000, show_default=True,
              help="Return at most this many rows (a note on stderr says when there were more).")
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=0, min_open=True), default=30.0,
              show_default=True, help="Stop the query after this many seconds.")
@click.pass_obj
def sql(obj: dict, query: str, fmt: str, out: Path | None, max_rows: int, timeout_s: float) -> None:
    """Run one read-only SELECT (or WITH ... SELECT) over the catalog views; QUERY '-' reads it from stdin.

    \b
    negdb sql "SELECT layer, count(*) FROM neurons WHERE w_dist > 0.9 GROUP BY 1 ORDER BY 1"
    negdb sql "SELECT * FROM neurons" --format parquet --out neurons.parquet --max-rows 1000000
    negdb schema    # the views and their columns
    """
    import negdb

    if query == "-":
        query = sys.stdin.read()
    if fmt == "parquet" and out is None:
        raise BadArgument("--format parquet writes a binary file: add --out FILE.parquet")
    from negdb.store.objects import is_url, objects_for

    remote = is_url(obj["store"])
    store = obj["store"] if remote else Path(obj["store"])
    if out is not None and not remote and _inside(out, store):
        raise BadArgument(f"--out {out} is inside the store {store}: write results outside the store folder")
    if not (objects_for(store).exists("negdb.json") if remote else Path(store).is_dir()):
        raise StoreError(f"no store at {store}: run `negdb ingest` first or pass --store")
    with negdb.connect(str(store)) as cat:
        res = cat.query(query, max_rows=max_rows, timeout_s=timeout_s)
    text = None if fmt == "parquet" else render(res.table, fmt)
    if out is not None:
        _write_out(out, fmt, res.table, text)
    else:
        click.echo(text, nl=False)
    if res.truncated:
        click.echo(f"note: the result has more than {max_rows:,} rows; showing the first {max_rows:,}: add a "
                   "LIMIT/WHERE or raise --max-rows", err=True)


@click.command("schema")
@click.argument("views", nargs=-1)
@click.pass_obj
def schema(obj: dict, views: tuple[str, ...]) -> None:
    """Print every view of the catalog (or only VIEWS) with its columns, types and one-line meanings."""
    import negdb

    with negdb.connect(obj["store"]) as cat:
        rows = cat.describe()
        docs = cat.view_docs()
    known = list(dict.fromkeys(r[0] for r in rows))
    unknown = [v for v in views if v not in known]
    if unknown:
        raise NotFound(f"unknown view {unknown[0]!r}: the views are {', '.join(known)}")
    wanted = [v for v in known if not views or v in views]
    for k, view in enumerate(wanted):
        cols = [r for r in rows if r[0] == view]
        w_name = max(len(r[1]) for r in cols)
        w_type = max(len(r[2]) for r in cols)
        if k:
            click.echo("")
        click.echo(f"{view}: {docs.get(view, '')}")
        for _, column, typ, meaning in cols:
            click.echo(f"  {column:<{w_name}}  {typ:<{w_type}}  {meaning}".rstrip())
