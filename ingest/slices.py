"""Token slices: a corpus cut into fixed-length token windows for one tokenizer.

``make_slice`` tokenises the documents (no special tokens added), joins them into one stream with the
tokenizer's EOS id *between* documents (nothing is added when the tokenizer has no EOS), and cuts the
stream into consecutive non-overlapping windows of ``seq_len`` tokens. With ``bos_token_id`` every
window is ``[bos] + seq_len - 1`` stream tokens. The first ``n_tokens // seq_len`` windows form the
slice; a leftover partial window is never used.

Only as many documents are tokenised as the budget needs: documents are encoded in batches, in
order, until the stream is long enough. Each document is encoded on its own, so the stream prefix,
and hence the slice, is exactly the same as when every document is encoded; the slice depends only on
the corpus, the tokenizer, ``seq_len``, ``n_tokens`` and ``bos_token_id``.

When the corpus is too short for the budget the slice holds every full window there is and
``clamped`` is True (the caller should warn); a corpus too short for a single window is an error.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from negdb.errors import BadArgument, ModelLoadError

from .corpus import Corpus

__all__ = ["TokenSlice", "make_slice", "slice_id_for"]

_FIRST_BATCH = 8  # documents in the first encoding batch; later batches double
_MAX_BATCH = 256


@dataclass(frozen=True, eq=False)
class TokenSlice:
    """``tokens`` is a read-only ``(n_windows, seq_len)`` int32 array; everything else is metadata."""

    slice_id: str  # 16 hex chars: sha256 over the int32 token bytes, seq_len and bos
    dataset: str  # Corpus.name
    source: str  # Corpus.source
    tokenizer: str  # the tokenizer_name passed in
    seq_len: int
    n_windows: int
    n_tokens: int  # n_windows * seq_len
    token_sha256: str  # sha256 of the little-endian int32 token bytes
    text_sha256: str  # Corpus.text_sha256
    bos_token_id: int | None
    clamped: bool  # True when the corpus had fewer windows than n_tokens asked for
    tokens: np.ndarray = field(repr=False)

    def meta(self) -> dict[str, Any]:
        """Every field except ``tokens`` (JSON-serialisable)."""
        return {
            "slice_id": self.slice_id,
            "dataset": self.dataset,
            "source": self.source,
            "tokenizer": self.tokenizer,
            "seq_len": self.seq_len,
            "n_windows": self.n_windows,
            "n_tokens": self.n_tokens,
            "token_sha256": self.token_sha256,
            "text_sha256": self.text_sha256,
            "bos_token_id": self.bos_token_id,
            "clamped": self.clamped,
        }


def slice_id_for(tokens: np.ndarray, seq_len: int, bos_token_id: int | None) -> str:
    """The 16-hex-digit id of a ``(n_windows, seq_len)`` token array."""
    h = hashlib.sha256(np.ascontiguousarray(tokens, dtype="<i4").tobytes())
    h.update(f"|seq_len={int(seq_len)}|bos={'none' if bos_token_id is None else int(bos_token_id)}".encode())
    return h.hexdigest()[:16]


def _encode(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    try:
        out = tokenizer(texts, add_special_tokens=False, return_attention_mask=False,
                        return_token_type_ids=False)
    except TypeError:  # tokenizers that do not take the return_* flags
        out = tokenizer(texts, add_special_tokens=False)
    ids = out["input_ids"]
    return [list(x) for x in ids]


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise BadArgument(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def make_slice(
    corpus: Corpus,
    tokenizer: Any,
    *,
    tokenizer_name: str,
    seq_len: int,
    n_tokens: int,
    bos_token_id: int | None = None,
) -> TokenSlice:
    """Cut ``corpus`` into the first ``n_tokens // seq_len`` windows of ``seq_len`` tokens."""
    seq_len = _check_int("seq_len", seq_len, 2 if bos_token_id is not None else 1)
    n_tokens = _check_int("n_tokens", n_tokens, 1)
    if bos_token_id is not None:
        bos_token_id = _check_int("bos_token_id", bos_token_id, 0)
    if n_tokens < seq_len:
        raise BadArgument(f"n_tokens ({n_tokens}) is smaller than seq_len ({seq_len}): "
                         f"ask for at least {seq_len} tokens or use a shorter seq_len")
    n_windows = n_tokens // seq_len
    per_window = seq_len - (1 if bos_token_id is not None else 0)
    needed = n_windows * per_window

    eos = getattr(tokenizer, "eos_token_id", None)
    eos = None if eos is None else int(eos)

    # Build the stream doc0 [eos] doc1 [eos] doc2 ... only as far as the budget needs.
    pieces: list[np.ndarray] = []
    have = 0
    docs = corpus.documents
    i, batch = 0, _FIRST_BATCH
    while have < needed and i < len(docs):
        chunk = list(docs[i:i + batch])
        for j, ids in enumerate(_encode(tokenizer, chunk)):
            if eos is not None and i + j > 0:
                pieces.append(np.array([eos], dtype=np.int64))
                have += 1
            arr = np.asarray(ids, dtype=np.int64)
            pieces.append(arr)
            have += arr.size
        i += len(chunk)
        batch = min(batch * 2, _MAX_BATCH)
    stream = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int64)

    available = stream.size // per_window
    if available == 0:
        raise BadArgument(f"corpus {corpus.name!r} has only {stream.size} tokens with this tokenizer, "
                         f"fewer than one window of {seq_len}; use a longer corpus or a shorter seq_len")
    clamped = available < n_windows
    if clamped:
        n_windows = available
    if stream.size and (stream.min() < 0 or stream.max() > np.iinfo(np.int32).max):
        raise ModelLoadError("token ids do not fit in int32; this tokenizer is not supported")

    body = stream[: n_windows * per_window].astype(np.int32).reshape(n_windows, per_window)
    if bos_token_id is not None:
        tokens = np.empty((n_windows, seq_len), dtype=np.int32)
        tokens[:, 0] = bos_token_id
        tokens[:, 1:] = body
    else:
        tokens = np.ascontiguousarray(body)
    tokens.flags.writeable = False

    token_bytes = tokens.astype("<i4", copy=False).tobytes()
    return TokenSlice(
        slice_id=slice_id_for(tokens, seq_len, bos_token_id),
        dataset=corpus.name,
        source=corpus.source,
        tokenizer=tokenizer_name,
        seq_len=seq_len,
        n_windows=n_windows,
        n_tokens=n_windows * seq_len,
        token_sha256=hashlib.sha256(token_bytes).hexdigest(),
        text_sha256=corpus.text_sha256,
        bos_token_id=bos_token_id,
        clamped=clamped,
        tokens=tokens,
    )
