"""Batch-invariant log-likelihood scoring: log P(continuation | context) and windowed perplexity.

Tokenization follows lm-evaluation-harness (``HFLM._encode_pair``): trailing whitespace of the context moves to
the front of the continuation, ``context + continuation`` is encoded once and split at the length of the encoded
context, and no special tokens are added by the tokenizer. The BOS policy is explicit:

- ``bos=None``: nothing is prepended, except that an empty context becomes the tokenizer's BOS token, or its EOS
  token when it has no BOS (lm-eval's ``prefix_token_id``), so that the first continuation token has a context;
- ``bos=<token string or id>``: that token is prepended to every request.

Each :class:`ContinuationScore` records the token that was prepended (``prefix_id``, ``None`` for none).

Only the needed log-probabilities are computed (:func:`score_continuations`): a request's model input is its token
sequence without the last token; identical inputs run once, and an input that is a prefix of another one is read
from the longer one's forward pass. The remaining inputs are sorted and laid side by side in rows (each sharing
the columns of its common prefix with the input before it, under a tree-shaped causal mask with each token's own
``position_ids``), rows are batched by width up to ``batch_tokens`` padded tokens, and the LM head and the
log-softmax run only at the continuation positions (``logits_to_keep``). Whether a model's ``forward`` honours
these arguments is checked once per model on a small example against plain forward passes; if not, each input
runs in its own right-padded row, and the full logits are computed. Causal attention makes a position's logits
depend only on its own sequence's earlier tokens, so scores do not depend on batching, packing or reuse beyond
floating-point rounding.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from negdb.errors import BadArgument
from negdb.evals.packing import (LOGSOFTMAX_ROWS, MAX_SHARED_ROW, ROW_TOKENS, additive_mask, capabilities, logits_at,
                                 model_dtype, pack_rows, padded_batches, sliding_window)
from negdb.models.loading import LoadedModel, max_context

DEFAULT_BATCH_TOKENS = 8192


@dataclass(frozen=True)
class ContinuationScore:
    """log P(continuation | context) of one request.

    Attributes:
        logprob_sum: total log-probability of the continuation tokens (natural log).
        n_tokens: number of continuation tokens.
        is_greedy: whether every continuation token is the argmax of its predicted distribution.
        prefix_id: the token prepended before the context (BOS policy or the empty-context prefix), else ``None``.
        token_logprobs: per-token log-probabilities (only with ``return_tokens=True``).
    """

    logprob_sum: float
    n_tokens: int
    is_greedy: bool
    prefix_id: int | None = None
    token_logprobs: tuple[float, ...] | None = None

    @property
    def logprob_mean(self) -> float:
        """Mean per-token log-probability."""
        return self.logprob_sum / self.n_tokens if self.n_tokens else float("nan")


@dataclass(frozen=True)
class PerplexityResult:
    """Perplexity of one text over non-overlapping windows.

    Attributes:
        nll_sum: total negative log-likelihood (natural log) of the predicted tokens.
        n_predicted: number of predicted tokens.
        ppl: ``exp(nll_sum / n_predicted)``.
        per_token_nll: ``(len(token_ids),)`` float64, the NLL of each text token, NaN where it was not predicted
            (the first token of each window when no BOS is prepended).
        token_ids: ``(n,)`` int64, the text's token ids (without any BOS).
        window: the window length in tokens (including the BOS when one is prepended).
        bos_id: the token prepended to every window, else ``None``.
    """

    nll_sum: float
    n_predicted: int
    ppl: float
    per_token_nll: np.ndarray
    token_ids: np.ndarray
    window: int
    bos_id: int | None


# ------------------------------------------------------------------------------------------ helpers


def resolve_bos(tokenizer: Any, bos: str | int | None) -> int | None:
    """The token id for a BOS policy: ``None`` -> ``None``; an id is checked; a token string is looked up."""
    if bos is None:
        return None
    if isinstance(bos, bool):
        raise BadArgument("bos must be None, a token string or a token id")
    if isinstance(bos, int):
        if bos < 0 or bos >= len(tokenizer):
            raise BadArgument(f"bos token id {bos} is outside the tokenizer's vocabulary ({len(tokenizer)} tokens)")
        return bos
    vocab = tokenizer.get_vocab()
    if bos not in vocab:
        raise BadArgument(f"bos token {bos!r} is not in the tokenizer's vocabulary")
    return int(vocab[bos])


def empty_context_prefix(tokenizer: Any) -> int:
    """The token that stands for an empty context (lm-eval): BOS, else EOS."""
    for tid in (getattr(tokenizer, "bos_token_id", None), getattr(tokenizer, "eos_token_id", None)):
        if tid is not None:
            return int(tid)
    raise BadArgument("an empty context needs a BOS or EOS token and the tokenizer has neither: pass bos=")


def _encode(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    if not texts:
        return []
    return [list(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def encode_requests(
    tokenizer: Any, requests: Sequence[tuple[str, str]], bos_id: int | None
) -> list[tuple[list[int], list[int], int | None]]:
    """``(context_ids, continuation_ids, prefix_id)`` per request, lm-eval style (see the module docstring)."""
    ctxs: list[str] = []
    conts: list[str] = []
    for context, continuation in requests:
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces:
            continuation = context[-n_spaces:] + continuation
            context = context[:-n_spaces]
        ctxs.append(context)
        conts.append(continuation)
    nonempty = [i for i, c in enumerate(ctxs) if c]
    empty = [i for i, c in enumerate(ctxs) if not c]
    whole = _encode(tokenizer, [ctxs[i] + conts[i] for i in nonempty])
    ctx_ids = _encode(tokenizer, [ctxs[i] for i in nonempty])
    cont_only = _encode(tokenizer, [conts[i] for i in empty])
    out: list[tuple[list[int], list[int], int | None]] = [([], [], None)] * len(requests)
    for i, w, c in zip(nonempty, whole, ctx_ids):
        out[i] = (c, w[len(c):], bos_id)
    prefix = bos_id if bos_id is not None else (empty_context_prefix(tokenizer) if empty else None)
    for i, c in zip(empty, cont_only):
        out[i] = ([], c, prefix)
    for i, (_, cont, _) in enumerate(out):
        if not cont:
            raise BadArgument(f"request {i} has an empty continuation: {requests[i]!r}")
    return out


# ------------------------------------------------------------------------------------------ scoring


def score_continuations(
    lm: LoadedModel,
    requests: Sequence[tuple[str, str]],
    *,
    bos: str | int | None,
    batch_tokens: int = DEFAULT_BATCH_TOKENS,
    max_length: int | None = None,
    return_tokens: bool = False,
    pack: bool = True,
) -> list[ContinuationScore]:
    """Score ``log P(continuation | context)`` for each request, in the order given.

    Only what is needed is computed. The model input of a request is its token sequence without the last token;
    identical inputs run once, and an input that is a prefix of another input is not run at all: its
    log-probabilities are read from the longer one's forward pass (causal attention makes them identical). With
    ``pack`` (and a model that honours ``position_ids`` and a 4-D additive attention mask, checked once per
    model), the remaining inputs are sorted, laid side by side in rows of about :data:`ROW_TOKENS` tokens with no
    padding between them, and an input shares the columns of its common prefix with the input before it (a
    tree-shaped causal mask: each token attends to its own sequence's earlier tokens only). The LM head and the
    log-softmax run only at the positions read (``logits_to_keep`` where ``forward`` accepts it).

    Args:
        lm: a :class:`negdb.models.loading.LoadedModel` (``model``, ``tokenizer``, ``device``, ``config``).
        requests: ``(context, continuation)`` string pairs; the continuation must not be empty.
        bos: the BOS policy (see the module docstring): ``None``, a token string (e.g. ``"<|endoftext|>"``) or an id.
        batch_tokens: upper bound on ``rows * padded length`` of one forward pass (a longer request runs alone;
            ``1`` runs every distinct input alone, unpacked).
        max_length: the model's context (default :func:`max_context`); longer inputs lose tokens on the left,
            as in lm-eval; a continuation longer than it is refused.
        return_tokens: also return the per-token log-probabilities.
        pack: pack inputs into shared rows when the model supports it (``False``: one right-padded row each).
    """
    if batch_tokens < 1:
        raise BadArgument(f"batch_tokens must be >= 1, got {batch_tokens}")
    tokenizer = lm.tokenizer
    bos_id = resolve_bos(tokenizer, bos)
    max_len = max_length or max_context(lm)
    encoded = encode_requests(tokenizer, requests, bos_id)
    if not encoded:
        return []

    seqs: list[list[int]] = []
    n_cont: list[int] = []
    for i, (ctx, cont, prefix) in enumerate(encoded):
        if len(cont) > max_len:
            raise BadArgument(f"request {i}: its continuation has {len(cont)} tokens, more than the context {max_len}")
        full = ([prefix] if prefix is not None else []) + ctx + cont
        full = full[-(max_len + 1):]  # inputs are full[:-1], at most max_len tokens
        seqs.append(full)
        n_cont.append(len(cont))

    # Distinct inputs in lexicographic order; an input that is a prefix of another is a prefix of its successor,
    # and is read from the longest input along that chain (its host).
    inputs = [tuple(s[:-1]) for s in seqs]
    uniq = sorted(set(inputs))
    host_of = list(range(len(uniq)))
    for k in range(len(uniq) - 2, -1, -1):
        a, b = uniq[k], uniq[k + 1]
        if len(a) < len(b) and b[:len(a)] == a:
            host_of[k] = host_of[k + 1]
    host_ids = [k for k in range(len(uniq)) if host_of[k] == k]
    host_rank = {k: r for r, k in enumerate(host_ids)}
    hosts = [uniq[k] for k in host_ids]
    rank_of_input = {u: host_rank[host_of[k]] for k, u in enumerate(uniq)}

    caps = capabilities(lm)
    packed = pack and caps.tree and batch_tokens > 1
    if packed:
        width = min(ROW_TOKENS, batch_tokens)
        rows, cols = pack_rows(hosts, width, min(batch_tokens, MAX_SHARED_ROW), sliding_window(lm))
    else:
        rows, cols = pack_rows(hosts, 0, 0, 0)  # every host alone
    row_of_host = np.empty(len(hosts), dtype=np.int64)
    for r, row in enumerate(rows):
        row_of_host[row.hosts] = r

    # One entry per continuation token: the row and column whose logits predict it, and the token.
    offsets = np.concatenate([[0], np.cumsum(n_cont)])
    n_entries = int(offsets[-1])
    e_row = np.empty(n_entries, dtype=np.int64)
    e_col = np.empty(n_entries, dtype=np.int64)
    e_tgt = np.empty(n_entries, dtype=np.int64)
    for i, s in enumerate(seqs):
        h = rank_of_input[inputs[i]]
        n, k = len(s) - 1, n_cont[i]
        sl = slice(offsets[i], offsets[i + 1])
        e_row[sl] = row_of_host[h]
        e_col[sl] = cols[h][n - k:n]
        e_tgt[sl] = s[n + 1 - k:]

    widths = [len(row.tokens) for row in rows]
    pad_id = getattr(tokenizer, "pad_token_id", None)
    pad_id = int(pad_id) if pad_id is not None else 0
    device = lm.device
    dtype = model_dtype(lm.model)
    multi = [r for r, row in enumerate(rows) if len(row.hosts) > 1]
    single = [r for r, row in enumerate(rows) if len(row.hosts) == 1]
    batches = [(b, True) for b in padded_batches(widths, sorted(multi, key=lambda r: -widths[r]), batch_tokens)]
    batches += [(b, False) for b in padded_batches(widths, sorted(single, key=lambda r: -widths[r]), batch_tokens)]

    batch_of_row = np.empty(len(rows), dtype=np.int64)
    local_of_row = np.empty(len(rows), dtype=np.int64)
    for bi, (batch, _) in enumerate(batches):
        batch_of_row[batch] = bi
        local_of_row[batch] = np.arange(len(batch))
    e_batch = batch_of_row[e_row]
    by_batch = np.argsort(e_batch, kind="stable")
    bounds = np.searchsorted(e_batch[by_batch], np.arange(len(batches) + 1))

    tok_lp = np.empty(n_entries, dtype=np.float64)
    greedy = np.empty(n_entries, dtype=bool)
    for bi, (batch, tree) in enumerate(batches):
        sel = by_batch[bounds[bi]:bounds[bi + 1]]
        width = max(widths[r] for r in batch)
        ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        keep = torch.zeros((len(batch), width), dtype=torch.bool)
        loc = local_of_row[e_row[sel]]
        keep[torch.from_numpy(loc), torch.from_numpy(e_col[sel])] = True
        if tree:
            pos = torch.zeros((len(batch), width), dtype=torch.long)
            allowed = torch.zeros((len(batch), width, width), dtype=torch.bool)
            for r, ri in enumerate(batch):
                row = rows[ri]
                n = len(row.tokens)
                ids[r, :n] = torch.tensor(row.tokens, dtype=torch.long)
                pos[r, :n] = torch.tensor(row.positions, dtype=torch.long)
                for start, size, shared in row.segments:
                    seg = slice(start, start + size)
                    allowed[r, seg, seg] = torch.ones(size, size, dtype=torch.bool).tril_()
                    if len(shared):
                        allowed[r, seg, torch.from_numpy(shared)] = True
                pad = torch.arange(n, width)
                allowed[r, pad, pad] = True  # padding attends to itself only
            attn = additive_mask(allowed, dtype).to(device)
            pos = pos.to(device)
        else:
            attn = torch.zeros((len(batch), width), dtype=torch.long)
            for r, ri in enumerate(batch):
                n = widths[ri]
                ids[r, :n] = torch.tensor(rows[ri].tokens, dtype=torch.long)
                attn[r, :n] = 1
            attn = attn.to(device)
            pos = None
        logits = logits_at(lm, caps, ids.to(device), attn, pos, keep.to(device))
        # index of each entry's (row, column) among the kept positions (row-major)
        flat = (torch.cumsum(keep.flatten(), 0) - 1).numpy()
        idx = flat[loc * width + e_col[sel]]
        order = np.argsort(idx, kind="stable")
        cuts = np.searchsorted(idx[order], np.arange(0, len(logits) + LOGSOFTMAX_ROWS, LOGSOFTMAX_ROWS))
        with torch.inference_mode():  # (logits are inference tensors, updated in place below)
            for c, c0 in enumerate(range(0, len(logits), LOGSOFTMAX_ROWS)):  # bounded temporaries
                part = sel[order[cuts[c]:cuts[c + 1]]]
                rel = torch.from_numpy(idx[order[cuts[c]:cuts[c + 1]]] - c0).to(logits.device)
                x = logits[c0:c0 + LOGSOFTMAX_ROWS].float()
                tgt = torch.from_numpy(e_tgt[part]).to(x.device)
                picked = x[rel, tgt]
                top, top_id = x.max(dim=-1)  # the first maximal index, as argmax
                lse = top + x.sub_(top[:, None]).exp_().sum(dim=-1).log()  # x is overwritten (not needed again)
                tok_lp[part] = (picked - lse[rel]).double().cpu().numpy()
                greedy[part] = (top_id[rel] == tgt).cpu().numpy()

    starts = offsets[:-1]
    sums = np.add.reduceat(tok_lp, starts)
    all_greedy = np.logical_and.reduceat(greedy, starts)
    return [
        ContinuationScore(
            logprob_sum=float(sums[i]),
            n_tokens=n_cont[i],
            is_greedy=bool(all_greedy[i]),
            prefix_id=encoded[i][2],
            token_logprobs=tuple(tok_lp[offsets[i]:offsets[i + 1]].tolist()) if return_tokens else None,
        )
        for i in range(len(seqs))
    ]


# ---------------------------------------------------------------------------------------- perplexity


def perplexity(
    lm: LoadedModel,
    text: str,
    *,
    bos: str | int | None,
    window: int | None = None,
    batch_tokens: int = DEFAULT_BATCH_TOKENS,
) -> PerplexityResult:
    """Perplexity of ``text`` over non-overlapping windows (docs/DEFINITIONS.md, "Scores").

    The text is tokenized once (no special tokens) and cut into consecutive windows of ``window`` tokens (the
    model's context by default). Without a BOS the first token of each window is not predicted; with ``bos`` each
    window is the BOS followed by ``window - 1`` text tokens, all of them predicted.
    """
    from negdb.evals.windows import plan_windows, window_nll

    bos_id = resolve_bos(lm.tokenizer, bos)
    win = window or max_context(lm)
    ids = np.asarray(_encode(lm.tokenizer, [text])[0], dtype=np.int64)
    windows = plan_windows(ids.tolist(), window=win, bos_id=bos_id)
    nll = np.full(len(ids), np.nan)
    for w, tok_nll in zip(windows, window_nll(lm, windows, bos_id=bos_id, batch_tokens=batch_tokens)):
        first = w.offset if bos_id is not None else w.offset + 1  # text position of the first predicted token
        nll[first:first + len(tok_nll)] = tok_nll
    n_pred = int(np.isfinite(nll).sum())
    total = float(np.nansum(nll))
    ppl = math.exp(total / n_pred) if n_pred else float("nan")
    return PerplexityResult(total, n_pred, ppl, nll, ids, win, bos_id)
