"""Batch-invariant log-likelihood scoring: log P(continuation | context) and windowed perplexity.

Tokenization follows lm-evaluation-harness (``HFLM._encode_pair``): trailing whitespace of the context moves to
the front of the continuation, ``context + continuation`` is encoded once and split at the length of the encoded
context, and no special tokens are added by the tokenizer. The BOS policy is explicit:

- ``bos=None``: nothing is prepended, except that an empty context becomes the tokenizer's BOS token, or its EOS
  token when it has no BOS (lm-eval's ``prefix_token_id``), so that the first continuation token has a context;
- ``bos=<token string or id>``: that token is prepended to every request.

Each :class:`ContinuationScore` records the token that was prepended (``prefix_id``, ``None`` for none).

Requests are sorted by length (longest first), packed into right-padded batches of at most ``batch_tokens``
padded tokens, and run with one forward pass per batch; log-softmax is taken only at the continuation positions.
Right padding with causal attention leaves the real positions unchanged, so scores do not depend on batching.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from negdb.errors import NegdbError

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
        raise NegdbError("bos must be None, a token string or a token id")
    if isinstance(bos, int):
        if bos < 0 or bos >= len(tokenizer):
            raise NegdbError(f"bos token id {bos} is outside the tokenizer's vocabulary ({len(tokenizer)} tokens)")
        return bos
    vocab = tokenizer.get_vocab()
    if bos not in vocab:
        raise NegdbError(f"bos token {bos!r} is not in the tokenizer's vocabulary")
    return int(vocab[bos])


def empty_context_prefix(tokenizer: Any) -> int:
    """The token that stands for an empty context (lm-eval): BOS, else EOS."""
    for tid in (getattr(tokenizer, "bos_token_id", None), getattr(tokenizer, "eos_token_id", None)):
        if tid is not None:
            return int(tid)
    raise NegdbError("an empty context needs a BOS or EOS token and the tokenizer has neither: pass bos=")


def max_context(lm: Any) -> int:
    """The model's context length in tokens (``max_position_embeddings`` or the like)."""
    cfg = lm.config
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(cfg, key, None)
        if isinstance(value, int) and value > 0:
            return value
    value = getattr(lm.tokenizer, "model_max_length", None)
    if isinstance(value, int) and 0 < value < 10**7:
        return value
    raise NegdbError("cannot tell the model's context length: pass max_length=")


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
            raise NegdbError(f"request {i} has an empty continuation: {requests[i]!r}")
    return out


# ------------------------------------------------------------------------------------------ scoring


