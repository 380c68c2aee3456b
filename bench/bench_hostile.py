"""Peak memory of the CLI and the service under the hostile SQL corpus, and /health latency meanwhile.

    .venv/bin/python bench/bench_hostile.py                       # a small synthetic store in a temporary folder
    .venv/bin/python bench/bench_hostile.py --store negdb-store --json /tmp/hostile.json

Every entry of ``tests/hostile_sql.txt`` (refused ones included: they must cost nothing) is run

- by a real ``negdb sql`` process (``--timeout``, ``--max-rows 100``): its exit status, first line of stderr,
  wall time and peak resident memory (``ru_maxrss`` of that child, from ``os.wait4``);
- through a real ``negdb serve`` as ``POST /sql``, one after another, while a thread asks ``GET /health`` every
  0.2 s: the HTTP status of each, the server's peak resident memory (the kernel's ``VmHWM``) and the /health
  latencies during the corpus and in the 5 s after it.

The store is written by ``bench/synthetic_catalog.py`` (4 layers x 256 neurons x 2 checkpoints) unless ``--store``
names one. Nothing here is a test: it prints what happened, the tests assert it (tests/test_sql_safety.py,
tests/test_query_walls.py).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def corpus() -> list[Any]:
    from tests.test_sql_safety import load_hostile

    return load_hostile()


def render(case: Any, store: Path, tmp: Path) -> str:
    outside = tmp / "outside.parquet"
    if not outside.exists():
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({"secret": ["x"]}), outside)
    return case.render(store, tmp / "target", outside)


def run_cli(store: Path, sql: str, timeout_s: float) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "negdb.cli", "--store", str(store), "sql", sql, "--timeout", str(timeout_s),
           "--max-rows", "100", "--format", "csv"]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    err = proc.stderr.read() if proc.stderr else ""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    first = next((ln for ln in err.splitlines() if ln.strip()), "")
    return {"rc": proc.returncode, "s": time.perf_counter() - start, "peak_mb": usage.ru_maxrss / 1024,
            "stderr_lines": len([ln for ln in err.splitlines() if ln.strip()]), "message": first[:160]}


def _vm_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_service(store: Path, cases: list[Any], tmp: Path, timeout_s: float) -> dict[str, Any]:
    import httpx

    from bench.bench_query import free_port

    port = free_port()
    cmd = [sys.executable, "-m", "negdb.cli", "--store", str(store), "serve", "--host", "127.0.0.1", "--port",
           str(port), "--timeout", str(timeout_s), "--max-rows", "100"]
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"{base}/health", timeout=5).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"negdb serve did not start: {server.stderr.read() if server.stderr else ''}")
        time.sleep(0.2)
    idle_mb = _vm_hwm_mb(server.pid)
    health: list[tuple[str, float, int]] = []
    phase = {"name": "corpus"}
    stop = threading.Event()

    def poll() -> None:
        with httpx.Client(base_url=base, timeout=30) as client:
            while not stop.is_set():
                start = time.perf_counter()
                try:
                    code = client.get("/health").status_code
                except httpx.TransportError:
                    code = 0
                health.append((phase["name"], time.perf_counter() - start, code))
                time.sleep(0.2)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    answers = []
    with httpx.Client(base_url=base, timeout=300) as client:
        for case in cases:
            start = time.perf_counter()
            try:
                res = client.post("/sql", json={"sql": render(case, store, tmp)})
                code, text = res.status_code, res.text[:160]
            except httpx.TransportError as err:
                code, text = 0, f"{type(err).__name__}: {err}"
            answers.append({"name": case.name, "expect": case.expect, "status": code,
                            "s": time.perf_counter() - start, "message": text})
    phase["name"] = "after"
    time.sleep(5)
    stop.set()
    poller.join()
    alive = server.poll() is None
    peak_mb = _vm_hwm_mb(server.pid) if alive else float("nan")
    server.terminate()
    server.wait(30)

    def lat(name: str) -> dict[str, float]:
        xs = [s for p, s, c in health if p == name]
        return {"n": len(xs), "max_s": max(xs) if xs else float("nan"),
                "p50_s": statistics.median(xs) if xs else float("nan"),
                "failed": sum(1 for p, _, c in health if p == name and c != 200)}

    return {"alive_after": alive, "idle_peak_mb": idle_mb, "peak_mb": peak_mb, "answers": answers,
            "health_during": lat("corpus"), "health_after": lat("after")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", type=Path, default=None, help="a store (default: a small synthetic one)")
    ap.add_argument("--timeout", type=float, default=5.0, help="time limit of each query (s)")
    ap.add_argument("--only", default=None, help="comma-separated corpus entries (default: all)")
    ap.add_argument("--skip-cli", action="store_true")
    ap.add_argument("--skip-service", action="store_true")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    cases = corpus()
    if args.only:
        keep = set(args.only.split(","))
        cases = [c for c in cases if c.name in keep]
    with tempfile.TemporaryDirectory(prefix="negdb-hostile-") as td:
        tmp = Path(td)
        (tmp / "target").mkdir()
        store = args.store
        if store is None:
            from bench.synthetic_catalog import write_store

            store = tmp / "store"
            write_store(store, n_layers=4, d_mlp=256, n_checkpoints=2, seed=0, layout_kind="partitioned", quiet=True)
        out: dict[str, Any] = {"store": str(store), "timeout_s": args.timeout, "n_inputs": len(cases)}
        if not args.skip_cli:
            rows = []
            for case in cases:
                r = run_cli(store, render(case, store, tmp), args.timeout)
                rows.append({"name": case.name, "expect": case.expect, **r})
                print(f"cli  {case.name:40s} rc={r['rc']:3d} {r['s']:6.1f} s {r['peak_mb']:7.0f} MB  "
                      f"{r['message'][:70]}", flush=True)
            out["cli"] = {"runs": rows, "peak_mb": max(r["peak_mb"] for r in rows),
                          "max_s": max(r["s"] for r in rows),
                          "killed": [r["name"] for r in rows if r["rc"] not in (0, 2)],
                          "multi_line": [r["name"] for r in rows if r["rc"] == 2 and r["stderr_lines"] != 1]}
            print(f"cli: peak RSS {out['cli']['peak_mb']:.0f} MB, slowest {out['cli']['max_s']:.1f} s, "
                  f"killed/crashed: {out['cli']['killed'] or 'none'}, "
                  f"not one line: {out['cli']['multi_line'] or 'none'}")
        if not args.skip_service:
            svc = run_service(store, cases, tmp, args.timeout)
            out["service"] = svc
            codes: dict[int, int] = {}
            for a in svc["answers"]:
                codes[a["status"]] = codes.get(a["status"], 0) + 1
            print(f"service: alive after the corpus: {svc['alive_after']}, peak RSS {svc['peak_mb']:.0f} MB "
                  f"(idle {svc['idle_peak_mb']:.0f} MB), statuses {dict(sorted(codes.items()))}")
            for name in ("health_during", "health_after"):
                h = svc[name]
                print(f"  /health {name.removeprefix('health_')}: n={h['n']} p50 {h['p50_s'] * 1000:.0f} ms, "
                      f"max {h['max_s'] * 1000:.0f} ms, failed {h['failed']}")
        if args.json:
            args.json.write_text(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    main()
