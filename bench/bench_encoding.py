"""How the Parquet encoding of ``neuron_stats`` segments changes the cost of the browser's scans (issue 17).

    .venv/bin/python bench/synthetic_catalog.py --out /tmp/negdb-synth --layout partitioned   # once, ~1 min
    .venv/bin/python bench/bench_encoding.py --store /tmp/negdb-synth [--checkpoints 154] [--repeat 5]

Reads the store's ``neuron_stats`` rows checkpoint by checkpoint and writes them again in each encoding below
(into ``--work``, removed afterwards), then times, in one DuckDB with as many threads as cores, the statements the
browser runs across every checkpoint and for one neuron, over each encoding in turn (median of ``--repeat`` runs
after a first one; the files are in the page cache by then):

- ``before``: what negdb wrote until 2026-12-06: ZSTD, pyarrow's default dictionaries (which a column of
  doubles overflows, falling back to plain pages), one row group per layer;
- ``zstd-runs``: ZSTD, dictionaries for the text keys only, row groups of whole consecutive layers;
- ``lz4-layer``: LZ4, dictionaries for the text keys only, one row group per layer;
- ``scan``: what negdb writes now (:func:`negdb.store.segments.write_parquet` with ``scan=True``): LZ4,
  dictionaries for the text keys only, row groups of whole consecutive layers (up to 131,072 rows);
- ``plain-runs``: no compression, otherwise as ``scan``.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from negdb.store.segments import layer_groups, write_parquet

ENCODINGS = ("before", "zstd-runs", "lz4-layer", "scan", "plain-runs")

QUERIES = {
    "search, all checkpoints: w_pct > 99.9 by w_dist (top 51)":
        "SELECT model_id, revision, layer, neuron, w_dist, w_pct FROM t WHERE model_id = $m AND w_pct > 99.9 "
        "ORDER BY w_dist DESC NULLS LAST, revision, layer, neuron LIMIT 51",
    "the count of w_pct > 99.9": "SELECT count(*) FROM t WHERE model_id = $m AND w_pct > 99.9",
    "search, all checkpoints: frac_neg > 0.9 by md (top 51)":
        "SELECT model_id, revision, layer, neuron, w_dist, w_pct, frac_neg, md FROM t WHERE model_id = $m AND "
        "frac_neg > 0.9 ORDER BY md DESC NULLS LAST, revision, layer, neuron LIMIT 51",
    "the count of frac_neg > 0.9": "SELECT count(*) FROM t WHERE model_id = $m AND frac_neg > 0.9",
    "one neuron's w_dist at every checkpoint":
        "SELECT revision, w_dist, w_dist_neg, w_dist_pos, w_pct FROM t WHERE model_id = $m AND layer = 7 AND "
        "neuron = 1234",
    "one neuron at one checkpoint (every column)":
        "SELECT * FROM t WHERE model_id = $m AND revision = $r AND layer = 7 AND neuron = 1234",
}


def write(table: pa.Table, path: Path, encoding: str) -> None:
    texts = [f.name for f in table.schema if pa.types.is_string(f.type)]
    per_layer = [n for _, n in layer_groups(table.column("layer"), max_rows=1)]
    if encoding == "before":
        pq.write_table(table, path, compression="zstd", row_group_size=max(per_layer))
    elif encoding == "scan":
        write_parquet(path, table, scan=True)
    else:
        compression = {"zstd-runs": "zstd", "lz4-layer": "lz4", "plain-runs": "none"}[encoding]
        groups = layer_groups(table.column("layer")) if encoding != "lz4-layer" else \
            [(sum(per_layer[:i]), n) for i, n in enumerate(per_layer)]
        with pq.ParquetWriter(path, table.schema, compression=compression, use_dictionary=texts) as w:
            for off, n in groups:
                w.write_table(table.slice(off, n), row_group_size=n)


def timed(con: duckdb.DuckDBPyConnection, sql: str, params: dict, repeat: int) -> float:
    times = []
    for _ in range(repeat + 1):
        t0 = time.perf_counter()
        con.execute(sql, params).fetchall()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times[1:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", type=Path, default=Path("/tmp/negdb-synth"))
    ap.add_argument("--checkpoints", type=int, default=None, help="only the first N checkpoints' segments")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--work", type=Path, default=None, help="folder for the rewritten segments (default: a temp)")
    args = ap.parse_args()
    files = sorted(glob.glob(str(args.store / "tables" / "neuron_stats" / "**" / "*.parquet"), recursive=True))
    if not files:
        raise SystemExit(f"no neuron_stats segments under {args.store}: bench/synthetic_catalog.py writes a store")
    files = files[:args.checkpoints] if args.checkpoints else files
    work = Path(tempfile.mkdtemp(prefix="negdb-encoding-", dir=args.work))
    cores = os.cpu_count() or 1
    try:
        rows = 0
        for i, f in enumerate(files):
            table = pq.read_table(f)
            rows += table.num_rows
            for enc in ENCODINGS:
                (work / enc).mkdir(exist_ok=True)
                write(table, work / enc / f"{i:04d}.parquet", enc)
        first = pq.read_table(files[-1], columns=["model_id", "revision"]).slice(0, 1).to_pylist()[0]
        params = {"m": first["model_id"], "r": first["revision"]}
        cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
        print(f"{rows:,} rows in {len(files)} segments; {cpu}, {cores} cores; load {os.getloadavg()[0]:.1f}; "
              f"DuckDB {duckdb.__version__}; median of {args.repeat} (ms)")
        results: dict[str, dict[str, float]] = {}
        sizes = {}
        for enc in ENCODINGS:
            con = duckdb.connect()
            con.execute(f"SET threads = {cores}")
            con.execute(f"CREATE VIEW t AS SELECT * FROM read_parquet('{work / enc}/*.parquet')")
            sizes[enc] = sum(p.stat().st_size for p in (work / enc).iterdir())
            results[enc] = {}
            for name, sql in QUERIES.items():
                results[enc][name] = timed(con, sql, {k: v for k, v in params.items() if f"${k}" in sql},
                                           args.repeat)
            con.close()
        print("| statement | " + " | ".join(ENCODINGS) + " |")
        print("| --- | " + " | ".join("---:" for _ in ENCODINGS) + " |")
        for name in QUERIES:
            base = results["before"][name]
            print(f"| {name} | " + " | ".join(
                f"{results[e][name]:.0f}" + ("" if e == "before" else f" ({base / results[e][name]:.1f}x)")
                for e in ENCODINGS) + " |")
        print("| bytes | " + " | ".join(f"{sizes[e] / 1e9:.2f} GB" for e in ENCODINGS) + " |")
        print(f"load {os.getloadavg()[0]:.1f} at the end")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
