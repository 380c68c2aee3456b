"""Perplexity as items: a text's tokens cut into non-overlapping windows, each window scored on its own.

Splitting the text into :class:`Window` s lets an evaluation run (and resume) window by window and keeps each
token's loss, for the surprisal analyses. The conventions are those of :func:`negdb.evals.scoring.perplexity`
(docs/DEFINITIONS.md, "Scores"): without a BOS the first token of each window is not predicted; with one, each
window is the BOS followed by ``window - 1`` text tokens, all of them predicted.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from negdb.errors import BadArgument

if TYPE_CHECKING:  # pragma: no cover
    from negdb.models.loading import LoadedModel


@dataclass(frozen=True)
class Window:
    """One window: ``offset`` is the text position of ``ids[0]``; ``ids`` are text tokens (no BOS)."""

    index: int
    offset: int
    ids: tuple[int, ...]


def plan_windows(token_ids: Sequence[int], *, window: int, bos_id: int | None,
                 max_tokens: int | None = None) -> list[Window]:
    """The windows of ``token_ids`` (first ``max_tokens`` only, when given)."""
    if window < 2:
        raise BadArgument(f"window must be >= 2 tokens, got {window}")
    ids = list(token_ids[:max_tokens] if max_tokens is not None else token_ids)
    step = window - 1 if bos_id is not None else window
    out = []
    for off in range(0, len(ids), step):
        chunk = tuple(int(t) for t in ids[off:off + step])
        if len(chunk) + (bos_id is not None) >= 2:
            out.append(Window(len(out), off, chunk))
    return out


def window_nll(lm: LoadedModel, windows: Sequence[Window], *, bos_id: int | None,
               batch_tokens: int = 8192) -> list[np.ndarray]:
    """Per window, the NLL (natural log, float64) of each predicted token, in text order.

    A window of ``n`` text tokens yields ``n`` values with a BOS and ``n - 1`` without (its first token has no
    context). Windows run longest first in right-padded batches of at most ``batch_tokens`` padded tokens.
    """
    seqs = [([bos_id] if bos_id is not None else []) + list(w.ids) for w in windows]
    order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
    pad = getattr(lm.tokenizer, "pad_token_id", None)
    pad = int(pad) if pad is not None else 0
    out: list[np.ndarray | None] = [None] * len(seqs)
    i = 0
    while i < len(order):
        width = len(seqs[order[i]])
        rows = max(1, batch_tokens // width)
        batch = order[i:i + rows]
        i += len(batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for r, j in enumerate(batch):
            ids[r, :len(seqs[j])] = torch.tensor(seqs[j], dtype=torch.long)
            mask[r, :len(seqs[j])] = 1
        with torch.inference_mode():
            res = lm.model(input_ids=ids.to(lm.device), attention_mask=mask.to(lm.device))
        logits = res.logits if hasattr(res, "logits") else res[0]
        for r, j in enumerate(batch):
            n = len(seqs[j])
            lp = torch.log_softmax(logits[r, : n - 1].float(), dim=-1)
            tgt = torch.tensor(seqs[j][1:], device=lp.device)
            out[j] = (-lp.gather(1, tgt[:, None])[:, 0]).double().cpu().numpy()
    return out  # type: ignore[return-value]


def ppl_from(nll_sum: float, n: int) -> float:
    """``exp(nll_sum / n)`` (NaN for no tokens)."""
    return math.exp(nll_sum / n) if n else float("nan")
