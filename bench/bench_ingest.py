"""Ingest throughput against a bare forward pass (with LM head) over the same tokens, in one run.

    .venv/bin/python bench/bench_ingest.py --model smollm2-135m --tokens 16384

Prints tokens/s of (a) ``model(input_ids)`` with the LM head, batch by batch, and (b) negdb's streaming phase
(capture + compressed Zarr writes + fsync) and the whole ingest (streaming + statistics + publish), and the
ratios. (a) runs before and after (b); the mean is used.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the negdb CLI does; applies to both (a) and (b)

import numpy as np
import torch

import negdb
from negdb.ingest.corpus import load_corpus
from negdb.ingest import ingest
from negdb.ingest.plan import IngestSpec, Resources, batch_windows
from negdb.ingest.slices import make_slice
from negdb.models import checkpoints, loading, registry


def bare_forward(lm, tokens: np.ndarray, wpb: int) -> float:
    """Seconds for a plain forward pass (all layers and the LM head) over ``tokens``."""
    start = time.perf_counter()
    with torch.inference_mode():
        for w0 in range(0, len(tokens), wpb):
            ids = torch.from_numpy(tokens[w0:w0 + wpb].astype(np.int64))
            lm.model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--tokens", type=int, default=16384)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--compression", default="zstd", choices=["zstd", "none"])
    args = ap.parse_args()
    opts = IngestSpec(model=args.model, tokens=args.tokens, seq_len=args.seq_len)
    res = Resources(device="cpu", compression=args.compression)
    source = registry.resolve(opts.model)
    ckpt = checkpoints.select(source, "final")[0]
    lm = loading.load(source, ckpt, device="cpu")
    sl = make_slice(load_corpus(opts.dataset), lm.tokenizer, tokenizer_name=source.model_id,
                    seq_len=opts.seq_len, n_tokens=opts.tokens)
    wpb = batch_windows(res, opts.seq_len, d_mlp=lm.d_mlp, n_layers=lm.n_layers, n_windows=sl.n_windows)
    bare_forward(lm, sl.tokens[:wpb], wpb)  # warm-up
    t_bare1 = bare_forward(lm, sl.tokens, wpb)
    with tempfile.TemporaryDirectory(prefix="negdb-bench-") as store:
        t0 = time.perf_counter()
        ingest(opts, store=store, resources=res, progress=False)
        t_total = time.perf_counter() - t0
        with negdb.connect(store) as cat:
            timings = json.loads(cat.sql("SELECT timings_json FROM runs")["timings_json"][0])
    t_bare2 = bare_forward(lm, sl.tokens, wpb)
    t_bare = (t_bare1 + t_bare2) / 2
    n = sl.n_tokens
    out = {
        "model": source.model_id, "tokens": n, "compression": res.compression,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "layers": lm.n_layers, "d_mlp": lm.d_mlp,
        "batch_windows": wpb, "seq_len": opts.seq_len, "threads": torch.get_num_threads(),
        "bare_forward_tok_s": round(n / t_bare, 1), "bare_forward_s": [round(t_bare1, 2), round(t_bare2, 2)],
        "ingest_stream_tok_s": round(n / timings["stream_s"], 1),
        "stats_s": round(timings["stats_s"], 2), "ingest_total_s_incl_model_load": round(t_total, 2),
        "ratio_stream_vs_bare": round(t_bare / timings["stream_s"], 3),
        "ratio_stream_plus_stats_vs_bare": round(t_bare / (timings["stream_s"] + timings["stats_s"]), 3),
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
