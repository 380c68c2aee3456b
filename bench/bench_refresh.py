"""Time ``Catalog.refresh`` on a synthetic store of a few hundred stored evaluations and saved sets.

    .venv/bin/python bench/bench_refresh.py                     # 400 evaluations, 150 sets, into a temp folder
    .venv/bin/python bench/bench_refresh.py --evals 800 --sets 300 --repeat 7

The store holds what a few ablations and a sweep publish (every segment through
:func:`negdb.store.segments.write_segment`, with the real table schemas): one model, three checkpoints with
``neuron_stats`` (30 layers x 1,536 neurons, hive folders as ingest writes them), ``--sets`` saved neuron sets
(460 members each), ``--evals`` evaluations (``eval_results``, ``eval_metrics`` with 80 rows, ``eval_items`` with
600 rows; every fifth one a perplexity result with 4,000 ``eval_tokens`` rows), one ``ablations`` segment per 8
evaluations and a few ``analyses``. Values are seeded and meaningless; only the files matter.

Printed (median of ``--repeat`` runs, seconds): opening a Catalog; a refresh when nothing changed; a refresh after
one more saved set (2 segments, as ``ablate.controls.save_auto`` publishes); a refresh after one more evaluation
(3-4 segments); writing the segments is not timed. Last, a count on the refreshed catalog (it sees the new rows).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pyarrow as pa

from negdb.store.catalog import Catalog
from negdb.store.layout import StoreLayout
from negdb.store.segments import write_segment
from negdb.store.tables import (ABLATIONS, ANALYSES, CHECKPOINTS, EVAL_ITEMS, EVAL_METRICS, EVAL_RESULTS,
                                EVAL_TOKENS, MODELS, NEURON_SET_MEMBERS, NEURON_SETS, SLICES, STAT_SPECS,
                                neuron_stats_table)

MODEL = "bench-model"
LAYERS, WIDTH = 30, 1536
NOW = datetime(2026, 11, 29, tzinfo=timezone.utc)


def _put(layout: StoreLayout, table: str, name: str, arrow) -> None:  # type: ignore[no-untyped-def]
    write_segment(layout.table_dir(table) / f"{name}.parquet", arrow, exclusive=False)


def _stats(layout: StoreLayout, rng: np.random.Generator, revision: str) -> None:
    t = neuron_stats_table()
    n = LAYERS * WIDTH
    rows = {"model_id": [MODEL] * n, "revision": [revision] * n, "slice_id": ["s0"] * n, "spec_id": ["p0"] * n,
            "layer": np.repeat(np.arange(LAYERS), WIDTH).tolist(), "neuron": np.tile(np.arange(WIDTH), LAYERS).tolist()}
    arrays = []
    for name, typ, _ in t.columns:
        if name in rows:
            arrays.append(pa.array(rows[name], type=typ))
        elif pa.types.is_floating(typ):
            arrays.append(pa.array(rng.random(n), type=typ))
        elif pa.types.is_integer(typ):
            arrays.append(pa.array(rng.integers(0, 100, n), type=typ))
        else:
            arrays.append(pa.nulls(n, type=typ))
    folder = layout.table_dir("neuron_stats") / f"model_id={quote(MODEL, safe='')}" / f"revision={revision}"
    write_segment(folder / "job.parquet", pa.Table.from_arrays(arrays, schema=t.schema), exclusive=False)


def _set(layout: StoreLayout, rng: np.random.Generator, i: int) -> None:
    sid = f"set{i:06d}"
    members = [{"set_id": sid, "layer": int(l), "neuron": int(n)}
               for l, n in zip(rng.integers(0, LAYERS, 460), rng.integers(0, WIDTH, 460))]
    _put(layout, "neuron_set_members", sid, NEURON_SET_MEMBERS.from_rows(members))
    _put(layout, "neuron_sets", f"auto-{sid}", NEURON_SETS.from_rows([{
        "name": f"auto-{sid}", "set_id": sid, "model_id": MODEL, "revision": "step3", "slice_id": "s0",
        "spec_id": "p0", "expression": "{}", "counts_json": "{}", "n_members": 460, "created_at": NOW}]))


def _eval(layout: StoreLayout, rng: np.random.Generator, i: int) -> None:
    rid = f"r{i:06d}"
    ppl = i % 5 == 0
    bench = "wikitext2" if ppl else "blimp"
    items = [{"result_id": rid, "benchmark": bench, "item": j, "item_id": str(j), "grp": f"g{j % 67}",
              "meta_json": "{}", "correct": bool(rng.random() < 0.8), "correct_alt": bool(rng.random() < 0.8),
              "logprobs": [float(-rng.random() * 30), float(-rng.random() * 30)], "n_tokens": [7, 8],
              "greedy": [False, False], "prefix_id": None} for j in range(600)]
    _put(layout, "eval_items", rid, EVAL_ITEMS.from_rows(items))
    if ppl:
        toks = {"result_id": [rid] * 4000, "window": (np.arange(4000) // 512).tolist(),
                "position": np.arange(4000).tolist(), "token_id": rng.integers(0, 49152, 4000).tolist(),
                "nll": rng.random(4000).tolist()}
        _put(layout, "eval_tokens", rid, pa.table(toks, schema=EVAL_TOKENS.schema))
    _put(layout, "eval_metrics", rid, EVAL_METRICS.from_rows([
        {"result_id": rid, "benchmark": bench, "metric": "acc_sum", "level": "UID", "grp": f"g{j}",
         "value": float(rng.random()), "n": 10} for j in range(80)]))
    _put(layout, "eval_results", rid, EVAL_RESULTS.from_rows([{
        "result_id": rid, "model_id": MODEL, "revision": "step3", "mode": "neg", "set_id": f"set{i:06d}",
        "n_neurons": 460, "benchmark": bench, "bench_hash": "h", "scoring_json": "{}", "n_items": 600,
        "primary_metric": "acc_sum", "primary_value": float(rng.random()), "seconds": 1.0, "created_at": NOW,
        "versions_json": "{}"}]))


def build(root: Path, n_evals: int, n_sets: int, seed: int = 0) -> StoreLayout:
    """The synthetic store (see the module docstring)."""
    rng = np.random.default_rng(seed)
    layout = StoreLayout(root).init()
    _put(layout, "models", MODEL, MODELS.from_rows([{"model_id": MODEL, "n_layers": LAYERS, "d_mlp": WIDTH}]))
    _put(layout, "slices", "s0", SLICES.from_rows([{"slice_id": "s0", "dataset": "wikitext-2"}]))
    _put(layout, "stat_specs", "p0", STAT_SPECS.from_rows([{"spec_id": "p0", "md_pairs": 50000, "md_seed": 0}]))
    for k, rev in enumerate(("step1", "step2", "step3")):
        _put(layout, "checkpoints", rev, CHECKPOINTS.from_rows([{"model_id": MODEL, "revision": rev, "step": k}]))
        _stats(layout, rng, rev)
    for i in range(n_sets):
        _set(layout, rng, i)
    for i in range(n_evals):
        _eval(layout, rng, i)
    for a in range(n_evals // 8):
        _put(layout, "ablations", f"a{a:05d}", ABLATIONS.from_rows([
            {"ablation_id": f"a{a:05d}", "condition": c, "model_id": MODEL, "revision": "step3",
             "result_ids": [f"r{8 * a + j:06d}" for j in range(4)], "config_json": "{}", "created_at": NOW}
            for c in ("baseline", "ablation", "random", "ppl-matched")]))
    for a in range(5):
        _put(layout, "analyses", f"an{a}", ANALYSES.from_rows([{"analysis_id": f"an{a}", "kind": "sweep",
                                                                  "model_id": MODEL, "created_at": NOW}]))
    return layout


def _median(fn, repeat: int, before=None) -> float:  # type: ignore[no-untyped-def]
    """Median seconds of ``fn()`` over ``repeat`` runs (``before()`` runs first each time, untimed)."""
    times = []
    for _ in range(repeat):
        if before is not None:
            before()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--evals", type=int, default=400)
    ap.add_argument("--sets", type=int, default=150)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--out", default=None, help="Store folder (default: a temporary one, removed after)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.out or Path(tmp) / "store")
        t0 = time.perf_counter()
        layout = build(root, args.evals, args.sets)
        segs = sum(1 for _ in (root / "tables").rglob("*.parquet"))
        print(f"store: {args.evals} evaluations, {args.sets} sets, {segs} segments "
              f"(built in {time.perf_counter() - t0:.1f} s)")
        rng = np.random.default_rng(1)
        opened = _median(lambda: Catalog(root).close(), args.repeat)
        with Catalog(root) as cat:
            same = _median(cat.refresh, args.repeat)
            counter = iter(range(10**6, 2 * 10**6))
            one_set = _median(cat.refresh, args.repeat, lambda: _set(layout, rng, next(counter)))
            one_eval = _median(cat.refresh, args.repeat, lambda: _eval(layout, rng, next(counter)))
            n_sets = cat.sql("SELECT count(*) AS n FROM neuron_sets")["n"][0]
            n_res = cat.sql("SELECT count(*) AS n FROM eval_results")["n"][0]
        print(f"open Catalog:                 {opened:.3f} s")
        print(f"refresh, nothing changed:     {same:.3f} s")
        print(f"refresh after one saved set:  {one_set:.3f} s (2 new segments)")
        print(f"refresh after one evaluation: {one_eval:.3f} s (3-4 new segments)")
        print(f"the catalog sees {n_sets} sets and {n_res} evaluations "
              f"(expected {args.sets + args.repeat} and {args.evals + args.repeat})")


if __name__ == "__main__":
    main()
