"""The scan encoding of ``neuron_stats`` segments (:func:`negdb.store.segments.write_parquet`): lossless, what its
footers say, and read together with segments of the older encoding (ZSTD, one row group per layer)."""

from __future__ import annotations

import os
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from negdb.store import segments
from negdb.store.catalog import Catalog
from negdb.store.integrity import check, repair
from negdb.store.layout import StoreLayout
from negdb.store.segments import layer_groups, write_segment
from negdb.store.tables import neuron_stats_table

WIDTH = 64


def encoding_problems(path: Path, max_rows: int | None = None) -> list[str]:
    """What in the footer of ``path`` differs from the scan encoding (empty: it is scan-encoded)."""
    meta = pq.ParquetFile(path).metadata
    cap = max_rows or segments.SCAN_GROUP_ROWS
    problems = []
    names = meta.schema.names
    layer_col = names.index("layer")
    for g in range(meta.num_row_groups):
        rg = meta.row_group(g)
        lo, hi = rg.column(layer_col).statistics.min, rg.column(layer_col).statistics.max
        layers = pq.read_table(path, columns=["layer"]).slice(
            sum(meta.row_group(i).num_rows for i in range(g)), rg.num_rows).column("layer").to_numpy()
        if sorted(set(layers.tolist())) != list(range(lo, hi + 1)):
            problems.append(f"row group {g} holds layers {sorted(set(layers.tolist()))}, footer says {lo}..{hi}")
        if rg.num_rows > cap and lo != hi:
            problems.append(f"row group {g} has {rg.num_rows} rows over {cap}")
    for column, kind, compression, encodings in duckdb.execute(
            "SELECT path_in_schema, type, compression, encodings FROM parquet_metadata(?)", [str(path)]).fetchall():
        if compression != "LZ4_RAW":  # as DuckDB, the reader that scans it, names it
            problems.append(f"{column}: {compression}")
        if kind == "DOUBLE" and "DICTIONARY" in encodings:
            problems.append(f"{column}: dictionary-encoded double")
    return problems


def same(a: pa.Table, b: pa.Table) -> bool:
    """Whether ``a`` and ``b`` hold the same values bit for bit (NaN equal to NaN, -0.0 not equal to 0.0)."""
    if a.schema != b.schema or a.num_rows != b.num_rows:
        return False
    for x, y in zip(a.columns, b.columns):
        x, y = x.combine_chunks(), y.combine_chunks()
        if not x.is_null().equals(y.is_null()):
            return False
        if pa.types.is_floating(x.type):
            bits = [np.asarray(v.fill_null(0.0).to_numpy()).view(np.uint64) for v in (x, y)]
            if not np.array_equal(*bits):
                return False
        elif not x.equals(y):
            return False
    return True


def stats_rows(rng: np.random.Generator, revision: str, layers: list[int], width: int = WIDTH) -> pa.Table:
    """neuron_stats rows of ``layers`` (in (layer, neuron) order), with NaN, infinities, -0.0 and NULLs among the
    statistics."""
    n = len(layers) * width
    cols = {}
    for name, typ, _ in neuron_stats_table().columns:
        if name == "layer":
            cols[name] = pa.array(np.repeat(layers, width), typ)
        elif name == "neuron":
            cols[name] = pa.array(np.tile(np.arange(width), len(layers)), typ)
        elif name in ("model_id", "slice_id", "spec_id", "run_id"):
            cols[name] = pa.array([name[0]] * n, typ)
        elif name == "revision":
            cols[name] = pa.array([revision] * n, typ)
        elif pa.types.is_floating(typ):
            v = rng.standard_normal(n)
            v[rng.random(n) < 0.02] = np.nan
            v[:4] = [np.inf, -np.inf, -0.0, 0.0]
            cols[name] = pa.array(v, typ, mask=rng.random(n) < 0.02)
        else:
            cols[name] = pa.array(rng.integers(0, 10_000, n), typ)
    return pa.table(cols, schema=neuron_stats_table().schema)


@pytest.mark.parametrize(("layers", "cap", "expected"), [
    ([0, 0, 1, 1, 2, 2], 4, [(0, 4), (4, 2)]),
    ([0, 0, 1, 1, 2, 2], 6, [(0, 6)]),
    ([0, 0, 1, 1, 3, 3], 100, [(0, 4), (4, 2)]),  # a gap starts a new group
    ([0] * 5 + [1], 4, [(0, 5), (5, 1)]),  # one layer over the cap is a group of its own
    ([2, 2, 1, 1], 100, [(0, 2), (2, 2)]),  # descending layers are not a run
    ([], 4, []),
])
def test_layer_groups(layers: list[int], cap: int, expected: list[tuple[int, int]]) -> None:
    assert layer_groups(pa.array(layers, pa.int32()), max_rows=cap) == expected


