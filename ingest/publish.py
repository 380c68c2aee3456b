"""Publishing a finished job: every step is idempotent, so an interrupted publish completes on re-run."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pyarrow as pa
import pyarrow.parquet as pq

from negdb.errors import StoreDamaged
from negdb.store.arrays import layer_name, open_group, verify_array
from negdb.store.faults import crash_point
from negdb.store.integrity import quarantine
from negdb.store.layout import StoreLayout, short_hash
from negdb.store.segments import disk_errors, fsync_dir, write_segment
from negdb.store.tables import ACTIVATIONS, CHECKPOINTS, MODELS, SLICES, STAT_SPECS, neuron_stats_table


@dataclass(frozen=True)
class JobKeys:
    """The catalog keys shared by every row a job publishes."""

    model_id: str
    revision: str
    slice_id: str
    spec_id: str
    run_id: str
    job_key: str


def publish_metadata(layout: StoreLayout, *, model: dict, checkpoint: dict, slice_row: dict, spec: dict) -> None:
    """One segment per model, checkpoint, slice and spec; the first writer wins, later ones are no-ops."""
    for table, row, key in (
        (MODELS, model, (model["model_id"],)),
        (CHECKPOINTS, checkpoint, (checkpoint["model_id"], checkpoint["revision"])),
        (SLICES, slice_row, (slice_row["slice_id"],)),
        (STAT_SPECS, spec, (spec["spec_id"],)),
    ):
        path = layout.table_dir(table.name) / f"{short_hash(*key)}.parquet"
        if not path.exists():
            write_segment(path, table.from_rows([row]))


def _move(layout: StoreLayout, src: Path, dst: Path) -> bool:
    """Rename a complete array folder into the permanent group (write-then-publish).

    An array already there (another job's of the same slice) is kept when it is whole; a damaged one is moved
    to the store's quarantine and replaced by this job's. The spooled array is checked before it is published:
    a missing or damaged file stops the publish (:class:`StoreDamaged`), nothing half-written is published.
    """
    if not src.exists():
        return False
    if dst.exists():
        try:
            verify_array(dst, full=False)
            return False
        except StoreDamaged:
            quarantine(layout, dst)
    verify_array(src, full=False)
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.rename(src, dst)
    fsync_dir(dst.parent)
    return True


def publish_activations(layout: StoreLayout, keys: JobKeys, spool: Path, keep: list[int], md_key: str,
                        *, n_tokens: int, d_mlp: int, dtype: str) -> None:
    """Move kept layer arrays (and their md inputs) from the spool into the store; record them."""
    if not keep:
        return
    target = layout.acts_group(keys.model_id, keys.revision, keys.slice_id)
    with disk_errors(target):
        group = open_group(target)
        for sub in ("preact", "md", f"md/{md_key}"):
            group.require_group(sub)
        for name in ("token_ids", "window", "position"):
            _move(layout, spool / name, target / name)
        _move(layout, spool / "md" / md_key / "pairs", target / "md" / md_key / "pairs")
        rows = []
        for layer in keep:
            _move(layout, spool / "preact" / layer_name(layer), target / "preact" / layer_name(layer))
            _move(layout, spool / "md" / md_key / layer_name(layer), target / "md" / md_key / layer_name(layer))
            rows.append({"model_id": keys.model_id, "revision": keys.revision, "slice_id": keys.slice_id,
                         "layer": layer, "dtype": dtype, "n_tokens": n_tokens, "d_mlp": d_mlp,
                         "run_id": keys.run_id,
                         "array_path": str((target / "preact" / layer_name(layer)).relative_to(layout.root))})
    crash_point("publish.after_arrays")
    write_segment(layout.table_dir("activations") / f"{keys.job_key}.parquet", ACTIVATIONS.from_rows(rows))
    crash_point("publish.after_activations")


def stats_segment_path(layout: StoreLayout, keys: JobKeys) -> Path:
    """``neuron_stats/model_id=<m>/revision=<r>/<job>.parquet``: DuckDB skips other checkpoints' files unopened."""
    return (layout.table_dir("neuron_stats") / f"model_id={quote(keys.model_id, safe='')}"
            / f"revision={quote(keys.revision, safe='')}" / f"{keys.job_key}.parquet")


def publish_stats(layout: StoreLayout, keys: JobKeys, layer_files: dict[int, Path]) -> None:
    """Concatenate the job's per-layer statistics into one neuron_stats segment (the scan encoding:
    :func:`negdb.store.segments.write_parquet`)."""
    path = stats_segment_path(layout, keys)
    if path.exists() or not layer_files:
        return
    table_def = neuron_stats_table()
    parts = []
    for layer, file in sorted(layer_files.items()):
        t = pq.read_table(file)
        n = t.num_rows
        const = {"model_id": keys.model_id, "revision": keys.revision, "slice_id": keys.slice_id,
                 "spec_id": keys.spec_id, "layer": layer, "run_id": keys.run_id}
        cols = {}
        for name, typ, _ in table_def.columns:
            cols[name] = t.column(name).cast(typ) if name in t.column_names else pa.array([const[name]] * n, typ)
        parts.append(pa.table(cols, schema=table_def.schema))
    write_segment(path, pa.concat_tables(parts), scan=True)
