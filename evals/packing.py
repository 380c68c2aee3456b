"""How scoring lays model inputs out: batches, packed rows with shared prefixes, and what a model honours.

:func:`negdb.evals.scoring.score_continuations` uses these pieces. :func:`pack_rows` puts sorted inputs side by side
in rows, each sharing the columns of its common prefix with the input before it (a tree-shaped causal mask with
each token's own ``position_ids``). :func:`capabilities` checks once per model, on a tiny example against plain
forward passes, whether its ``forward`` honours ``logits_to_keep`` and such masks. :func:`padded_batches` groups rows
by padded size.
"""

from __future__ import annotations

import inspect
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from negdb.models.loading import LoadedModel

__all__ = ["LOGSOFTMAX_ROWS", "MAX_SHARED_ROW", "ROW_TOKENS", "Caps", "Row", "additive_mask", "capabilities",
           "logits_at", "model_dtype", "pack_rows", "padded_batches", "sliding_window"]


def _forward_logits(lm: LoadedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        out = lm.model(input_ids=input_ids, attention_mask=attention_mask)
    return out.logits if hasattr(out, "logits") else out[0]



ROW_TOKENS = 128
"""Target width of a packed row (several inputs side by side, see :func:`score_continuations`)."""
MAX_SHARED_ROW = 4096
"""Widest packed row (inputs sharing long prefixes may exceed :data:`ROW_TOKENS` up to this, or ``batch_tokens``)."""
LOGSOFTMAX_ROWS = 1024
"""Kept positions per log-softmax step (bounds a temporary ``(rows, vocab)`` float32 copy for half-precision models)."""


@dataclass(frozen=True)
class Caps:
    """What a model's ``forward`` honours, found once per model by :func:`capabilities`.

    keep: ``logits_to_keep=<(rows, width) bool mask>`` returns the logits of exactly those positions, flattened
        row-major, so the LM head runs only where a log-probability is read.
    tree: an additive ``(rows, 1, width, width)`` attention mask and ``position_ids`` are used as given, so that
        several inputs (and branches sharing a prefix) can share one row.
    no_cache: ``forward`` takes ``use_cache`` (passed ``False``: no key/value cache is built).
    """

    keep: bool
    tree: bool
    no_cache: bool = False


_CAPS: weakref.WeakKeyDictionary[Any, tuple[str, Caps]] = weakref.WeakKeyDictionary()


def logits_at(lm: LoadedModel, caps: Caps, ids: torch.Tensor, attn: torch.Tensor | None, pos: torch.Tensor | None,
          keep: torch.Tensor) -> torch.Tensor:
    """Logits ``(keep.sum(), vocab)`` at the ``True`` positions of ``keep`` (row-major), from one forward pass."""
    kw: dict[str, Any] = {"input_ids": ids, "attention_mask": attn}
    if pos is not None:
        kw["position_ids"] = pos
    if caps.keep:
        kw["logits_to_keep"] = keep
    if caps.no_cache:
        kw["use_cache"] = False
    with torch.inference_mode():
        out = lm.model(**kw)
    logits = out.logits if hasattr(out, "logits") else out[0]
    return logits if caps.keep else logits[keep]


def additive_mask(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``(rows, width, width)`` bool (query attends key) -> ``(rows, 1, width, width)`` additive mask."""
    mask = torch.zeros(allowed.shape, dtype=dtype)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[:, None]


def model_dtype(model: Any) -> torch.dtype:
    dtype = getattr(model, "dtype", None)
    return dtype if isinstance(dtype, torch.dtype) and dtype.is_floating_point else torch.float32


def _probe(lm: LoadedModel, caps: Caps) -> bool:
    """Whether ``caps`` reproduces plain one-sequence forward passes on a small packed example."""
    model = lm.model
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    vocab = int(getattr(emb, "num_embeddings", 0) or len(lm.tokenizer))
    a = [(37 * i + 11) % vocab for i in range(7)]
    b = a[:4] + [(53 * i + 5) % vocab for i in range(3)]
    c = [(29 * i + 3) % vocab for i in range(5)]
    device = lm.device
    with torch.inference_mode():
        ref = [_forward_logits(lm, torch.tensor([s], device=device), torch.ones(1, len(s), dtype=torch.long,
                                                                               device=device))[0].float()
               for s in (a, b, c)]
    if caps.tree:  # row 0: a, then b's last 3 tokens branching after a[:4]; row 1: c and 5 pad columns
        ids = torch.tensor([a + b[4:], c + [0] * 5], device=device)
        pos = torch.tensor([list(range(7)) + [4, 5, 6], list(range(5)) + [0] * 5], device=device)
        allowed = torch.zeros(2, 10, 10, dtype=torch.bool)
        allowed[0, :7, :7] = torch.ones(7, 7, dtype=torch.bool).tril()
        allowed[0, 7:, :4] = True
        allowed[0, 7:, 7:] = torch.ones(3, 3, dtype=torch.bool).tril()
        allowed[1, :5, :5] = torch.ones(5, 5, dtype=torch.bool).tril()
        allowed[1, 5:, 5:] = torch.eye(5, dtype=torch.bool)
        attn = additive_mask(allowed, model_dtype(model)).to(device)
        keep = torch.zeros(2, 10, dtype=torch.bool)
        keep[0, [1, 3, 6, 7, 9]] = True
        keep[1, [0, 4]] = True
        want = torch.stack([ref[0][1], ref[0][3], ref[0][6], ref[1][4], ref[1][6], ref[2][0], ref[2][4]])
    else:
        ids = torch.tensor([a, c + [0, 0]], device=device)
        attn = torch.tensor([[1] * 7, [1] * 5 + [0, 0]], device=device)
        pos = None
        keep = torch.zeros(2, 7, dtype=torch.bool)
        keep[0, [2, 6]] = True
        keep[1, [1, 4]] = True
        want = torch.stack([ref[0][2], ref[0][6], ref[2][1], ref[2][4]])
    got = logits_at(lm, caps, ids, attn, pos, keep.to(device)).float()
    if tuple(got.shape) != tuple(want.shape) or not bool(torch.isfinite(got).all()):
        return False
    tol = max(1e-4, 64 * torch.finfo(model_dtype(model)).eps) * max(1.0, float(want.abs().max()))
    return float((got - want).abs().max()) <= tol


def capabilities(lm: LoadedModel) -> Caps:
    """The :class:`Caps` of ``lm.model`` (signature check plus a probe on a tiny input; cached per model)."""
    model = lm.model
    impl = str(getattr(getattr(model, "config", None), "_attn_implementation", None))
    hit = _CAPS.get(model)
    if hit is not None and hit[0] == impl:
        return hit[1]
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        params = {}
    no_cache = "use_cache" in params
    keep = False
    if "logits_to_keep" in params:
        try:
            keep = _probe(lm, Caps(keep=True, tree=False, no_cache=no_cache))
        except Exception:  # noqa: BLE001 - any failure means: do not use it
            keep = False
    tree = False
    if "position_ids" in params:
        try:
            tree = _probe(lm, Caps(keep=keep, tree=True, no_cache=no_cache))
        except Exception:  # noqa: BLE001
            tree = False
    caps = Caps(keep=keep, tree=tree, no_cache=no_cache)
    try:
        _CAPS[model] = (impl, caps)
    except TypeError:  # not weak-referenceable: probe again next time
        pass
    return caps


def _common_prefix(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    lo, hi = 0, n  # a[:lo] == b[:lo], a[:hi] != b[:hi]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid
    return lo


@dataclass
class Row:
    """One model input row: hosts (indices into the sorted unique inputs) and the row's layout."""

    hosts: list[int]
    tokens: list[int]
    positions: list[int]
    segments: list[tuple[int, int, np.ndarray]]  # (first new column, width, columns of the shared prefix)


def pack_rows(
    hosts: list[tuple[int, ...]], width: int, cap: int, alone_over: int | None
) -> tuple[list[Row], list[np.ndarray]]:
    """Lay the hosts (sorted, none a prefix of another) out in rows; return the rows and each host's columns.

    A host goes into the current row after its predecessor if the row stays within ``width`` tokens, or (sharing
    at least as many tokens with the predecessor as it adds) within ``cap``; its common prefix with the
    predecessor is not repeated: it attends to the predecessor's columns. Hosts longer than ``alone_over`` get a
    row of their own.
    """
    rows: list[Row] = []
    cols: list[np.ndarray] = []
    cur: Row | None = None
    for j, h in enumerate(hosts):
        n = len(h)
        share = _common_prefix(hosts[j - 1], h) if cur is not None else 0
        alone = alone_over is not None and n > alone_over
        used = len(cur.tokens) if cur is not None else 0
        fits = cur is not None and not alone and (
            used + n - share <= width or (share >= n - share and used + n - share <= cap))
        if not fits:
            cur = Row([], [], [], [])
            rows.append(cur)
            share, used = 0, 0
        prev = cols[j - 1][:share] if share else np.empty(0, dtype=np.int64)
        new = np.arange(used, used + n - share, dtype=np.int64)
        cols.append(np.concatenate([prev, new]))
        cur.hosts.append(j)
        cur.tokens.extend(h[share:])
        cur.positions.extend(range(share, n))
        cur.segments.append((used, n - share, prev))
        if alone:
            cur = None
    return rows, cols


def sliding_window(lm: LoadedModel) -> int | None:
    value = getattr(lm.config, "sliding_window", None)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def padded_batches(lengths: list[int], order: list[int], batch_tokens: int) -> list[list[int]]:
    """Consecutive runs of ``order`` (longest first) whose padded size ``rows * longest`` fits the budget."""
    batches: list[list[int]] = []
    cur: list[int] = []
    for i in order:
        longest = lengths[cur[0]] if cur else lengths[i]
        if cur and (len(cur) + 1) * longest > batch_tokens:
            batches.append(cur)
            cur = []
        cur.append(i)
    if cur:
        batches.append(cur)
    return batches
