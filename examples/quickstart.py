"""negdb from Python, end to end: ingest, select the Wasserstein neurons, ablate them against a random
control, read the table, and hook the same ablation into a live model.

    python examples/quickstart.py                         # SmolLM2-135M (embedded), about 9 CPU-minutes (measured: README, From Python)
    python examples/quickstart.py --model ./my-model --store /tmp/qs --tokens 512 --seq-len 32 --limit 1

Everything it computes is stored: run it again and it reads the results back (no model is loaded for them).
"""

from __future__ import annotations

import argparse
import time

import negdb


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--store", default="negdb-quickstart")
    ap.add_argument("--tokens", type=int, default=16_384, help="ingest tokens")
    ap.add_argument("--seq-len", type=int, default=512, help="ingest window")
    ap.add_argument("--md-pairs", type=int, default=50_000)
    ap.add_argument("--top", type=float, default=0.01, help="share of each layer's neurons (0.01 = 1%%)")
    ap.add_argument("--limit", type=int, default=5, help="BLiMP items per paradigm")
    ap.add_argument("--ppl-tokens", type=int, default=8192, help="WikiText-2 test tokens for perplexity")
    ap.add_argument("--window", type=int, default=512, help="perplexity window")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()

    # 1. a store, and the statistics of the model's pre-activations (skipped when stored)
    db = negdb.open(args.store, log=print)
    db.ingest(args.model, tokens=args.tokens, seq_len=args.seq_len, md_pairs=args.md_pairs)

    # 2. the paper's Wasserstein neurons: the top 1% per layer by w_dist (a Selection: polars members + keys)
    w = db.select(args.model, top=args.top, by="w_dist")
    print(f"{w.n_members} neurons picked; the first ones:\n{w.members.head(5)}")
    top = db.sql("SELECT layer, neuron, w_dist FROM neurons ORDER BY w_dist DESC LIMIT 3")
    print(f"highest w_dist:\n{top}")

    # 3. zero their negative pre-activations; compare with a random control of the same size per layer
    res = db.ablate(w, mode="neg", evals=["ppl", "blimp"], controls=["random"], seeds=1, limit=args.limit,
                    ppl_tokens=args.ppl_tokens, scoring=negdb.Scoring(window=args.window))
    print(res.render("table"))
    frame = res.frame()  # condition, benchmark, metric, value, baseline, delta, ci_lo, ci_hi, n, seeds
    blimp = {r["condition"]: r["delta"] for r in frame.filter(frame["benchmark"] == "blimp").to_dicts()}
    print(f"BLiMP accuracy change: ablation {blimp['ablation']:+.4f}, random {blimp['random']:+.4f} "
          f"(experiment {res.ablation_id}: {res.computed} evaluations computed, {res.reused} read back)")

    # 4. the same intervention on a live Hugging Face model, removed again when the block ends
    import torch

    lm = negdb.load(args.model, device="cpu")
    ids = lm.tokenizer("The keys to the cabinet are on the table.", return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        before = lm.model(input_ids=ids).logits
        with negdb.intervene(lm.model, w, mode="neg"):
            during = lm.model(input_ids=ids).logits
        after = lm.model(input_ids=ids).logits
    changed = float((during - before).abs().max())
    print(f"live model: logits moved by up to {changed:.4f} under the ablation; restored exactly after: "
          f"{bool(torch.equal(before, after))}")
    seconds = time.perf_counter() - t0
    print(f"quickstart done in {seconds:.1f} s")
    return {"experiment": res, "selection": w, "changed": changed, "restored": bool(torch.equal(before, after)),
            "seconds": seconds}


if __name__ == "__main__":
    main()
