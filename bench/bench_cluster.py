"""Fan-out on a 2-worker Dask LocalCluster against the serial path, on the same work, side by side.

    .venv/bin/python bench/bench_cluster.py --checkpoints 6 --tokens 8192

Ingests ``--checkpoints`` tiny GPT-NeoX checkpoints (tests/tiny_models.py, ``step<N>/`` folders) serially into one
store and fanned out (``negdb.cluster.run(IngestSpec, store, Executor)``, one task per checkpoint) into another, checks that the two
stores hold the same statistics, and reports the walls and the overhead per task. Also times ``--noop`` empty
tasks through the same fan-out (scheduling cost alone). The cluster's start-up is reported apart.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _noop(key: str):  # a task that does nothing (module-level: picklable)
    from negdb.cluster.fanout import Outcome

    return Outcome(key, "done")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoints", type=int, default=6)
    ap.add_argument("--tokens", type=int, default=8192)
    ap.add_argument("--noop", type=int, default=200)
    args = ap.parse_args()

    from distributed import Client, LocalCluster

    from negdb.cluster import Executor
    from negdb.cluster import run as fan_out
    from negdb.cluster.fanout import Task, run_tasks
    from negdb.ingest import ingest
    from negdb.ingest.plan import IngestSpec
    from tests.ingest_helpers import stats_frame
    from tests.tiny_models import save_step_run

    quiet = dict(progress=False, log=lambda _m: None)
    with tempfile.TemporaryDirectory() as tmp:
        run = save_step_run(tmp, steps=[1000 * i for i in range(args.checkpoints)])
        opts = IngestSpec(str(run), checkpoints="all", tokens=args.tokens, seq_len=128, activations="all")
        t0 = time.perf_counter()
        ingest(opts, store=Path(tmp) / "serial", **quiet)
        serial = time.perf_counter() - t0
        t0 = time.perf_counter()
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                          dashboard_address=None) as lc, Client(lc) as client:
            start = time.perf_counter() - t0
            spec = Executor(kind="dask", address=lc.scheduler_address)
            t0 = time.perf_counter()
            fan_out(opts, Path(tmp) / "fanned", spec, **quiet)
            fanned = time.perf_counter() - t0
            tasks = [Task(f"noop-{i}", _noop, (f"noop-{i}",), gpu=False) for i in range(args.noop)]
            t0 = time.perf_counter()
            run_tasks(client, tasks, desc="noop", **quiet)
            noop = time.perf_counter() - t0
        same = stats_frame(Path(tmp) / "fanned").equals(stats_frame(Path(tmp) / "serial"))
    n = args.checkpoints
    print("| work | serial | 2-worker LocalCluster | ratio | overhead per task |")
    print("| --- | ---: | ---: | ---: | ---: |")
    print(f"| ingest, {n} tiny checkpoints x {args.tokens} tokens | {serial:.1f} s | {fanned:.1f} s | "
          f"{fanned / serial:.2f}x | {(fanned - serial) / n:+.2f} s |")
    print(f"| {args.noop} empty tasks (scheduling only) | - | {noop:.2f} s | - | {1000 * noop / args.noop:.1f} ms |")
    print(f"cluster start-up {start:.1f} s (not included); statistics identical: {same}")


if __name__ == "__main__":
    main()
