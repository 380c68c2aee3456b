"""Page-load latency of the neuron browser (``negdb serve``) on the 20-million-row synthetic catalog.

    .venv/bin/python bench/synthetic_catalog.py --out /tmp/negdb-synth --layout partitioned   # once, ~10 min
    .venv/bin/python bench/bench_browser.py --store /tmp/negdb-synth [--chromium] [--json out.json]

Starts the real ``negdb serve`` in a subprocess and, per page kind, requests the page ``--repeat`` times over
HTTP (the first request is the cold one: a new process, nothing cached but the Parquet footers the service read
at start). For each request it records the wall time (request to last byte, httpx on the same machine), the
server's ``Server-Timing`` (handler, queries, template) and the CPU time the server process used (psutil, all its
threads: a load-independent measure, since on a shared machine the wall time mostly measures the queue for the
cores). With ``--chromium`` it also loads each page in headless Chromium and reads the Navigation Timing
``loadEventEnd`` (HTML, the vendored scripts and styles, and the charts drawn) and when the panels it fetches
after loading are in (before the next page is loaded).

Pages: home, search (default: the last checkpoint by w_dist; a filter; all checkpoints, with its count of matches,
which the page fetches after loading; a non-selective filter over all checkpoints sorted by md), a neuron (its page,
and its w_dist trajectory across the 154 checkpoints, which the page fetches after loading), sets and results, a set.
A set ``bench-top1`` (top 1% per layer of the last checkpoint) is saved in the store if it is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from urllib.parse import quote

import httpx
import psutil

HTML = {"accept": "text/html"}


def pages(model: str, revision: str) -> list[tuple[str, str, dict[str, str]]]:
    m, r = quote(model, safe=""), quote(revision, safe="")
    neuron = f"/m/{m}/{r}/7/1234"
    return [
        ("home", "/", {}),
        ("search (last checkpoint, by w_dist)", "/search", {}),
        ("search (w_dist > 0.9 AND layer < 4)", f"/search?model={m}&checkpoint={r}&where=w_dist+%3E+0.9+AND+layer+%3C+4"
                                                "&order=md&dir=asc", {}),
        ("search (all 154 checkpoints, w_pct > 99.9)", f"/search?model={m}&checkpoint=*&where=w_pct+%3E+99.9", {}),
        ("search (all checkpoints): count panel (fetched after load)",
         f"/search?model={m}&checkpoint=*&where=w_pct+%3E+99.9&part=count", {"hx-request": "true"}),
        ("search (all checkpoints, frac_neg > 0.9 by md)",
         f"/search?model={m}&checkpoint=*&where=frac_neg+%3E+0.9&order=md", {}),
        ("neuron page", neuron, {}),
        ("neuron: w_dist trajectory panel (fetched after load)", neuron + "?part=trajectory", {"hx-request": "true"}),
        ("sets and results", "/browse", {}),
        ("a set (1,310 neurons)", "/browse/set/bench-top1", {}),
    ]


def ensure_set(store: Path, model: str, revision: str) -> None:
    import negdb
    from negdb.query import sets

    with negdb.connect(store) as cat:
        if "bench-top1" in set(cat.sql("SELECT name FROM neuron_sets")["name"].to_list()):
            return
        sets.save(cat.layout, sets.select(cat, model, revision, top="1%"), "bench-top1")


def server_timing(header: str) -> dict[str, float]:
    out = {}
    for part in header.split(","):
        name, _, dur = part.strip().partition(";dur=")
        if dur:
            out[name] = float(dur)
    return out


def measure_http(base: str, proc: psutil.Process, repeat: int, model: str, revision: str) -> list[dict]:
    rows = []
    with httpx.Client(base_url=base, timeout=120) as client:
        for name, url, extra in pages(model, revision):
            walls, cpus, timings, size = [], [], [], 0
            for _ in range(repeat):
                c0 = proc.cpu_times()
                t0 = time.perf_counter()
                r = client.get(url, headers={**HTML, **extra})
                walls.append((time.perf_counter() - t0) * 1000)
                c1 = proc.cpu_times()
                cpus.append(((c1.user + c1.system) - (c0.user + c0.system)) * 1000)
                if r.status_code != 200:
                    raise SystemExit(f"{url}: HTTP {r.status_code}: {r.text[:300]}")
                timings.append(server_timing(r.headers.get("server-timing", "")))
                size = len(r.content)
            warm = walls[1:]
            rows.append({"page": name, "url": url, "bytes": size, "cold_ms": walls[0],
                         "warm_median_ms": statistics.median(warm),
                         "warm_p90_ms": sorted(warm)[max(0, int(round(0.9 * len(warm))) - 1)],
                         "cpu_cold_ms": cpus[0], "cpu_warm_median_ms": statistics.median(cpus[1:]),
                         "db_warm_median_ms": statistics.median(t.get("db", 0.0) for t in timings[1:]),
                         "render_warm_median_ms": statistics.median(t.get("render", 0.0) for t in timings[1:])})
            print(f"{name:55s} cold {walls[0]:7.1f}  warm {rows[-1]['warm_median_ms']:7.1f} ms  "
                  f"server CPU {rows[-1]['cpu_warm_median_ms']:6.1f} ms", flush=True)
    return rows


def wait_for_panels(drv, timeout_s: float = 60.0) -> float:
    """Wait until the panels a page fetches after loading (htmx ``hx-trigger="load"``: the all-checkpoint count,
    the w_dist trajectory) are swapped in; ms from the navigation's start. Waiting also keeps one page's late
    query from running into the next page's load."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if drv.execute_script("return document.querySelectorAll('[hx-trigger=load]').length") == 0:
            return float(drv.execute_script("return performance.now()"))
        time.sleep(0.005)
    raise SystemExit(f"the after-load panels of {drv.current_url} did not arrive in {timeout_s:.0f} s")


