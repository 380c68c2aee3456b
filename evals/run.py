"""One benchmark's items -> per-item rows (``eval_items``) and metrics (``eval_metrics``).

:func:`score_items` runs the model on a list of items of one benchmark (any kind but perplexity) and returns
one row per item; :func:`score_windows` does the same for perplexity windows and also returns each token's loss.
:func:`summarize` turns the item rows of a whole benchmark into metric rows: overall (micro), macro over
groups, and per value of each grouping field. Rows are plain dicts in the column order of the catalog tables
(:mod:`negdb.store.tables`).

The scoring conventions are a :class:`ScoringRule`, stored with every result.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from negdb.errors import BadArgument
from negdb.evals.metrics import DECISION_COLUMN
from negdb.evals.registry import BenchmarkSpec, Item
from negdb.evals.scoring import ContinuationScore, score_continuations
from negdb.evals.windows import Window, ppl_from, window_nll

if TYPE_CHECKING:  # pragma: no cover
    from negdb.models.loading import LoadedModel

BOS_POLICIES = ("lm-eval", "model")
DTYPES = ("float32", "bfloat16", "float16")
"""Dtypes of the forward pass (weights and activations); float32 is the default and the reference."""


def dtype_key(dtype: str) -> dict[str, str]:
    """What a key holds of the forward dtype: nothing for float32 (keys written before dtypes stay valid)."""
    return {} if dtype == "float32" else {"dtype": dtype}



@dataclass(frozen=True)
class ScoringRule:
    """How requests are scored (part of every result's key).

    Attributes:
        bos: ``"lm-eval"``: nothing is prepended, except the tokenizer's BOS (else EOS) before an empty context,
            as lm-evaluation-harness does; ``"model"``: the model family's BOS policy (``LoadedModel.bos``) is
            applied to every request and window.
        window: perplexity window in tokens (``None``: the model's context).
        dtype: the model's forward dtype (``float32``; ``bfloat16`` on GPUs): results in another dtype are
            other results. Device and batch size are not part of it (scores do not depend on them).
    """

    bos: str = "lm-eval"
    window: int | None = None
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.bos not in BOS_POLICIES:
            raise BadArgument(f"unknown BOS policy {self.bos!r}: use {' or '.join(BOS_POLICIES)}")
        if self.window is not None and self.window < 2:
            raise BadArgument(f"--window must be at least 2 tokens, got {self.window}")
        if self.dtype not in DTYPES:
            raise BadArgument(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")

    def bos_id(self, lm: LoadedModel) -> int | None:
        """The token prepended to every request under this rule, for ``lm`` (``None`` for lm-eval's)."""
        if self.bos == "model" and getattr(lm, "bos", "none") == "bos":
            return lm.bos_token_id
        return None

    def window_for(self, lm: LoadedModel) -> int:
        from negdb.evals.scoring import max_context

        context = max_context(lm)
        if self.window is not None and self.window > context:
            raise BadArgument(f"--window {self.window} is longer than the model's context ({context} tokens): "
                             f"use at most {context}")
        return self.window or context

    def describe(self, lm: LoadedModel, spec: BenchmarkSpec) -> dict[str, Any]:
        """The conventions in force for ``spec`` on ``lm`` (stored as ``scoring_json``)."""
        bos_id = self.bos_id(lm)
        out: dict[str, Any] = {"dtype": self.dtype, "bos_policy": self.bos, "bos_token_id": bos_id,
                               "bos_token": None if bos_id is None else lm.tokenizer.convert_ids_to_tokens(bos_id)}
        if spec.kind == "perplexity":
            out.update(window=self.window_for(lm), rule="exp(mean NLL) over non-overlapping windows")
        else:
            empty = getattr(lm.tokenizer, "bos_token_id", None)
            empty = empty if empty is not None else getattr(lm.tokenizer, "eos_token_id", None)
            out.update(empty_context_prefix=bos_id if bos_id is not None else empty,
                       rule=_RULES[spec.kind], encoding="lm-eval _encode_pair (context whitespace moves right)")
        return out


_RULES = {
    "minimal_pairs": "good > bad by total log-prob (acc_sum) and by mean per-token log-prob (acc_mean); ties wrong",
    "multiple_choice": "argmax of total log-prob (acc) and of log-prob / characters (acc_norm); ties to first",
    "partial": "argmax over option contexts of log-prob of the shared continuation",
    "last_word": "acc: every last-word token greedy; ppl: exp(-mean log P(last word | context))",
}


# ------------------------------------------------------------------------------------------ scoring


def _item_row(item: Item, scores: Sequence[ContinuationScore]) -> dict[str, Any]:
    lps = [s.logprob_sum for s in scores]
    ns = [s.n_tokens for s in scores]
    correct: bool | None
    alt: bool | None = None
    if item.kind == "minimal_pairs":
        correct = lps[0] > lps[1]
        alt = lps[0] / ns[0] > lps[1] / ns[1]
    elif item.kind in ("multiple_choice", "partial"):
        correct = int(np.argmax(lps)) == item.gold
        if item.kind == "multiple_choice":
            alt = int(np.argmax(np.asarray(lps) / np.array([float(len(c)) for c in item.choices]))) == item.gold
    elif item.kind == "last_word":
        correct = bool(scores[0].is_greedy)
    else:  # pragma: no cover - perplexity items go through score_windows
        raise BadArgument(f"cannot score {item.kind} items with score_items")
    return {"benchmark": item.benchmark, "item": item.index, "item_id": item.id, "grp": item.group,
            "meta_json": json.dumps(item.meta, sort_keys=True) if item.meta else None,
            "correct": bool(correct), "correct_alt": None if alt is None else bool(alt),
            "logprobs": lps, "n_tokens": ns, "greedy": [bool(s.is_greedy) for s in scores],
            "prefix_id": scores[0].prefix_id if scores else None}


def score_items(lm: LoadedModel, items: Sequence[Item], rule: ScoringRule, *,
                batch_tokens: int = 8192) -> list[dict[str, Any]]:
    """One ``eval_items`` row (without ``result_id``) per item, in the order given."""
    requests = [r for it in items for r in it.requests]
    scores = score_continuations(lm, requests, bos=rule.bos_id(lm), batch_tokens=batch_tokens)
    rows, at = [], 0
    for it in items:
        k = len(it.requests)
        rows.append(_item_row(it, scores[at:at + k]))
        at += k
    return rows


def score_windows(lm: LoadedModel, benchmark: str, windows: Sequence[Window], rule: ScoringRule, *,
                  batch_tokens: int = 8192) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``(item rows, token rows)`` of perplexity windows: one item row per window, one token row per loss."""
    bos_id = rule.bos_id(lm)
    nlls = window_nll(lm, windows, bos_id=bos_id, batch_tokens=batch_tokens)
    items, tokens = [], []
    for w, nll in zip(windows, nlls):
        first = w.offset if bos_id is not None else w.offset + 1
        items.append({"benchmark": benchmark, "item": w.index, "item_id": str(w.offset), "grp": None,
                      "meta_json": None, "correct": None, "correct_alt": None, "logprobs": [-float(nll.sum())],
                      "n_tokens": [int(nll.size)], "greedy": [False], "prefix_id": bos_id})
        predicted = w.ids if bos_id is not None else w.ids[1:]
        for k, (tok, v) in enumerate(zip(predicted, nll.tolist())):
            tokens.append({"window": w.index, "position": first + k, "token_id": int(tok), "nll": float(v)})
    return items, tokens


# ------------------------------------------------------------------------------------------ metrics


def _acc_rows(spec: BenchmarkSpec, metric: str, values: np.ndarray, items: Sequence[dict[str, Any]]
              ) -> list[dict[str, Any]]:
    rows = [{"metric": metric, "level": "overall", "grp": None, "value": float(values.mean()), "n": int(values.size)}]
    if spec.group is None:
        return rows
    levels: dict[str, dict[str, list[float]]] = {spec.group: {}}
    for meta_key in spec.meta:
        if meta_key != spec.group:
            levels[meta_key] = {}
    for it, v in zip(items, values.tolist()):
        levels[spec.group].setdefault(str(it["grp"]), []).append(v)
        meta = json.loads(it["meta_json"]) if it.get("meta_json") else {}
        for key in levels:
            if key != spec.group and key in meta:
                levels[key].setdefault(str(meta[key]), []).append(v)
    per_group = levels[spec.group]
    rows.append({"metric": metric, "level": "macro", "grp": None,
                 "value": float(np.mean([np.mean(v) for v in per_group.values()])), "n": int(values.size)})
    for level, groups in levels.items():
        for grp, vals in groups.items():
            rows.append({"metric": metric, "level": level, "grp": grp, "value": float(np.mean(vals)),
                         "n": len(vals)})
    return rows


def summarize(spec: BenchmarkSpec, items: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """``eval_metrics`` rows (without ``result_id``) of one benchmark's item rows."""
    if not items:
        raise BadArgument(f"{spec.name}: no items to summarise")
    rows: list[dict[str, Any]] = []
    for metric in spec.metrics:
        if metric == "ppl":
            if spec.kind == "perplexity":
                nll = -float(sum(it["logprobs"][0] for it in items))
                n = int(sum(it["n_tokens"][0] for it in items))
            else:  # LAMBADA: per item, the last word's log-probability
                nll, n = -float(sum(it["logprobs"][0] for it in items)), len(items)
            rows.append({"metric": "ppl", "level": "overall", "grp": None, "value": ppl_from(nll, n), "n": n})
            rows.append({"metric": "nll", "level": "overall", "grp": None, "value": nll / n if n else float("nan"),
                         "n": n})
            continue
        column = DECISION_COLUMN.get(metric)
        if column is None:
            raise BadArgument(f"{spec.name}: unknown metric {metric!r}")
        values = np.array([bool(it[column]) for it in items], dtype=np.float64)
        rows.extend(_acc_rows(spec, metric, values, items))
    return [{"benchmark": spec.name, **r} for r in rows]


def primary(spec: BenchmarkSpec, metrics: Sequence[dict[str, Any]]) -> tuple[str, float]:
    """The primary metric (first in the spec) and its headline value: macro when grouped, else overall."""
    name = spec.metrics[0]
    level = "macro" if spec.group is not None and name in DECISION_COLUMN else "overall"
    for r in metrics:
        if r["metric"] == name and r["level"] == level:
            return name, float(r["value"])
    raise BadArgument(f"{spec.name}: no {level} {name} among the metrics")  # pragma: no cover
