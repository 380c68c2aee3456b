"""``negdb merge`` and ``negdb export --results``: many stores, one catalog."""

from __future__ import annotations

import io
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

import negdb
from negdb.errors import StoreConflict, StoreError
from negdb.ingest import ingest
from negdb.query import neuron
from negdb.store.merge import export_results, merge
from tests.ingest_helpers import assert_one_error, cli, stats_frame, store_files
from tests.tiny_models import save_step_run

SMALL = dict(tokens=256, seq_len=32, md_pairs=50, progress=False, log=lambda _m: None)


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A: step0 and step1000; B: step1000 (again, by another worker) and step2000; serial: all three."""
    base = tmp_path_factory.mktemp("merge")
    run = save_step_run(base, steps=(0, 1000, 2000))
    out = {"run": run}
    for name, spec in (("a", "step0,step1000"), ("b", "step1000,step2000"), ("serial", "all")):
        ingest(model=str(run), checkpoints=spec, activations="all", store=base / name, **SMALL)
        out[name] = base / name
    return out


def test_merge_equals_one_store_and_is_idempotent(tmp_path: Path, stores: dict[str, Path]) -> None:
    dst = tmp_path / "merged"
    report = merge([stores["a"], stores["b"]], dst)
    assert report.conflicts == [] and report.copied
    # step1000 was ingested by both workers: its segments are duplicates, kept once
    assert any("revision=step1000" in n for n in report.duplicates)
    assert stats_frame(dst).equals(stats_frame(stores["serial"]))
    with negdb.connect(str(dst)) as cat, negdb.connect(str(stores["b"])) as ref:
        n = cat.sql("SELECT count(*) AS n FROM neuron_stats WHERE revision = 'step1000'")["n"][0]
        assert n == 192  # one segment per checkpoint, not two
        got = neuron.activations(cat, str(stores["run"]), "step2000", layer=1, neuron=3)
        want = neuron.activations(ref, str(stores["run"]), "step2000", layer=1, neuron=3)
    np.testing.assert_array_equal(got, want)
    before = store_files(dst)
    again = merge([stores["a"], stores["b"]], dst)
    assert again.copied == [] and again.conflicts == [] and store_files(dst) == before
    res = cli(dst, "merge", str(stores["a"]), str(stores["b"]))  # --into defaults to --store
    assert res.exit_code == 0 and "0 object(s) copied" in res.output, res.output
    assert store_files(dst) == before


def test_a_conflicting_segment_is_reported_and_not_overwritten(tmp_path: Path, stores: dict[str, Path]) -> None:
    other = tmp_path / "other"
    shutil.copytree(stores["b"], other)
    seg = next((other / "tables" / "checkpoints").glob("*.parquet"))
    table = pq.read_table(seg)
    table = table.set_column(table.column_names.index("location"), "location",
                             [["/elsewhere"] * table.num_rows])
    pq.write_table(table, seg)
    dst = tmp_path / "dst"
    merge([stores["b"]], dst)
    kept = (dst / seg.relative_to(other)).read_bytes()
    with pytest.raises(StoreConflict, match="1 conflict"):
        merge([other], dst)
    assert (dst / seg.relative_to(other)).read_bytes() == kept
    res = cli(tmp_path / "x", "merge", str(other), "--into", str(dst))
    assert_one_error(res, StoreConflict)


def test_export_results_is_everything_but_activations(tmp_path: Path, stores: dict[str, Path]) -> None:
    out = tmp_path / "bundle"
    res = cli(stores["a"], "export", "--results", str(out))
    assert res.exit_code == 0, res.output
    files = store_files(out)
    assert not any(f.startswith("acts/") or f.startswith("tables/activations/") for f in files)
    assert stats_frame(out).equals(stats_frame(stores["a"]))
    size = sum((out / f).stat().st_size for f in files if f.startswith("tables/"))
    whole = sum((stores["a"] / f).stat().st_size for f in store_files(stores["a"]) if f.startswith(("tables/", "acts/")))
    assert size < whole / 2  # the segments without the arrays (views files such as negdb.duckdb not counted)
    tgz = tmp_path / "bundle.tar.gz"
    export_results(stores["a"], tgz)
    with tarfile.open(tgz) as tar:
        names = tar.getnames()
        marker = tar.extractfile("bundle/negdb.json")
        assert marker is not None and b'"format"' in io.BytesIO(marker.read()).getvalue()
    assert not any("/acts/" in n for n in names)


def test_merge_refuses_a_folder_that_is_not_a_store(tmp_path: Path) -> None:
    (tmp_path / "nostore").mkdir()
    assert_one_error(cli(tmp_path / "x", "merge", str(tmp_path / "nostore"), "--into", str(tmp_path / "d")),
                     StoreError)
