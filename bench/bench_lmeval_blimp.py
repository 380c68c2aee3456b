"""Does BLiMP through lm-evaluation-harness with negdb's adapter decide each item as negdb's own scoring does?

    .venv/bin/python bench/bench_lmeval_blimp.py --store negdb-store --model smollm2-135m --set wass1 \\
        --paradigms 10 --items 20 [--json out.json]

Writes local lm-eval tasks over the bundled BLiMP items (``negdb.ablate.lmeval.blimp_tasks``: every
``67 / --paradigms``-th paradigm, its first ``--items`` pairs), then for the unablated model and for ``--mode``
on ``--set``: runs them through ``lm_eval.simple_evaluate`` with :class:`negdb.ablate.lmeval_model.NegdbLM`, and
scores the same items with negdb's own BLiMP scoring (``negdb.evals.run.score_items`` under
``negdb.ablate.interventions.apply``). Reports per condition how many items get the same decision (good sentence
more probable than the bad one), the largest difference of a sentence's log-probability between the two, and
the accuracy each gives.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", default="negdb-store")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--set", dest="set_name", default=None)
    ap.add_argument("--top", default=None)
    ap.add_argument("--mode", default="neg")
    ap.add_argument("--paradigms", type=int, default=10)
    ap.add_argument("--items", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    import lm_eval
    from lm_eval.tasks import TaskManager

    from negdb.ablate.interventions import apply
    from negdb.ablate.lmeval import Selection, blimp_tasks, resolve_target
    from negdb.ablate.lmeval_model import NegdbLM
    from negdb.evals import registry
    from negdb.evals.run import ScoringRule, score_items

    all_paradigms = sorted({str(it.group) for it in registry.load_items("blimp")})
    step = max(1, len(all_paradigms) // args.paradigms)
    paradigms = all_paradigms[::step][:args.paradigms]
    folder = Path(tempfile.mkdtemp(prefix="negdb-blimp-tasks-"))
    names = blimp_tasks(folder, paradigms, args.items)
    items = {p: [it for it in registry.load_items("blimp") if it.group == p][:args.items] for p in paradigms}
    from negdb.query.setspec import SetSpec

    top = None if args.top is None else float(args.top.rstrip("%")) / 100
    neurons = SetSpec(model=args.model, set_name=args.set_name, top=top)
    target, loader = resolve_target(args.store, Selection(model=args.model, neurons=neurons, mode=args.mode))
    lm = loader()
    out = {"model": target.model_id, "revision": target.revision, "set_id": target.set_id, "mode": args.mode,
           "paradigms": paradigms, "items_per_paradigm": args.items, "conditions": {}}
    for cond, iv in (("baseline", None), (args.mode, target.intervention)):
        t0 = time.perf_counter()
        res = lm_eval.simple_evaluate(model=NegdbLM(lm=lm, intervention=iv, batch_size=args.batch_size), tasks=names,
                                      task_manager=TaskManager(include_path=str(folder)), log_samples=True,
                                      bootstrap_iters=0, verbosity="ERROR")
        t_lm = time.perf_counter() - t0
        t0 = time.perf_counter()
        with apply(lm, iv) if iv is not None else torch.no_grad():
            ours = {p: score_items(lm, items[p], ScoringRule("lm-eval")) for p in paradigms}
        t_ours = time.perf_counter() - t0
        agree = total = 0
        max_diff = 0.0
        disagreements = []
        acc_lm = acc_ours = 0
        for p, name in zip(paradigms, names):
            samples = sorted(res["samples"][name], key=lambda s: s["doc_id"])
            for row, s in zip(ours[p], samples):
                lls = [r[0][0] for r in s["resps"]]
                max_diff = max(max_diff, *(abs(a - b) for a, b in zip(lls, row["logprobs"])))
                same = bool(s["acc"]) == row["correct"]
                agree += same
                total += 1
                acc_lm += bool(s["acc"])
                acc_ours += row["correct"]
                if not same:
                    disagreements.append({"paradigm": p, "pairID": row["item_id"], "lm_eval": lls,
                                          "negdb": row["logprobs"]})
        out["conditions"][cond] = {"items": total, "same_decision": agree, "max_abs_logprob_diff": max_diff,
                                   "lm_eval_acc": acc_lm / total, "negdb_acc": acc_ours / total,
                                   "lm_eval_seconds": round(t_lm, 1), "negdb_seconds": round(t_ours, 1),
                                   "disagreements": disagreements}
        print(f"{cond:9s}: {agree}/{total} items decided alike; max |logprob difference| {max_diff:.2e}; "
              f"accuracy lm-eval {acc_lm / total:.4f}, negdb {acc_ours / total:.4f}; "
              f"{t_lm:.0f} s lm-eval, {t_ours:.0f} s negdb", flush=True)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