def measure_chromium(base: str, repeat: int, model: str, revision: str, profile: Path) -> dict[str, float]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests import chromium

    found = chromium.find()
    if isinstance(found, str):
        print(f"no Chromium measurement: {found}")
        return {}
    drv = chromium.start(profile)
    out = {}
    try:
        for name, url, extra in pages(model, revision):
            if extra:
                continue
            loads, settled = [], []
            for _ in range(repeat):
                drv.get(base + url)
                loads.append(drv.execute_script(
                    "const n = performance.getEntriesByType('navigation')[0]; return n.loadEventEnd - n.startTime;"))
                settled.append(wait_for_panels(drv))
            out[name] = statistics.median(loads[1:])
            done = statistics.median(settled[1:])
            out[name + ": after-load panels in"] = done
            print(f"{name:55s} Chromium load {out[name]:7.1f} ms, after-load panels in {done:7.1f} ms "
                  f"(median of {repeat - 1} warm)", flush=True)
    finally:
        drv.quit()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", type=Path, default=Path("/tmp/negdb-synth"))
    ap.add_argument("--repeat", type=int, default=8)
    ap.add_argument("--chromium", action="store_true")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    if not (args.store / "negdb.json").exists():
        raise SystemExit(f"{args.store} is not a store: bench/synthetic_catalog.py --out {args.store} "
                         "--layout partitioned writes one")
    import negdb

    with negdb.connect(args.store) as cat:
        model = cat.sql("SELECT model_id FROM models LIMIT 1")["model_id"][0]
        revision = cat.sql("SELECT revision FROM checkpoints WHERE model_id = ? ORDER BY step DESC LIMIT 1",
                           [model])["revision"][0]
        rows = cat.sql("SELECT count(*) AS n FROM neuron_stats")["n"][0]
    ensure_set(args.store, model, revision)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.serving import serving

    with serving(args.store) as (base, proc):
        load0 = os.getloadavg()
        cpu = platform.processor() or ""
        try:
            cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
        except (OSError, StopIteration):
            pass
        print(f"{rows:,} neuron_stats rows; {model}@{revision}; {cpu}, {os.cpu_count()} cores; load {load0[0]:.1f}")
        http = measure_http(base, psutil.Process(proc.pid), args.repeat, model, revision)
        chrome = measure_chromium(base, max(3, args.repeat // 2), model, revision,
                                  Path(os.environ.get("TMPDIR", "/tmp")) / f"negdb-bench-chromium-{os.getpid()}") \
            if args.chromium else {}
        load1 = os.getloadavg()
        print(f"load average {load0[0]:.1f} -> {load1[0]:.1f}")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "model": model, "revision": revision, "cpu": cpu,
                                         "cores": os.cpu_count(), "load": [load0[0], load1[0]], "http": http,
                                         "chromium": chrome}, indent=2))


if __name__ == "__main__":
    main()
