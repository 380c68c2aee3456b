"""A store on S3 (SeaweedFS on 127.0.0.1, as the tests start it) against a store folder, side by side.

    .venv/bin/python bench/bench_s3.py --tokens 16384 --segments 10000
    .venv/bin/python bench/bench_s3.py --catalog-only --sizes 300,1000,10000 --baseline main

(1) Ingest: the same tiny GPT-NeoX (tests/tiny_models.py) into a folder store and into ``s3://bench/<id>`` (the local staging ingest plus the publication with
conditional PUTs); tokens/s and the ratio. (2) Query: open a catalog and run one aggregate over ``neurons``, median
of ``--repeat``. (3) Catalog refresh at ``--segments`` segments: that many one-row ``runs`` segments (copies of
the ingest's run record under new names) in both stores; the time to open a catalog (list and read every
segment), a refresh when nothing changed, and a refresh after one more segment. The server and its data are
removed at the end; nothing leaves 127.0.0.1.

(4) ``--sizes``: opening a catalog at each number of segments of a realistic mix (what ingest jobs publish, four
segments per checkpoint: bench/synthetic_segments.py, written through the store's publishing functions and
uploaded with conditional PUTs), in both stores: with the catalog manifest (store/manifest.py; opened once to
publish it, then timed), without it (``use_manifest=False``: every footer and small segment read), and, with
``--baseline COMMIT``, that commit's ``store/catalog.py`` (run in a subprocess, stopped after ``--baseline-timeout``
seconds); then a refresh when nothing changed and one after one more ingest job (4 segments). ``--catalog-only``
skips (1)-(3).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

QUERY = "SELECT layer, avg(w_dist) AS w, count(*) AS n FROM neurons GROUP BY layer ORDER BY layer"


def _median(fn, repeat: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=16384)
    ap.add_argument("--segments", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--sizes", default="", help="catalog open at these segment counts, e.g. 300,1000,10000")
    ap.add_argument("--baseline", default="", help="a commit whose store/catalog.py to time side by side")
    ap.add_argument("--baseline-timeout", type=float, default=900.0)
    ap.add_argument("--catalog-only", action="store_true")
    ap.add_argument("--measure", nargs=3, help=argparse.SUPPRESS)  # internal: CATALOG_PY|- MANIFEST(0|1) ROOT
    args = ap.parse_args()
    if args.measure:
        print(json.dumps(_measure_module(*args.measure)))
        return
    if args.catalog_only:
        _catalog_sizes(args)
        return

    import s3fs

    from negdb.ingest import ingest
    from negdb.ingest.plan import IngestSpec
    from negdb.store.catalog import Catalog
    from negdb.store.objects import FsspecObjects
    from tests.s3_server import s3_env, seaweedfs
    from tests.tiny_models import save_tiny

    quiet = dict(progress=False, log=lambda _m: None)
    with tempfile.TemporaryDirectory() as tmp, seaweedfs(Path(tmp) / "weed") as endpoint:
        os.environ.update(s3_env(endpoint))
        os.environ["NEGDB_CACHE"] = str(Path(tmp) / "cache")
        s3fs.S3FileSystem.clear_instance_cache()
        s3fs.S3FileSystem().mkdir("bench")
        url = f"s3://bench/{uuid.uuid4().hex[:8]}"
        folder = Path(tmp) / "store"
        model = save_tiny(Path(tmp) / "neox", "gpt_neox", seed=0)
        spec = IngestSpec(str(model), tokens=args.tokens, seq_len=128, md_pairs=1000)

        t0 = time.perf_counter()
        ingest(spec, store=folder, **quiet)
        t_local = time.perf_counter() - t0
        t0 = time.perf_counter()
        ingest(spec, store=url, **quiet)
        t_s3 = time.perf_counter() - t0

        def query(root: str) -> None:
            with Catalog(root) as cat:
                cat.query(QUERY)

        q_local = _median(lambda: query(str(folder)), args.repeat)
        q_s3 = _median(lambda: query(url), args.repeat)

        # --segments run records in both stores (not timed)
        runs = sorted((folder / "tables" / "runs").glob("*.parquet"))
        data = runs[0].read_bytes()
        names = [f"tables/runs/bench-{i:06d}.parquet" for i in range(args.segments)]
        for n in names:
            (folder / n).write_bytes(data)
        objects = FsspecObjects(url)
        for i in range(0, len(names), 500):
            objects.fs.pipe({objects.full(n): data for n in names[i:i + 500]})

        def refresh_times(root: str, add) -> tuple[float, float, float]:  # type: ignore[no-untyped-def]
            t0 = time.perf_counter()
            cat = Catalog(root)
            opened = time.perf_counter() - t0
            try:
                same = _median(cat.refresh, args.repeat)
                add()
                t0 = time.perf_counter()
                cat.refresh()
                one = time.perf_counter() - t0
                assert cat.sql("SELECT count(*) AS n FROM runs")["n"][0] == args.segments + len(runs) + 1
            finally:
                cat.close()
            return opened, same, one

        r_local = refresh_times(str(folder), lambda: (folder / "tables/runs/bench-extra.parquet").write_bytes(data))
        r_s3 = refresh_times(url, lambda: objects.put_new("tables/runs/bench-extra.parquet", data))
        s3fs.S3FileSystem.clear_instance_cache()

    def row(what: str, a: float, b: float, unit: str = "s") -> str:
        return f"| {what} | {a:.2f} {unit} | {b:.2f} {unit} | {b / a:.2f}x |"

    n_tok = (args.tokens // 128) * 128
    print("| work | folder store | S3 store (SeaweedFS, 127.0.0.1) | ratio |")
    print("| --- | ---: | ---: | ---: |")
    print(row(f"ingest {n_tok:,} tokens (tiny GPT-NeoX, 3 layers x 64 neurons, activations kept)", t_local, t_s3))
    print(f"| ingest throughput | {n_tok / t_local:,.0f} tok/s | {n_tok / t_s3:,.0f} tok/s | "
          f"{t_local / t_s3:.2f}x |")
    print(row("open a catalog + one aggregate over `neurons`", q_local, q_s3))
    print(row(f"open a catalog at {args.segments:,} `runs` segments", r_local[0], r_s3[0]))
    print(row(f"refresh at {args.segments:,} segments, nothing changed", r_local[1], r_s3[1]))
    print(row(f"refresh at {args.segments:,} segments, one added", r_local[2], r_s3[2]))


def _load_catalog(path: str):  # type: ignore[no-untyped-def]
    import importlib.util

    spec = importlib.util.spec_from_file_location("negdb.store._baseline_catalog", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[spec.name] = module  # type: ignore[union-attr]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module.Catalog


def _measure_module(catalog_py: str, use_manifest: str, root: str) -> dict:
    """Open, refresh (nothing changed) and count with the Catalog of ``catalog_py`` (the baseline commit's; ``-``:
    this tree's, with or without its manifest), in a fresh process (each variant pays the same imports)."""
    from negdb.store.catalog import Catalog

    catalog = _load_catalog(catalog_py) if catalog_py != "-" else lambda r: Catalog(r, use_manifest=use_manifest == "1")
    import duckdb
    import fsspec
    import pyarrow.parquet  # noqa: F401

    import negdb.store.hardened as hardened

    # one-time costs of any process (imports, DuckDB's first start) are not the catalog's: paid before timing
    hardened.default_memory_limit()
    duckdb.connect().close()
    if "://" in root:
        fsspec.core.url_to_fs(root)
    t0 = time.perf_counter()
    cat = catalog(root)
    opened = time.perf_counter() - t0
    t0 = time.perf_counter()
    cat.refresh()
    same = time.perf_counter() - t0
    n = int(cat.sql("SELECT count(*) AS n FROM checkpoints")["n"][0])
    cat.close()
    return {"open": opened, "same": same, "checkpoints": n}


def _in_process(args, root: str, catalog_py: str = "-", use_manifest: bool = True) -> dict | None:  # type: ignore[no-untyped-def]
    """:func:`_measure_module` in a fresh process; None if it failed or ran past ``--baseline-timeout``."""
    try:
        out = subprocess.run([sys.executable, __file__, "--measure", catalog_py, "1" if use_manifest else "0", root],
                             capture_output=True, text=True, timeout=args.baseline_timeout, env=os.environ.copy())
    except subprocess.TimeoutExpired:
        return None
    if out.returncode != 0:
        print(out.stderr[-2000:], file=sys.stderr)
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def _baseline(args, root: str) -> dict | None:  # type: ignore[no-untyped-def]
    src = subprocess.run(["git", "show", f"{args.baseline}:store/catalog.py"], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parents[1]).stdout
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as fh:
        fh.write(src)
    try:
        return _in_process(args, root, fh.name)
    finally:
        os.unlink(fh.name)


def _catalog_sizes(args) -> None:  # type: ignore[no-untyped-def]
    import s3fs

    from bench.synthetic_segments import upload, write_store
    from negdb.store.catalog import Catalog
    from negdb.store.objects import FsspecObjects
    from tests.s3_server import s3_env, seaweedfs

    sizes = sorted(int(x) for x in args.sizes.split(","))
    rows = []
    with tempfile.TemporaryDirectory() as tmp, seaweedfs(Path(tmp) / "weed") as endpoint:
        os.environ.update(s3_env(endpoint))
        s3fs.S3FileSystem.clear_instance_cache()
        s3fs.S3FileSystem().mkdir("bench")
        folder = Path(tmp) / "store"
        url = f"s3://bench/{uuid.uuid4().hex[:8]}"
        objects = FsspecObjects(url)
        jobs = 0
        extra = 10**6
        for size in sizes:
            more = (size - 3) // 4 - jobs
            t0 = time.perf_counter()
            write_store(folder, more, start=jobs)
            made = time.perf_counter() - t0
            jobs += more
            t0 = time.perf_counter()
            upload(folder, objects)
            sent = time.perf_counter() - t0
            n_seg = 4 * jobs + 3
            print(f"# {n_seg:,} segments: written in {made:.1f} s, uploaded in {sent:.1f} s", flush=True)
            for kind, root in (("folder", str(folder)), ("S3", url)):
                base = _baseline(args, root) if args.baseline else None
                cold = _in_process(args, root, use_manifest=False)["open"]  # type: ignore[index]
                first = _in_process(args, root)["open"]  # type: ignore[index]  # publishes the manifest
                warm = _in_process(args, root)["open"]  # type: ignore[index]  # opens over it
                cat = Catalog(root)
                assert cat.segments_read == 0, cat.segments_read
                try:
                    same = _median(cat.refresh, args.repeat)
                    extra += 1  # one more ingest job (4 segments) in this store
                    one = Path(tmp) / f"one-{extra}"
                    write_store(one, 1, start=extra)
                    if kind == "S3":
                        upload(one, objects)
                    else:
                        for p in sorted((one / "tables").rglob("*.parquet")):
                            dst = folder / p.relative_to(one)
                            dst.parent.mkdir(parents=True, exist_ok=True)
                            dst.write_bytes(p.read_bytes())
                    t0 = time.perf_counter()
                    cat.refresh()
                    added = time.perf_counter() - t0
                    assert cat.segments_read == 4
                    n = cat.sql("SELECT count(*) AS n FROM checkpoints")["n"][0]
                    listed = (len(objects.list("tables/checkpoints")) if kind == "S3"
                              else len(list((folder / "tables/checkpoints").glob("*.parquet"))))
                    assert n == listed, (n, listed)
                finally:
                    cat.close()
                rows.append((n_seg, kind, base, cold, first, warm, same, added))
                b = (f"{base['open']:.2f} s" if base else "did not finish" if args.baseline else "-")
                print(f"| {n_seg:,} | {kind} | {b} | {cold:.2f} s | {first:.2f} s | {warm:.2f} s | {same:.3f} s | "
                      f"{added:.3f} s |", flush=True)
        s3fs.S3FileSystem.clear_instance_cache()
    print()
    print(f"| segments | store | open, {args.baseline or 'baseline'} | open, no manifest | open + publish manifest "
          "| open with manifest | refresh, nothing changed | refresh, one job added (4 segments) |")
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for n_seg, kind, base, cold, first, warm, same, added in rows:
        b = (f"{base['open']:.2f} s" if base else "did not finish" if args.baseline else "-")
        print(f"| {n_seg:,} | {kind} | {b} | {cold:.2f} s | {first:.2f} s | {warm:.2f} s | {same:.3f} s | "
              f"{added:.3f} s |")


if __name__ == "__main__":
    main()
