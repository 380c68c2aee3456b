"""Caption sentences: the model, checkpoints, data and scoring conventions behind a figure, from stored rows."""

from __future__ import annotations

import json
import math
from typing import Any

import polars as pl

from negdb.report.data import ModelFacts

BENCH_NAMES = {"wikitext2": "WikiText-2 (raw test)", "blimp": "BLiMP", "tse": "TSE (Marvin & Linzen)",
               "lambada_openai": "LAMBADA (OpenAI)", "arc_easy": "ARC-Easy", "arc_challenge": "ARC-Challenge",
               "piqa": "PIQA", "hellaswag": "HellaSwag", "winogrande": "WinoGrande", "boolq": "BoolQ",
               "copa": "COPA", "openbookqa": "OpenBookQA"}


def num(x: Any, digits: int = 4) -> str:
    """A number for text and tables: ``digits`` significant digits; '–' for missing values."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, float):
        return f"{x:.{digits}g}" if abs(x) >= 1e-3 or x == 0 else f"{x:.2e}"
    return str(x)


def checkpoint_text(facts: ModelFacts, revisions: list[str]) -> str:
    """'step143000 (step 143,000, commit 1a2b3c4d)' for each revision, with what the store knows of it."""
    known = {r["revision"]: r for r in facts.checkpoints.iter_rows(named=True)}
    parts = []
    for rev in revisions:
        row = known.get(rev, {})
        extra = []
        if row.get("step") is not None and rev != f"step{row['step']}":
            extra.append(f"step {num(row['step'])}")
        if row.get("tokens_seen") is not None:
            extra.append(f"{num(row['tokens_seen'])} tokens seen")
        if row.get("commit"):
            extra.append(f"commit {row['commit'][:10]}")
        parts.append(rev + (f" ({', '.join(extra)})" if extra else ""))
    if len(parts) > 6:
        parts = [*parts[:3], f"... ({len(parts)} checkpoints) ...", *parts[-2:]]
    return ", ".join(parts)


def model_text(facts: ModelFacts, revisions: list[str]) -> str:
    arch = ", ".join(x for x in (facts.family, f"{facts.n_layers} layers" if facts.n_layers else None,
                                 f"{facts.d_mlp} MLP neurons per layer" if facts.d_mlp else None,
                                 facts.activation) if x)
    what = "checkpoint" if len(revisions) == 1 else "checkpoints"
    return (f"Model {facts.model_id}" + (f" ({arch})" if arch else "")
            + (f", {what} {checkpoint_text(facts, revisions)}" if revisions else "") + ".")


def slice_text(sl: dict[str, Any], spec: dict[str, Any], lead: str = "Data") -> str:
    """The token slice and statistics spec of stored statistics."""
    if not sl:
        return "Statistics slice: not recorded."
    ref = spec.get("w_reference")
    ref_text = ("exact W1 against the analytic N(0,1) quantiles" if ref == "exact"
                else f"W1 against a seeded N(0,1) sample (seed {spec.get('w_seed')})" if ref == "sample" else "W1")
    return (f"{lead}: {sl.get('dataset')}, {num(sl.get('n_tokens'))} tokens ({num(sl.get('n_windows'))} windows of "
            f"{num(sl.get('seq_len'))} tokens, token sha256 {str(sl.get('token_sha256') or '')[:12]}); "
            f"statistics from the stored {spec.get('value_dtype', '?')} pre-activations, {ref_text}.")


def _scoring(s: dict[str, Any]) -> str:
    bos = s.get("bos_policy", "?")
    token = s.get("bos_token")
    prefix = f"BOS policy {bos}" + (f" (prefix {token})" if token else " (no BOS prefix)")
    if s.get("empty_context_prefix") is not None:
        prefix += f", empty contexts prefixed by token id {s['empty_context_prefix']}"
    if s.get("window") is not None:
        prefix += f", windows of {s['window']} tokens"
    return prefix + (f"; {s['rule']}" if s.get("rule") else "")


def evals_text(ev: pl.DataFrame) -> str:
    """Per benchmark: items scored, the subsample, and the scoring conventions (``eval_results.scoring_json``)."""
    if ev.height == 0:
        return "Evaluations: none recorded."
    parts = []
    seen: set[tuple[Any, ...]] = set()
    for r in ev.iter_rows(named=True):
        key = (r["benchmark"], r["n_items"], r["item_limit"], r["sample_seed"], r["scoring_json"])
        if key in seen:
            continue
        seen.add(key)
        s = json.loads(r["scoring_json"] or "{}")
        name = BENCH_NAMES.get(r["benchmark"], r["benchmark"])
        if "window" in s:  # perplexity: the limit counts tokens, the items are windows
            size = (f"{num(r['n_items'])} windows, " +
                    ("all tokens" if r["item_limit"] is None else f"first {num(r['item_limit'])} tokens"))
        else:
            size = f"{num(r['n_items'])} items" + ("" if r["item_limit"] is None else
                                                  f" (limit {num(r['item_limit'])} per group where grouped, "
                                                  f"sample seed {r['sample_seed']})")
        parts.append(f"{name} [{r['benchmark']}]: {size}; {_scoring(s)}")
    return "Data and scoring: " + " | ".join(parts) + "."


def bootstrap_text(n_boot: Any, seed: Any, over: str, paired: bool = True) -> str:
    kind = "a paired bootstrap" if paired else "a bootstrap"
    return f"CIs: 95% percentile intervals of {kind} ({over}), {num(n_boot)} draws, seed {seed}."


def when(ts: Any) -> str:
    """A stored timestamp to the minute (UTC)."""
    return ts.strftime("%Y-%m-%d %H:%M UTC") if hasattr(ts, "strftime") else str(ts)


def config_text(config: dict[str, Any], skip: tuple[str, ...] = ("model", "model_id")) -> str:
    """An analysis's stored scalar arguments as 'key=value' pairs (those of a nested ``options`` too; long ids
    shortened; lists and other nested values left out)."""
    flat = {**{k: v for k, v in (config.get("options") or {}).items()}, **config} \
        if isinstance(config.get("options"), dict) else dict(config)
    items = []
    for k, v in sorted(flat.items()):
        if k in skip or v is None or isinstance(v, (dict, list, tuple)):
            continue
        text = str(v)
        items.append(f"{k}={text[:16] + '...' if len(text) > 24 else text}")
    return "Arguments: " + (", ".join(items) if items else "none") + "."
