"""Query latency on a Pythia-1b x 154-checkpoint catalog (20.2M neuron_stats rows), in one run.

    .venv/bin/python bench/synthetic_catalog.py --out /tmp/negdb-synth
    .venv/bin/python bench/bench_query.py --store /tmp/negdb-synth

Measures, each through ``Catalog.query`` (the path of ``negdb sql``, ``negdb select --where`` and the service):

(a) a ``--where`` selection with per-layer counts on one checkpoint (goal < 200 ms), and the whole
    ``negdb.query.sets.select(cat, model, revision, where=...)`` call that ``negdb select`` makes;
(b) a single-neuron statistics lookup by (model, revision, layer, neuron) (goal < 20 ms);
(c) ``negdb serve`` in a subprocess under ``--clients`` concurrent clients (one asyncio httpx client with that
    many connections) issuing ``--requests`` mixed requests: single-neuron lookups through ``POST /sql`` and
    ``GET /neurons?where=`` selections; p50/p95/p99 latency and throughput.

Warm figures are medians over ``--repeats`` queries with random checkpoints/layers/neurons (seeded); the cold
figure is the first query on a freshly opened Catalog (DuckDB cold; the OS file cache is whatever it is).

``--proposed STORE`` additionally measures (a), (b) and (c) on a store written with
``synthetic_catalog.py --layout partitioned`` with the catalog set up as proposed in bench/RESULTS.md
(hive-partitioned neuron_stats view, ``SET GLOBAL parquet_metadata_cache``, the small tables models/checkpoints/
slices/stat_specs loaded into memory), which negdb's Catalog does not do today:
(a)/(b) on a DuckDB connection with those views, (c) on ``negdb serve`` started with :data:`PROPOSED_PATCH`
applied to ``negdb.store.catalog`` in the server process (an emulation, for measuring only).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

SELECT_SQL = ("SELECT layer, count(*) AS n FROM neurons WHERE model_id = ? AND revision = ? AND w_dist > 0.9 "
              "GROUP BY layer ORDER BY layer")
LOOKUP_SQL = "SELECT * FROM neurons WHERE model_id = ? AND revision = ? AND layer = ? AND neuron = ?"


HIVE_OPTIONS = ", hive_partitioning = true, hive_types = {'model_id': VARCHAR, 'revision': VARCHAR}"

SMALL_TABLES = ("models", "checkpoints", "slices", "stat_specs")  # first-writer-wins, one tiny segment per key

PROPOSED_PATCH = f"""
import duckdb
import negdb.store.catalog as catalog
_connect, _sql_list, _view = duckdb.connect, catalog._sql_list, catalog.Catalog._view
def connect(*args, **kwargs):  # every catalog database caches Parquet footers, for all its cursors
    con = _connect(*args, **kwargs)
    con.execute("SET GLOBAL parquet_metadata_cache = true")
    return con
def sql_list(paths):  # neuron_stats segments in model_id=/revision= folders: read them hive-partitioned
    text = _sql_list(paths)
    if paths and all("/neuron_stats/model_id=" in str(p) for p in paths):
        text += "{HIVE_OPTIONS}"
    return text
def view(self, table):  # the small tables in memory: no file opens for the neurons view's joins
    _view(self, table)
    if table.name in {SMALL_TABLES!r}:
        for con in (self.con, self._safe):
            con.execute(f"CREATE OR REPLACE TABLE _mem_{{table.name}} AS SELECT * FROM {{table.name}}")
            con.execute(f"CREATE OR REPLACE VIEW {{table.name}} AS SELECT * FROM _mem_{{table.name}}")
