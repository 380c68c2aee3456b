"""The plan of ``negdb ingest --model pythia-<size> --checkpoints all --dry-run`` for the whole Pythia suite.

    .venv/bin/python bench/plan_suite.py [--store STORE] [--tokens 16384]

Prints a Markdown table (checkpoints, downloads, weights in the cache at once, kept activations, statistics,
scratch, store disk, estimated time per stored device kind). Offline: sizes come from the alias table. The time
estimate needs ingest timings in ``--store``; without one, a SmolLM2-135M ingest of 4,096 tokens is run into a
temporary store first to calibrate this machine (forward-pass and statistics rates, scaled by parameters and
neurons: see negdb.ingest.runplan.estimate_times).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--store", default=None)
    ap.add_argument("--tokens", type=int, default=16384)
    args = ap.parse_args()

    from negdb.ingest import ingest
    from negdb.ingest.pipeline import plan
    from negdb.ingest.plan import human_bytes
    from negdb.models.registry import PYTHIA_SIZES

    with tempfile.TemporaryDirectory() as tmp:
        store = args.store
        if store is None:
            store = str(Path(tmp) / "calib")
            ingest(model="smollm2-135m", tokens=4096, store=store, progress=False, log=lambda _m: None)
        rows = []
        for size in PYTHIA_SIZES:
            p = plan(model=f"pythia-{size}", checkpoints="all", tokens=args.tokens, store=store)
            t = p.times[0] if p.times else None
            rows.append((size, p, t))
    kind = rows[0][2].device_kind if rows[0][2] else "no stored timings"
    print(f"| model | params | layers x neurons | checkpoints | downloads | weights at once | activations (final) "
          f"| statistics (all) | scratch | store disk | time on {kind} |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for size, p, t in rows:
        s = p.size
        hours = f"{t.seconds / 3600:,.1f} h" if t and t.seconds else "-"
        print(f"| pythia-{size} | {s.n_params / 1e6:,.0f}M | {s.n_layers} x {s.d_mlp:,} | {len(p.checkpoints)} "
              f"| {human_bytes(p.download_bytes())} | {human_bytes(p.weights_peak())} | "
              f"{human_bytes(p.array_bytes())} | {human_bytes(p.stats_bytes())} | {human_bytes(p.scratch_bytes())} "
              f"| {human_bytes(p.store_bytes())} | {hours} |")


if __name__ == "__main__":
    main()
