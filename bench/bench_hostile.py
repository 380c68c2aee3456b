"""Peak memory of the CLI and the service under the hostile SQL corpus, and /health latency meanwhile.

    .venv/bin/python bench/bench_hostile.py                       # a small synthetic store in a temporary folder
    .venv/bin/python bench/bench_hostile.py --store negdb-store --json /tmp/hostile.json

Every entry of ``tests/hostile_sql.txt`` (refused ones included: they must cost nothing) is run

- by a real ``negdb sql`` process (``--timeout``, ``--max-rows 100``): its exit status, first line of stderr,
  wall time and peak resident memory (``ru_maxrss`` of that child, from ``os.wait4``);
- through a real ``negdb serve`` as ``POST /sql``, one after another, while a thread asks ``GET /health`` every
  0.2 s: the HTTP status of each, the server's peak resident memory (the kernel's ``VmHWM``) and the /health
  latencies during the corpus and in the 5 s after it;
- then, on the same server, ``--slow N`` (default 200) slow queries sent at once (a cross join the time limit
  stops), /health asked every 0.2 s meanwhile: the statuses (503 with Retry-After past the queue), the /health
  latencies and how long the flood took; a 200 MB request body (413 without the server growing); and the server's
  CPU use in the 3 s after 10 clients gave up on slow queries (0: their queries were cancelled).

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


def run_service(store: Path, cases: list[Any], tmp: Path, timeout_s: float, n_slow: int = 200) -> dict[str, Any]:
    import httpx

    from bench.bench_query import free_port

    port = free_port()
    cmd = [sys.executable, "-m", "negdb.cli", "--store", str(store), "serve", "--host", "127.0.0.1", "--port",
           str(port), "--timeout", str(timeout_s), "--max-rows", "100"]
    log = tmp / "serve.log"  # a file, not a pipe nobody reads (a full pipe would block the server)
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log.open("w"))
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"{base}/health", timeout=5).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"negdb serve did not start: {log.read_text()}")
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
    corpus_peak_mb = _vm_hwm_mb(server.pid) if server.poll() is None else float("nan")
    flood: dict[str, Any] = {}
    if n_slow and server.poll() is None:
        phase["name"] = "flood"
        flood = _flood(base, n_slow)
        phase["name"] = "after flood"
        time.sleep(5)
        try:
            flood["body"] = _big_body(base, server.pid)
            flood["cpu_after_abandoned_s"] = _abandoned(base, server.pid)
        except (SystemExit, OSError) as err:
            flood["died"] = str(err)
    stop.set()
    poller.join()
    alive = server.poll() is None
    peak_mb = _vm_hwm_mb(server.pid) if alive else float("nan")
    server.terminate()
    server.wait(30)
    errors = [ln for ln in log.read_text().splitlines() if "Traceback" in ln or "Error" in ln]
    if not alive:
        print("negdb serve died; the end of its log:\n" + "\n".join(log.read_text().splitlines()[-40:]))

    def lat(name: str) -> dict[str, float]:
        xs = [s for p, s, c in health if p == name]
        return {"n": len(xs), "max_s": max(xs) if xs else float("nan"),
                "p50_s": statistics.median(xs) if xs else float("nan"),
                "p95_s": sorted(xs)[int(0.95 * (len(xs) - 1))] if xs else float("nan"),
                "failed": sum(1 for p, _, c in health if p == name and c != 200)}

    return {"alive_after": alive, "idle_peak_mb": idle_mb, "corpus_peak_mb": corpus_peak_mb, "peak_mb": peak_mb,
            "answers": answers, "server_error_lines": errors, "health_during": lat("corpus"), "health_after": lat("after"),
            "flood": flood, "health_flood": lat("flood"), "health_after_flood": lat("after flood")}


SLOW_SQL = "SELECT count(*) FROM range(100000) a, range(100000) b, range(100000) c"
"""A query that runs until its time limit stops it (10^15 rows)."""


def _flood(base: str, n: int) -> dict[str, Any]:
    """``n`` slow queries at once, each from its own client: their statuses and how long until all were answered."""
    import httpx

    codes: dict[str, int] = {}
    retry_after: set[str] = set()
    lock = threading.Lock()

    def ask() -> None:
        try:
            res = httpx.post(f"{base}/sql", json={"sql": SLOW_SQL}, timeout=600)
            code = str(res.status_code)
            ra = res.headers.get("retry-after")
        except httpx.TransportError as err:
            code, ra = type(err).__name__, None
        with lock:
            codes[code] = codes.get(code, 0) + 1
            if ra:
                retry_after.add(ra)

    threads = [threading.Thread(target=ask, daemon=True) for _ in range(n)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"n": n, "statuses": dict(sorted(codes.items())), "retry_after": sorted(retry_after),
            "all_answered_s": time.perf_counter() - start}


def _big_body(base: str, pid: int, size: int = 200 * 2**20) -> dict[str, Any]:
    """POST a ``size``-byte body without a Content-Length (streamed): the status and the server's RSS growth."""
    import httpx

    def chunks():
        yield b'{"sql": "'
        for _ in range(size // 2**20):
            yield b"x" * 2**20
        yield b'"}'

    before = _vm_rss_mb(pid)
    try:
        code: int | str = httpx.post(f"{base}/sql", content=chunks(), timeout=120,
                                     headers={"content-type": "application/json"}).status_code
    except httpx.TransportError as err:  # the server may close the connection once it has answered 413
        code = type(err).__name__
    return {"bytes": size, "status": code, "rss_before_mb": before, "rss_after_mb": _vm_rss_mb(pid)}


def _abandoned(base: str, pid: int, n: int = 10) -> float:
    """CPU seconds the server uses in the 3 s after ``n`` clients gave up on slow queries after 0.5 s each."""
    import httpx

    for _ in range(n):
        try:
            httpx.post(f"{base}/sql", json={"sql": SLOW_SQL}, timeout=0.5)
        except httpx.TimeoutException:
            pass
        except httpx.TransportError as err:
            raise SystemExit(f"negdb serve is gone ({err})") from err
    time.sleep(1.0)
    before = _cpu_s(pid)
    time.sleep(3.0)
    return _cpu_s(pid) - before


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _vm_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", type=Path, default=None, help="a store (default: a small synthetic one)")
    ap.add_argument("--timeout", type=float, default=5.0, help="time limit of each query (s)")
    ap.add_argument("--only", default=None, help="comma-separated corpus entries (default: all)")
    ap.add_argument("--skip-cli", action="store_true")
    ap.add_argument("--skip-service", action="store_true")
    ap.add_argument("--slow", type=int, default=200, help="slow queries sent at once after the corpus (0: none)")
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
                sql = render(case, store, tmp)
                if "\0" in sql or len(sql.encode()) >= 128 * 1024:
                    continue  # no program argument holds a NUL byte or 128 KiB: the service gets these (JSON)
                r = run_cli(store, sql, args.timeout)
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
            svc = run_service(store, cases, tmp, args.timeout, args.slow)
            out["service"] = svc
            codes: dict[int, int] = {}
            for a in svc["answers"]:
                codes[a["status"]] = codes.get(a["status"], 0) + 1
            print(f"service: {len(svc['server_error_lines'])} error lines in its log; alive at the end: "
                  f"{svc['alive_after']}, peak RSS after the corpus "
                  f"{svc['corpus_peak_mb']:.0f} MB, at the end {svc['peak_mb']:.0f} MB (idle {svc['idle_peak_mb']:.0f} "
                  f"MB), statuses {dict(sorted(codes.items()))}")
            fl = svc["flood"]
            if fl.get("died"):
                print(f"  the server died after the flood: {fl['died']} ({fl['statuses']})")
            elif fl:
                print(f"  {fl['n']} slow queries at once: {fl['statuses']} (Retry-After {fl['retry_after']}), all "
                      f"answered in {fl['all_answered_s']:.1f} s; {fl['body']['bytes'] >> 20} MB body: "
                      f"{fl['body']['status']}, RSS {fl['body']['rss_before_mb']:.0f} -> "
                      f"{fl['body']['rss_after_mb']:.0f} MB; CPU in the 3 s after 10 abandoned slow queries: "
                      f"{fl['cpu_after_abandoned_s']:.2f} s")
            for name in ("health_during", "health_after", "health_flood", "health_after_flood"):
                h = svc[name]
                if h["n"]:
                    ms = {k: h[f"{k}_s"] * 1000 for k in ("p50", "p95", "max")}
                    print(f"  /health {name.removeprefix('health_').replace('_', ' ')}: n={h['n']} p50 "
                          f"{ms['p50']:.0f} ms, p95 {ms['p95']:.0f} ms, max {ms['max']:.0f} ms, failed {h['failed']}")
        if args.json:
            args.json.write_text(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    main()
