"""BLiMP minimal-pair scoring throughput: negdb against lm-evaluation-harness, same model, data and process.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/bench_blimp.py --limit 20 --lm-eval-batch-sizes 1,64

Needs lm-evaluation-harness, which is not a negdb dependency. It installs from PyPI into the negdb venv without
touching torch (2.13.0+cpu) or transformers (5.23.x); check afterwards that both are unchanged:

    .venv/bin/pip install "lm-eval==0.4.13"
    .venv/bin/python -c "import torch, transformers, lm_eval; print(torch.__version__, transformers.__version__)"

(lm-eval 0.4.13 pulls evaluate, sacrebleu, rouge-score, scikit-learn, pytablewriter, ...; its only effect on what
negdb uses is pinning python-dateutil to 2.9.) Its task registry and the hub are not used: the BLiMP requests
are built from negdb's bundled data (``load_items("blimp", limit=..., seed=...)``) exactly as lm-eval's ``blimp``
task builds them (``doc_to_text: ""``, the target delimiter ``" "``, choices ``[sentence_good, sentence_bad]``:
context ``""`` and continuation ``" " + sentence``), and given to ``HFLM.loglikelihood`` as ``Instance`` objects.
lm-eval scores an empty context with its prefix token (BOS, else EOS); negdb does the same under ``bos=None``.
Both wrap the same loaded model object (SmolLM2-135M, float32, CPU) and tokenizer.

The runs alternate (negdb, then lm-eval at each batch size, for ``--rounds`` rounds) so that machine noise hits
all of them. Printed: sentences/s (wall clock, best and mean over rounds), the CPU seconds per run, the speed-up
of negdb over each lm-eval setting (ratio of mean wall times, of the best wall times, and of mean CPU times: on a
shared machine the best round and the CPU time are the steadier measures), and the agreement: per-item decisions
(good sentence has the higher total log-probability) that differ (must be 0), the largest per-sentence
log-probability difference, and each system's error against a float64 copy of the model on a sample.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import platform
import sys
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the negdb CLI does; applies to both systems

import numpy as np
import torch
import transformers

from negdb.evals.registry import load_items
from negdb.evals.scoring import DEFAULT_BATCH_TOKENS, score_continuations
from negdb.models import checkpoints, loading, registry

INSTALL = ('lm-eval is not installed: .venv/bin/pip install "lm-eval==0.4.13" '
           "(keeps torch 2.13.0+cpu and transformers 5.23; see bench/bench_blimp.py)")


def lm_eval_requests(items: list) -> list[tuple[str, str]]:
    """(context, continuation) per sentence as lm-eval's blimp task builds them: good then bad per item."""
    reqs = []
    for it in items:
        good, bad = it.choices
        reqs += [("", " " + good), ("", " " + bad)]
    return reqs


def run_negdb(lm, reqs, batch_tokens: int) -> tuple[np.ndarray, float, float, set]:
    w0, c0 = time.perf_counter(), time.process_time()
    scores = score_continuations(lm, reqs, bos=None, batch_tokens=batch_tokens)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    return np.array([s.logprob_sum for s in scores]), wall, cpu, {s.prefix_id for s in scores}