def test_scan_encoding_is_lossless_and_its_footer_says_what_it_holds(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(segments, "SCAN_GROUP_ROWS", 3 * WIDTH)
    table = stats_rows(np.random.default_rng(0), "step1", [0, 1, 2, 3, 4, 6, 7])
    path = tmp_path / "s.parquet"
    assert write_segment(path, table, scan=True)
    back = pq.read_table(path)
    assert same(back, table)  # NaN, inf, -0.0 and NULL as written
    assert pq.ParquetFile(path).metadata.num_row_groups == 3  # layers [0-2] [3-4] [6-7]: 3 at most, no gap
    assert encoding_problems(path, 3 * WIDTH) == []
    old = tmp_path / "old.parquet"
    write_segment(old, table, row_group_size=WIDTH)  # the older encoding, as a check of the check
    assert any("ZSTD" in p for p in encoding_problems(old))


def _stats_path(layout: StoreLayout, revision: str, name: str) -> Path:
    return layout.table_dir("neuron_stats") / "model_id=m" / f"revision={revision}" / f"{name}.parquet"


def test_old_and_new_segments_read_together_and_repeated_layers_are_found_in_both(tmp_path: Path) -> None:
    """A store written partly before the scan encoding: one checkpoint in the older encoding, one in the new,
    a third whose layers 1-2 are held twice (older encoding first, then a new segment of layers 1, 2 and 4: a
    row group that spanned the gap would claim layer 3 too).
    The views show every row once, exactly the rows written; check and repair name and remove the repeats."""
    rng = np.random.default_rng(1)
    layout = StoreLayout(tmp_path / "store").init()
    old = stats_rows(rng, "step1", [0, 1, 2, 3])
    new = stats_rows(rng, "step2", [0, 1, 2, 3])
    first = stats_rows(rng, "step3", [0, 1, 2, 3])
    again = stats_rows(rng, "step3", [1, 2, 4])  # 1 and 2 repeat the older segment's, 4 is new, 3 is not repeated
    write_segment(_stats_path(layout, "step1", "a"), old, row_group_size=WIDTH)
    write_segment(_stats_path(layout, "step2", "b"), new, scan=True)
    write_segment(_stats_path(layout, "step3", "c"), first, row_group_size=WIDTH)
    later = _stats_path(layout, "step3", "d")
    write_segment(later, again, scan=True)
    os.utime(later, ns=(os.stat(later).st_mtime_ns + 10**9,) * 2)  # written after the older one
    keep = again.filter(pc.equal(again.column("layer"), 4))
    expected = pa.concat_tables([old, new, first, keep])
    key = "revision, layer, neuron"
    with Catalog(layout.root, use_manifest=False) as cat:
        got = cat.arrow(f"SELECT * FROM neuron_stats ORDER BY {key}")
        user = cat.query(f"SELECT * FROM neuron_stats ORDER BY {key}").table
    want = expected.sort_by([(c, "ascending") for c in ("revision", "layer", "neuron")])
    assert same(got, want) and same(user, want)
    report = check(layout.root)
    dup = [p for p in report.problems if p.kind == "duplicate-layers"]
    assert [(p.path.name, p.layers) for p in dup] == [("d.parquet", [1, 2])], report.problems
    repair(layout.root)
    assert check(layout.root).ok
    assert same(pq.read_table(later), keep) and encoding_problems(later) == []
    with Catalog(layout.root, use_manifest=False) as cat:
        assert same(cat.arrow(f"SELECT * FROM neuron_stats ORDER BY {key}"), want)


def test_ingest_publishes_scan_encoded_statistics(tmp_path: Path) -> None:
    """What ``negdb ingest`` publishes is scan-encoded (three layers of a tiny model: one row group)."""
    from tests.ingest_helpers import TINY, cli
    from tests.tiny_models import save_tiny

    model = save_tiny(tmp_path / "neox", "gpt_neox", seed=3)
    store = tmp_path / "store"
    res = cli(store, "ingest", "--model", str(model), *TINY)
    assert res.exit_code == 0, res.output
    (seg,) = (store / "tables" / "neuron_stats").rglob("*.parquet")
    assert encoding_problems(seg) == []
    assert pq.ParquetFile(seg).metadata.num_row_groups == 1
