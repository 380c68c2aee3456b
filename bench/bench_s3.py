"""A store on S3 (SeaweedFS on 127.0.0.1, as the tests start it) against a store folder, side by side.

    .venv/bin/python bench/bench_s3.py --tokens 16384 --segments 10000

(1) Ingest: the same tiny GPT-NeoX (tests/tiny_models.py) into a folder store and into ``s3://bench/<id>`` (the local staging ingest plus the publication with
conditional PUTs); tokens/s and the ratio. (2) Query: open a catalog and run one aggregate over ``neurons``, median
of ``--repeat``. (3) Catalog refresh at ``--segments`` segments: that many one-row ``runs`` segments (copies of
the ingest's run record under new names) in both stores; the time to open a catalog (list and read every
segment), a refresh when nothing changed, and a refresh after one more segment. The server and its data are
removed at the end; nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import argparse
import os
import statistics
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
    args = ap.parse_args()

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


if __name__ == "__main__":
    main()