def _forward_logits(lm: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        out = lm.model(input_ids=input_ids, attention_mask=attention_mask)
    return out.logits if hasattr(out, "logits") else out[0]


def _batches(lengths: list[int], order: list[int], batch_tokens: int) -> list[list[int]]:
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


def score_continuations(
    lm: Any,
    requests: Sequence[tuple[str, str]],
    *,
    bos: str | int | None,
    batch_tokens: int = DEFAULT_BATCH_TOKENS,
    max_length: int | None = None,
    return_tokens: bool = False,
) -> list[ContinuationScore]:
    """Score ``log P(continuation | context)`` for each request, in the order given.

    Args:
        lm: a :class:`negdb.models.loading.LoadedModel` (``model``, ``tokenizer``, ``device``, ``config``).
        requests: ``(context, continuation)`` string pairs; the continuation must not be empty.
        bos: the BOS policy (see the module docstring): ``None``, a token string (e.g. ``"<|endoftext|>"``) or an id.
        batch_tokens: upper bound on ``rows * padded length`` of one forward pass (a longer request runs alone).
        max_length: the model's context (default :func:`max_context`); longer inputs lose tokens on the left,
            as in lm-eval; a continuation longer than it is refused.
        return_tokens: also return the per-token log-probabilities.
    """
    if batch_tokens < 1:
        raise NegdbError(f"batch_tokens must be >= 1, got {batch_tokens}")
    tokenizer = lm.tokenizer
    bos_id = resolve_bos(tokenizer, bos)
    max_len = max_length or max_context(lm)
    encoded = encode_requests(tokenizer, requests, bos_id)

    seqs: list[list[int]] = []
    n_cont: list[int] = []
    for i, (ctx, cont, prefix) in enumerate(encoded):
        if len(cont) > max_len:
            raise NegdbError(f"request {i}: its continuation has {len(cont)} tokens, more than the context {max_len}")
        full = ([prefix] if prefix is not None else []) + ctx + cont
        full = full[-(max_len + 1):]  # inputs are full[:-1], at most max_len tokens
        seqs.append(full)
        n_cont.append(len(cont))
    in_len = [len(s) - 1 for s in seqs]
    order = sorted(range(len(seqs)), key=lambda i: (-in_len[i], tuple(seqs[i])))
    pad_id = getattr(tokenizer, "pad_token_id", None)
    pad_id = int(pad_id) if pad_id is not None else 0
    device = lm.device

    results: list[ContinuationScore | None] = [None] * len(seqs)
    for batch in _batches(in_len, order, batch_tokens):
        width = max(in_len[i] for i in batch)
        ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        rows, cols, targets = [], [], []
        for r, i in enumerate(batch):
            s = seqs[i]
            n = in_len[i]
            ids[r, :n] = torch.tensor(s[:-1], dtype=torch.long)
            mask[r, :n] = 1
            start = n - n_cont[i]  # logits at position p predict token p + 1
            rows.extend([r] * n_cont[i])
            cols.extend(range(start, n))
            targets.extend(s[-n_cont[i]:])
        logits = _forward_logits(lm, ids.to(device), mask.to(device))
        picked = logits[torch.tensor(rows, device=logits.device), torch.tensor(cols, device=logits.device)]
        logp = torch.log_softmax(picked.float(), dim=-1)
        tgt = torch.tensor(targets, device=logp.device)
        tok_lp = logp.gather(1, tgt[:, None])[:, 0].double().cpu().numpy()
        greedy = (logp.argmax(dim=-1) == tgt).cpu().numpy()
        at = 0
        for i in batch:
            k = n_cont[i]
            lp = tok_lp[at:at + k]
            results[i] = ContinuationScore(
                logprob_sum=float(lp.sum()),
                n_tokens=k,
                is_greedy=bool(greedy[at:at + k].all()),
                prefix_id=encoded[i][2],
                token_logprobs=tuple(float(x) for x in lp) if return_tokens else None,
            )
            at += k
    return results  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------- perplexity


def perplexity(
    lm: Any,
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
    tokenizer = lm.tokenizer
    bos_id = resolve_bos(tokenizer, bos)
    win = window or max_context(lm)
    if win < 2:
        raise NegdbError(f"window must be >= 2 tokens, got {win}")
    ids = np.asarray(_encode(tokenizer, [text])[0], dtype=np.int64)
    step = win - 1 if bos_id is not None else win
    pieces: list[tuple[int, list[int]]] = []  # (offset of the window's first text token, model input tokens)
    for off in range(0, len(ids), step):
        chunk = ids[off:off + step].tolist()
        seq = ([bos_id] + chunk) if bos_id is not None else chunk
        if len(seq) >= 2:
            pieces.append((off, seq))
    nll = np.full(len(ids), np.nan)
    lengths = [len(seq) for _, seq in pieces]
    order = sorted(range(len(pieces)), key=lambda i: -lengths[i])
    pad_id = getattr(tokenizer, "pad_token_id", None)
    pad_id = int(pad_id) if pad_id is not None else 0
    for batch in _batches(lengths, order, batch_tokens):
        width = max(lengths[i] for i in batch)
        inp = torch.full((len(batch), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for r, i in enumerate(batch):
            inp[r, :lengths[i]] = torch.tensor(pieces[i][1], dtype=torch.long)
            mask[r, :lengths[i]] = 1
        logits = _forward_logits(lm, inp.to(lm.device), mask.to(lm.device))
        for r, i in enumerate(batch):
            off, seq = pieces[i]
            n = lengths[i]
            lp = torch.log_softmax(logits[r, : n - 1].float(), dim=-1)
            tgt = torch.tensor(seq[1:], device=lp.device)
            tok_nll = (-lp.gather(1, tgt[:, None])[:, 0]).double().cpu().numpy()
            first = off if bos_id is not None else off + 1  # text position of the first predicted token
            nll[first:first + len(tok_nll)] = tok_nll
    n_pred = int(np.isfinite(nll).sum())
    total = float(np.nansum(nll))
    ppl = math.exp(total / n_pred) if n_pred else float("nan")
    return PerplexityResult(total, n_pred, ppl, nll, ids, win, bos_id)
