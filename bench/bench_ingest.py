"""Ingest throughput against a bare forward pass (with LM head) over the same tokens, in one run.

    .venv/bin/python bench/bench_ingest.py --model smollm2-135m --tokens 16384
    .venv/bin/python bench/bench_ingest.py --tokens 16384 --checkpoints 3 --modes overlap,serial
    python3 bench/bench_ingest.py --device cuda --tokens 65536 --batch-tokens 16384 --json out.json   # on a GPU

Prints tokens/s of (a) ``model(input_ids)`` with the LM head, batch by batch (the same batches as the ingest),
and (b) ``negdb ingest`` into a temporary store for each ``--modes`` entry: its streaming phase (capture +
compressed Zarr writes + fsync) and the whole ingest (wall time of the call less the model loads: streaming,
statistics and publishing), with the ratios to (a). ``--checkpoints K`` ingests K checkpoints (K copies of the
model's folder as ``step<N>/`` folders), where ``overlap`` computes one checkpoint's statistics while the next
streams and ``serial`` does not. (a) runs before and after (b); the mean is used.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the negdb CLI does; applies to both (a) and (b)

import numpy as np
import torch

import negdb
from negdb.ingest import ingest
from negdb.ingest.corpus import load_corpus
from negdb.ingest.plan import IngestSpec, Resources, batch_windows
from negdb.ingest.slices import make_slice
from negdb.models import checkpoints, loading, registry


def _sync(lm) -> None:
    if lm.device.type == "cuda":
        torch.cuda.synchronize(lm.device)


def bare_forward(lm, tokens: np.ndarray, wpb: int) -> float:
    """Seconds for a plain forward pass (all layers and the LM head) over ``tokens``."""
    _sync(lm)
    start = time.perf_counter()
    with torch.inference_mode():
        for w0 in range(0, len(tokens), wpb):
            ids = torch.from_numpy(tokens[w0:w0 + wpb].astype(np.int64)).to(lm.device)
            lm.model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False)
    _sync(lm)
    return time.perf_counter() - start


def model_folder(source, lm) -> Path:
    """A folder ``from_pretrained`` reads for this model (the converted GGUF cache, or the local folder)."""
    if source.kind == "gguf":
        return loading.convert_gguf(source)
    if source.kind in ("local", "steps"):
        return Path(source.location)
    raise SystemExit("--checkpoints > 1 needs a local model, a GGUF alias or a folder")


def steps_run(folder: Path, k: int, root: Path) -> Path:
    """``root/run/step0 .. step<k-1>``: each a folder of links to the files of ``folder``."""
    run = root / "run"
    for i in range(k):
        step = run / f"step{i}"
        step.mkdir(parents=True)
        for f in folder.iterdir():
            if f.is_file():
                (step / f.name).symlink_to(f.resolve())
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--tokens", type=int, default=16384)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--compression", default="zstd", choices=["zstd", "none"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--activations", default="all", help="all | none (none: the spool is still written)")
    ap.add_argument("--stats-backend", default="auto", choices=["auto", "numpy", "torch"])
    ap.add_argument("--batch-tokens", type=int, default=None, help="tokens per batch (default: from --mem-budget)")
    ap.add_argument("--mem-budget", type=int, default=1024)
    ap.add_argument("--checkpoints", type=int, default=1, help="ingest this many checkpoints (copies of the model)")
    ap.add_argument("--modes", default="overlap", help="comma-separated: overlap, serial")
    ap.add_argument("--md-pairs", type=int, default=50_000)
    ap.add_argument("--json", help="also write the numbers to this file")
    args = ap.parse_args()
    source = registry.resolve(args.model)
    ckpt = checkpoints.select(source, "final")[0]
    lm = loading.load(source, ckpt, device=args.device, dtype=getattr(torch, args.dtype))
    base = IngestSpec(model=args.model, tokens=args.tokens, seq_len=args.seq_len, dtype=args.dtype,
                      activations=args.activations, md_pairs=args.md_pairs)
    res = Resources(device=args.device, compression=args.compression, stats_backend=args.stats_backend,
                    batch_tokens=args.batch_tokens, mem_budget_mb=args.mem_budget)
    sl = make_slice(load_corpus(base.dataset), lm.tokenizer, tokenizer_name=source.model_id,
                    seq_len=base.seq_len, n_tokens=base.tokens)
    wpb = batch_windows(res, base.seq_len, d_mlp=lm.d_mlp, n_layers=lm.n_layers, n_windows=sl.n_windows)
    k = args.checkpoints
    t_load = time.perf_counter()
    loading.load(source, ckpt, device=args.device, dtype=getattr(torch, args.dtype))
    t_load = time.perf_counter() - t_load
    bare_forward(lm, sl.tokens[:wpb], wpb)  # warm-up
    t_bare1 = bare_forward(lm, sl.tokens, wpb)
    runs = {}
    with tempfile.TemporaryDirectory(prefix="negdb-bench-") as tmp:
        model = str(steps_run(model_folder(source, lm), k, Path(tmp))) if k > 1 else args.model
        for mode in [m.strip() for m in args.modes.split(",") if m.strip()]:
            store = Path(tmp) / f"store-{mode}"
            opts = replace(base, model=model, checkpoints="all" if k > 1 else "final")
            t0 = time.perf_counter()
            ingest(opts, store=store, resources=replace(res, overlap=mode == "overlap"), progress=False)
            wall = time.perf_counter() - t0
            with negdb.connect(str(store)) as cat:
                timings = [json.loads(t) for t in cat.sql("SELECT timings_json FROM runs")["timings_json"]]
            runs[mode] = {"wall_s": wall, "stream_s": sum(t["stream_s"] for t in timings),
                          "stats_s": sum(t.get("stats_s", 0.0) for t in timings),
                          "load_s": sum(t.get("load_s", t_load) for t in timings)}
    t_bare2 = bare_forward(lm, sl.tokens, wpb)
    t_bare = (t_bare1 + t_bare2) / 2
    n = sl.n_tokens
    out = {
        "model": source.model_id, "device": str(lm.device), "dtype": args.dtype, "tokens": n, "checkpoints": k,
        "compression": args.compression, "activations": args.activations, "stats_backend": args.stats_backend,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "layers": lm.n_layers, "d_mlp": lm.d_mlp,
        "batch_windows": wpb, "seq_len": base.seq_len, "threads": torch.get_num_threads(),
        "load_avg": os.getloadavg(),
        "bare_forward_tok_s": round(n / t_bare, 1), "bare_forward_s": [round(t_bare1, 2), round(t_bare2, 2)],
    }
    for mode, r in runs.items():
        whole = r["wall_s"] - r["load_s"]
        out[mode] = {
            "ingest_wall_s_incl_loads": round(r["wall_s"], 2), "model_loads_s": round(r["load_s"], 2),
            "stream_s": round(r["stream_s"], 2), "stats_s": round(r["stats_s"], 2),
            "ingest_stream_tok_s": round(k * n / r["stream_s"], 1),
            "ratio_stream_vs_bare": round(k * t_bare / r["stream_s"], 3),
            "ratio_whole_ingest_vs_bare": round(k * t_bare / whole, 3),
        }
    print(json.dumps(out, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