duckdb.connect, catalog._sql_list, catalog.Catalog._view = connect, sql_list, view
from negdb.cli.main import main
main()
"""


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = (len(s) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def summary(ms: list[float]) -> dict[str, float]:
    return {"n": len(ms), "median_ms": statistics.median(ms), "p90_ms": pct(ms, 0.9), "min_ms": min(ms),
            "max_ms": max(ms)}


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return (time.perf_counter() - start) * 1000.0, out


def shape(cat: Any) -> tuple[str, list[str], int, int]:
    info = cat.arrow("SELECT model_id, n_layers, d_mlp FROM models LIMIT 1").to_pylist()[0]
    revisions = cat.arrow("SELECT revision FROM checkpoints WHERE model_id = ? ORDER BY step",
                          [info["model_id"]]).column(0).to_pylist()
    return info["model_id"], revisions, info["n_layers"], info["d_mlp"]


def bench_catalog(store: Path, repeats: int, seed: int, timeout_s: float) -> dict[str, Any]:
    """(a) and (b) through Catalog.query, cold and warm, plus sets.select."""
    import negdb
    from negdb.query import sets

    out: dict[str, Any] = {}
    ms, cat = timed(lambda: negdb.connect(str(store)))
    out["open_ms"] = ms
    model, revisions, n_layers, d_mlp = shape(cat)
    out["shape"] = {"model": model, "checkpoints": len(revisions), "layers": n_layers, "neurons": d_mlp}
    rng = random.Random(seed)

    def sel() -> list[Any]:
        return [model, rng.choice(revisions)]

    def look() -> list[Any]:
        return [model, rng.choice(revisions), rng.randrange(n_layers), rng.randrange(d_mlp)]

    run = lambda sql, params: cat.query(sql, params, max_rows=10_000, timeout_s=timeout_s)  # noqa: E731
    out["a_cold_ms"], res = timed(lambda: run(SELECT_SQL, sel()))
    assert res.table.num_rows == n_layers, res.table
    out["b_cold_ms"], res = timed(lambda: run(LOOKUP_SQL, look()))
    assert res.table.num_rows == 1
    a = [timed(lambda: run(SELECT_SQL, sel()))[0] for _ in range(repeats)]
    b = [timed(lambda: run(LOOKUP_SQL, look()))[0] for _ in range(repeats)]
    out["a"] = summary(a)
    out["b"] = summary(b)
    picks = []
    for _ in range(max(3, repeats // 10)):
        rev = rng.choice(revisions)
        ms, selection = timed(lambda: sets.select(cat, model, rev, where="w_dist > 0.9"))
        picks.append(ms)
    out["a_select"] = summary(picks)
    out["a_select"]["members_last"] = selection.n_members
    cat.close()
    return out


def proposed_connection(store: Path):  # type: ignore[no-untyped-def]
    """A DuckDB database with negdb's views as proposed: hive-partitioned neuron_stats, the Parquet metadata
    cache for every cursor, the small tables in memory."""
    import duckdb

    from negdb.store.catalog import NEURONS_VIEW
    from negdb.store.segments import list_segments
    from negdb.store.tables import all_tables

    con = duckdb.connect(":memory:")
    con.execute("SET GLOBAL parquet_metadata_cache = true")
    for table in all_tables():
        files = list_segments(store / "tables" / table.name)
        if not files:
            continue
        lst = "[" + ", ".join("'" + str(p).replace("'", "''") + "'" for p in files) + "]"
        hive = HIVE_OPTIONS if table.name == "neuron_stats" else ""
        source = f"read_parquet({lst}, union_by_name = true{hive})"
        if table.name in SMALL_TABLES:
            con.execute(f"CREATE TABLE _mem_{table.name} AS SELECT * FROM {source}")
            source = f"_mem_{table.name}"
        con.execute(f"CREATE VIEW {table.name} AS SELECT * FROM {source}")
    con.execute(NEURONS_VIEW)
    return con


def bench_proposed(store: Path, repeats: int, seed: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    ms, con = timed(lambda: proposed_connection(store))
    out["open_ms"] = ms
    info = con.sql("SELECT model_id, n_layers, d_mlp FROM models LIMIT 1").fetchall()[0]
    model, n_layers, d_mlp = info
    revisions = [r[0] for r in con.sql("SELECT revision FROM checkpoints ORDER BY step").fetchall()]
    rng = random.Random(seed)
    # a new cursor per query, as Catalog.query does
    q = lambda sql, params: con.cursor().sql(sql, params=params).to_arrow_table()  # noqa: E731
    out["a_cold_ms"], res = timed(lambda: q(SELECT_SQL, [model, rng.choice(revisions)]))
    assert res.num_rows == n_layers
    out["b_cold_ms"], res = timed(lambda: q(LOOKUP_SQL, [model, rng.choice(revisions), rng.randrange(n_layers),
                                                         rng.randrange(d_mlp)]))
    assert res.num_rows == 1
    out["a"] = summary([timed(lambda: q(SELECT_SQL, [model, rng.choice(revisions)]))[0] for _ in range(repeats)])
    out["b"] = summary([timed(lambda: q(LOOKUP_SQL, [model, rng.choice(revisions), rng.randrange(n_layers),
                                                    rng.randrange(d_mlp)]))[0] for _ in range(repeats)])
    con.close()
    return out


# ------------------------------------------------------------------------------------------------ service


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(store: Path, port: int, proposed: bool = False) -> subprocess.Popen:
    import httpx

    cmd = [sys.executable, *(["-c", PROPOSED_PATCH] if proposed else ["-m", "negdb.cli"]), "--store", str(store),
           "serve", "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"negdb serve exited: {proc.stderr.read()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("negdb serve did not start within 120 s")


async def load(base: str, clients: int, requests: int, seed: int, model: str, revisions: list[str],
               n_layers: int, d_mlp: int, where_share: float) -> dict[str, Any]:
    import httpx

    rng = random.Random(seed)
    plan = []
    for _ in range(requests):
        rev = rng.choice(revisions)
        if rng.random() < where_share:
            plan.append(("neurons_where", "GET", "/neurons", {
                "params": {"model": model, "checkpoint": rev,
                           "where": f"w_dist > 0.9 AND layer = {rng.randrange(n_layers)}"}}))
        else:
            plan.append(("sql_lookup", "POST", "/sql", {
                "json": {"sql": LOOKUP_SQL, "params": [model, rev, rng.randrange(n_layers), rng.randrange(d_mlp)]}}))
    lat: dict[str, list[float]] = {"sql_lookup": [], "neurons_where": []}
    rows: dict[str, list[int]] = {"sql_lookup": [], "neurons_where": []}
    errors: list[str] = []
    queue = iter(plan)
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=120.0) as client:
        async def worker() -> None:
            for kind, method, path, kw in queue:
                start = time.perf_counter()
                res = await client.request(method, path, **kw)
                lat[kind].append((time.perf_counter() - start) * 1000.0)
                if res.status_code != 200:
                    errors.append(f"{res.status_code} {res.text[:200]}")
                else:
                    rows[kind].append(res.json()["row_count"])

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        wall = time.perf_counter() - start
    every = lat["sql_lookup"] + lat["neurons_where"]
    out: dict[str, Any] = {"clients": clients, "requests": requests, "wall_s": wall, "throughput_rps": requests / wall,
                           "errors": len(errors), "first_errors": errors[:3]}
    for name, values in (("all", every), *lat.items()):
        if values:
            out[name] = {"n": len(values), "p50_ms": pct(values, 0.5), "p95_ms": pct(values, 0.95),
                         "p99_ms": pct(values, 0.99), "max_ms": max(values)}
    out["rows_neurons_where_median"] = statistics.median(rows["neurons_where"]) if rows["neurons_where"] else 0
    return out


def bench_service(store: Path, clients: int, requests: int, seed: int, where_share: float,
                  proposed: bool = False) -> dict[str, Any]:
    import httpx

    import negdb

    with negdb.connect(str(store)) as cat:
        model, revisions, n_layers, d_mlp = shape(cat)
    port = free_port()
    t0 = time.perf_counter()
    proc = start_server(store, port, proposed)
    out: dict[str, Any] = {"start_s": time.perf_counter() - t0}
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, timeout=60) as c:
            rng = random.Random(seed + 1)
            ms, res = timed(lambda: c.post("/sql", json={"sql": LOOKUP_SQL, "params": [
                model, rng.choice(revisions), rng.randrange(n_layers), rng.randrange(d_mlp)]}))
            assert res.status_code == 200, res.text
            out["first_request_ms"] = ms
            single = []
            for _ in range(20):  # one client at a time: the latency floor of the HTTP path
                ms, res = timed(lambda: c.post("/sql", json={"sql": LOOKUP_SQL, "params": [
                    model, rng.choice(revisions), rng.randrange(n_layers), rng.randrange(d_mlp)]}))
                single.append(ms)
            out["one_client_sql_lookup"] = summary(single)
        out["load"] = asyncio.run(load(base, clients, requests, seed, model, revisions, n_layers, d_mlp,
                                       where_share))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
    return out


def print_service(title: str, svc: dict[str, Any]) -> None:
    ld = svc["load"]
    print(f"{title}: started in {svc['start_s']:.1f} s, first request {svc['first_request_ms']:.0f} ms, "
          f"one client /sql lookup median {svc['one_client_sql_lookup']['median_ms']:.1f} ms")
    print(f"    {ld['clients']} clients, {ld['requests']} requests in {ld['wall_s']:.1f} s = "
          f"{ld['throughput_rps']:.1f} req/s, errors {ld['errors']} {ld['first_errors']}")
    for name in ("all", "sql_lookup", "neurons_where"):
        if name in ld:
            s = ld[name]
            print(f"    {name:14s} n={s['n']:4d}  p50 {s['p50_ms']:7.0f} ms  p95 {s['p95_ms']:7.0f} ms  "
                  f"p99 {s['p99_ms']:7.0f} ms  max {s['max_ms']:7.0f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", type=Path, required=True, help="a store from bench/synthetic_catalog.py")
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--requests", type=int, default=1000, help="requests in the load test (all clients together)")
    ap.add_argument("--where-share", type=float, default=0.2, help="share of /neurons?where= requests in the mix")
    ap.add_argument("--timeout", type=float, default=10.0, help="time limit per query (as negdb serve's default)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-service", action="store_true")
    ap.add_argument("--proposed", type=Path, default=None,
                    help="also measure (a)/(b) on a `synthetic_catalog.py --layout partitioned` store, as proposed")
    ap.add_argument("--json", type=Path, default=None, help="write all figures here as JSON")
    args = ap.parse_args()

    import duckdb

    result: dict[str, Any] = {"store": str(args.store), "cpus": os.cpu_count(), "duckdb": duckdb.__version__,
                              "load_avg_at_start": os.getloadavg()}
    cat = bench_catalog(args.store, args.repeats, args.seed, args.timeout)
    result["catalog"] = cat
    print(f"catalog {cat['shape']}: open {cat['open_ms']:.0f} ms")
    print(f"(a) where-selection, per-layer counts: cold {cat['a_cold_ms']:.1f} ms, warm median "
          f"{cat['a']['median_ms']:.1f} ms (p90 {cat['a']['p90_ms']:.1f}, n={cat['a']['n']})  goal < 200 ms")
    print(f"    sets.select(where='w_dist > 0.9') whole call: median {cat['a_select']['median_ms']:.0f} ms "
          f"(n={cat['a_select']['n']}, {cat['a_select']['members_last']} members)")
    print(f"(b) single-neuron lookup: cold {cat['b_cold_ms']:.1f} ms, warm median {cat['b']['median_ms']:.1f} ms "
          f"(p90 {cat['b']['p90_ms']:.1f}, n={cat['b']['n']})  goal < 20 ms")
    if args.proposed is not None:
        prop = bench_proposed(args.proposed, args.repeats, args.seed)
        result["proposed"] = prop
        print(f"proposed layout + view: open {prop['open_ms']:.0f} ms; (a) cold {prop['a_cold_ms']:.1f} ms, median "
              f"{prop['a']['median_ms']:.1f} ms; (b) cold {prop['b_cold_ms']:.1f} ms, median "
              f"{prop['b']['median_ms']:.1f} ms")
    if not args.skip_service:
        svc = bench_service(args.store, args.clients, args.requests, args.seed, args.where_share)
        result["service"] = svc
        print_service("(c) negdb serve", svc)
        if args.proposed is not None:
            svc = bench_service(args.proposed, args.clients, args.requests, args.seed, args.where_share, proposed=True)
            result["proposed_service"] = svc
            print_service("(c) proposed: negdb serve with the emulated catalog change", svc)
    result["load_avg_at_end"] = os.getloadavg()
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