def run_lm_eval(hflm, reqs) -> tuple[np.ndarray, float, float]:
    from lm_eval.api.instance import Instance

    inst = [Instance("loglikelihood", {}, req, i % 2, metadata=("blimp", i // 2, 1)) for i, req in enumerate(reqs)]
    w0, c0 = time.perf_counter(), time.process_time()
    out = hflm.loglikelihood(inst, disable_tqdm=True)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    return np.array([ll for ll, _ in out], dtype=np.float64), wall, cpu


def float64_reference(lm, reqs, sample: list[int]) -> np.ndarray:
    """Total log-probability of the sampled sentences from a float64 copy of the model, one sentence at a time."""
    import copy

    model = copy.deepcopy(lm.model).double()
    tok = lm.tokenizer
    out = []
    with torch.inference_mode():
        for i in sample:
            ids = [tok.bos_token_id] + tok(reqs[i][1], add_special_tokens=False)["input_ids"]
            logp = torch.log_softmax(model(torch.tensor([ids[:-1]], device=lm.device)).logits[0], dim=-1)
            rows = torch.arange(len(ids) - 1, device=logp.device)
            out.append(float(logp[rows, torch.tensor(ids[1:], device=logp.device)].sum()))
    del model
    return np.array(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--limit", type=int, default=20, help="pairs per BLiMP paradigm (67 paradigms)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lm-eval-batch-sizes", default="1,64", help="comma-separated HFLM batch sizes")
    ap.add_argument("--batch-tokens", type=int, default=DEFAULT_BATCH_TOKENS, help="negdb's batch_tokens")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--float64-sample", type=int, default=200,
                    help="sentences scored by a float64 copy of the model as the accuracy reference (0: none)")
    ap.add_argument("--json", help="also write the numbers to this file")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (both systems run there)")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="the model's dtype")
    args = ap.parse_args()
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM
    except ImportError:
        print(f"error: {INSTALL}", file=sys.stderr)
        sys.exit(2)
    for name in ("lm_eval", "lm-eval", "lm_eval.models.huggingface"):
        logging.getLogger(name).setLevel(logging.ERROR)

    load_avg_start = os.getloadavg()
    source = registry.resolve(args.model)
    lm = loading.load(source, checkpoints.select(source, "final")[0], device=args.device,
                      dtype=getattr(torch, args.dtype))
    items = load_items("blimp", limit=args.limit, seed=args.seed)
    reqs = lm_eval_requests(items)
    ours = [req for it in items for req in it.requests]
    assert ours == reqs, "negdb's BLiMP requests differ from lm-eval's template"
    sizes = [int(b) for b in args.lm_eval_batch_sizes.split(",")]
    hflms = {b: HFLM(pretrained=lm.model, tokenizer=lm.tokenizer, batch_size=b, device=str(lm.device))
             for b in sizes}
    prefix = {hflms[b].prefix_token_id for b in sizes}

    # warm-up on a few requests (first-call costs: negdb's one-time model probe, allocator, lm-eval set-up)
    run_negdb(lm, reqs[:64], args.batch_tokens)
    for b in sizes:
        run_lm_eval(hflms[b], reqs[:64])

    names = ["negdb"] + [f"lm-eval bs={b}" for b in sizes]
    walls: dict[str, list[float]] = {n: [] for n in names}
    cpus: dict[str, list[float]] = {n: [] for n in names}
    lps: dict[str, np.ndarray] = {}
    negdb_prefix: set = set()
    for _ in range(args.rounds):
        lp, wall, cpu, negdb_prefix = run_negdb(lm, reqs, args.batch_tokens)
        lps["negdb"] = lp
        walls["negdb"].append(wall)
        cpus["negdb"].append(cpu)
        for b in sizes:
            name = f"lm-eval bs={b}"
            lp, wall, cpu = run_lm_eval(hflms[b], reqs)
            lps[name] = lp
            walls[name].append(wall)
            cpus[name].append(cpu)
    load_avg_end = os.getloadavg()
    sample = sorted(np.random.default_rng(args.seed).choice(len(reqs), min(args.float64_sample, len(reqs)),
                                                            replace=False).tolist())
    truth = float64_reference(lm, reqs, sample) if sample else None

    n = len(reqs)
    ref = lps["negdb"]
    dec = ref[0::2] > ref[1::2]
    rows = []
    for name in names:
        lp = lps[name]
        d = lp[0::2] > lp[1::2]
        w = np.array(walls[name])
        c = np.array(cpus[name])
        rows.append({
            "system": name,
            "sent_s_best": n / w.min(), "sent_s_mean": n / w.mean(), "wall_s": w.tolist(), "cpu_s": c.tolist(),
            "speedup_wall": w.mean() / np.mean(walls["negdb"]), "speedup_wall_best": w.min() / np.min(walls["negdb"]),
            "speedup_cpu": c.mean() / np.mean(cpus["negdb"]),
            "accuracy": float(d.mean()), "decisions_differing": int((d != dec).sum()),
            "max_abs_logprob_diff": float(np.abs(lp - ref).max()),
            "float64_err_max": float(np.abs(lp[sample] - truth).max()) if sample else None,
            "float64_err_median": float(np.median(np.abs(lp[sample] - truth))) if sample else None,
        })

    print(f"# BLiMP minimal pairs: negdb vs lm-evaluation-harness {lm_eval.__version__} (one process)\n")
    print(f"- date {datetime.date.today()}, {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads), transformers {transformers.__version__}, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}")
    print(f"- command: {' '.join(['.venv/bin/python'] + sys.argv)}")
    print(f"- model {source.model_id} {args.dtype} on {lm.device}; {len(items)} pairs ({args.limit} per paradigm, seed {args.seed}) = "
          f"{n} sentences; negdb batch_tokens={args.batch_tokens}, bos=None; {args.rounds} alternating rounds")
    print(f"- prefix token for the empty context: lm-eval {sorted(prefix)}, negdb {sorted(negdb_prefix)}"
          f" ({'same' if prefix == negdb_prefix else 'DIFFERENT'})")
    print(f"- load average (1 min) at start / end of the timed runs: {load_avg_start[0]:.2f} / {load_avg_end[0]:.2f}")
    print(f"- accuracy reference: {len(sample)} sentences (seeded sample) scored by a float64 copy of the model, "
          "one at a time: error = |total log-prob - float64 value|\n")
    print("| system | sentences/s (mean) | sentences/s (best) | wall s per round | CPU s per round | "
          "negdb speed-up: mean wall | best wall | CPU time | accuracy | decisions differing | "
          "max abs Δ log-prob vs negdb | float64 error max / median |")
    print("| --- | ---: | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        if r["system"] == "negdb":
            speed_w = speed_b = speed_c = differ = delta = ""
        else:
            speed_w, speed_c = f"{r['speedup_wall']:.2f}x", f"{r['speedup_cpu']:.2f}x"
            speed_b = f"{r['speedup_wall_best']:.2f}x"
            differ, delta = str(r["decisions_differing"]), f"{r['max_abs_logprob_diff']:.2e}"
        wall = " / ".join(f"{x:.1f}" for x in r["wall_s"])
        cpu = " / ".join(f"{x:.1f}" for x in r["cpu_s"])
        f64 = f"{r['float64_err_max']:.1e} / {r['float64_err_median']:.1e}" if sample else ""
        print(f"| {r['system']} | {r['sent_s_mean']:.1f} | {r['sent_s_best']:.1f} | {wall} | {cpu} | {speed_w} | "
              f"{speed_b} | {speed_c} | {r['accuracy']:.4f} | {differ} | {delta} | {f64} |")
    best = max((r for r in rows if r["system"] != "negdb"), key=lambda r: r["sent_s_best"], default=None)
    if best is not None:
        print(f"\nlm-eval at its best batch size here ({best['system']}): negdb is {best['speedup_wall_best']:.2f}x "
              f"faster (best rounds), {best['decisions_differing']} decisions differing")
    if args.json:
        meta = {"model": source.model_id, "device": str(lm.device), "dtype": args.dtype,
                "best_lm_eval": None if best is None else best["system"], "sentences": n, "limit": args.limit, "seed": args.seed,
                "batch_tokens": args.batch_tokens, "lm_eval": lm_eval.__version__, "torch": torch.__version__,
                "transformers": transformers.__version__, "threads": torch.get_num_threads(),
                "prefix_token_ids": {"lm_eval": sorted(prefix), "negdb": sorted(negdb_prefix)},
                "load_avg": [load_avg_start[0], load_avg_end[0]]}
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
