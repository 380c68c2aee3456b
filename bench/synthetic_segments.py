"""Many catalog segments fast: what ``--jobs`` ingest jobs publish, without ingesting anything.

    .venv/bin/python bench/synthetic_segments.py --out /tmp/seg-store --jobs 2500      # 10,000 segments

One ingest job publishes four segments (docs/STORE.md): a ``checkpoints`` row, an ``activations`` segment (one row
per layer), a ``neuron_stats`` segment under ``model_id=/revision=`` folders (one row group per layer) and its
``runs`` record. This writes them for ``--jobs`` checkpoints of one model (plus one ``models``, ``slices`` and
``stat_specs`` row), every segment through :func:`negdb.store.segments.write_segment` (the publishing function of
a store folder); :func:`upload` copies a folder's segments to an object store with conditional PUTs
(:meth:`negdb.store.objects.FsspecObjects.put_new`, as ``negdb merge`` does), many at once. Values are seeded and
meaningless; only the files matter.
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from negdb.store.layout import StoreLayout  # noqa: E402
from negdb.store.segments import write_segment  # noqa: E402
from negdb.store.tables import (ACTIVATIONS, CHECKPOINTS, MODELS, RUNS, SLICES, STAT_SPECS,  # noqa: E402
                                Table, neuron_stats_table)

MODEL = "synth-model"
LAYERS, WIDTH = 4, 64
NOW = datetime(2026, 12, 6, tzinfo=timezone.utc)


def rows_of(table: Table, n: int, rng: np.random.Generator, **fixed: object) -> pa.Table:
    """``n`` rows of ``table`` with seeded values; ``fixed`` columns take the given value (a list: one per row)."""
    arrays = []
    for name, typ, _ in table.columns:
        if name in fixed:
            value = fixed[name]
            arrays.append(pa.array(value if isinstance(value, list) else [value] * n, type=typ))
        elif pa.types.is_floating(typ):
            arrays.append(pa.array(rng.random(n), type=typ))
        elif pa.types.is_integer(typ):
            arrays.append(pa.array(rng.integers(0, 100, n), type=typ))
        elif pa.types.is_string(typ):
            arrays.append(pa.array([f"{name}-{i}" for i in range(n)], type=typ))
        elif pa.types.is_timestamp(typ):
            arrays.append(pa.array([NOW] * n, type=typ))
        else:
            arrays.append(pa.nulls(n, type=typ))
    return pa.Table.from_arrays(arrays, schema=table.schema)


def job_segments(layout: StoreLayout, i: int, rng: np.random.Generator) -> list[Path]:
    """Publish the four segments of synthetic ingest job ``i`` (checkpoint ``step<i>``); returns their paths."""
    revision, job = f"step{i}", f"job{i:06d}"
    keys = dict(model_id=MODEL, revision=revision)
    n = LAYERS * WIDTH
    stats = rows_of(neuron_stats_table(), n, rng, **keys, slice_id="s0", spec_id="p0", run_id=job,
                    layer=np.repeat(np.arange(LAYERS), WIDTH).tolist(), neuron=np.tile(np.arange(WIDTH), LAYERS).tolist())
    folder = layout.table_dir("neuron_stats") / f"model_id={quote(MODEL, safe='')}" / f"revision={revision}"
    out = [layout.table_dir("checkpoints") / f"{job}.parquet", layout.table_dir("activations") / f"{job}.parquet",
           folder / f"{job}.parquet", layout.table_dir("runs") / f"{job}.parquet"]
    write_segment(out[0], rows_of(CHECKPOINTS, 1, rng, **keys, step=i))
    write_segment(out[1], rows_of(ACTIVATIONS, LAYERS, rng, **keys, slice_id="s0", layer=list(range(LAYERS)),
                                  run_id=job))
    write_segment(out[2], stats, scan=True)
    write_segment(out[3], rows_of(RUNS, 1, rng, **keys, run_id=job, kind="ingest", status="done", slice_id="s0",
                                  spec_id="p0", layers=[list(range(LAYERS))]), exclusive=False)
    return out


def write_store(root: Path, jobs: int, *, start: int = 0, seed: int = 0) -> StoreLayout:
    """A store folder with ``jobs`` synthetic ingest jobs (4 segments each) and the one-row tables."""
    layout = StoreLayout(root).init()
    rng = np.random.default_rng(seed)
    if start == 0:
        write_segment(layout.table_dir("models") / "m.parquet", rows_of(MODELS, 1, rng, model_id=MODEL))
        write_segment(layout.table_dir("slices") / "s.parquet", rows_of(SLICES, 1, rng, slice_id="s0"))
        write_segment(layout.table_dir("stat_specs") / "p.parquet", rows_of(STAT_SPECS, 1, rng, spec_id="p0"))
    for i in range(start, start + jobs):
        job_segments(layout, i, rng)
    return layout


def upload(root: Path, objects, *, threads: int = 16) -> int:  # type: ignore[no-untyped-def]
    """Copy the marker and every segment of store folder ``root`` into ``objects`` (an object store) with
    conditional PUTs, ``threads`` at once; returns the number of objects created."""
    names = ["negdb.json", *(str(p.relative_to(root)) for p in sorted((root / "tables").rglob("*.parquet"))
                             if not p.name.startswith("."))]
    with ThreadPoolExecutor(threads) as pool:
        return sum(pool.map(lambda n: objects.put_new(n, (root / n).read_bytes()), names))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--jobs", type=int, default=2500)
    args = ap.parse_args()
    t0 = time.perf_counter()
    write_store(args.out, args.jobs)
    print(f"{4 * args.jobs + 3} segments in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
