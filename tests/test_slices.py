"""negdb.ingest.slices: windows, ids, clamping, errors (with a tiny tokenizer built offline here)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re

import numpy as np
import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from negdb.errors import BadArgument
from negdb.ingest.corpus import Corpus, load_corpus
from negdb.ingest.slices import TokenSlice, make_slice

TRAIN = [
    "The European lobster is a species of clawed lobster from the eastern Atlantic Ocean.",
    "It may grow to a length of 60 cm and a mass of 6 kilograms.",
    "In life, the lobsters are blue, only becoming red on cooking.",
    "Mating occurs in the summer, producing eggs which are carried by the females.",
]
DOCS = (
    "the lobster is blue",
    "a mass of 6 kilograms, in the summer",
    "eggs which are carried by the females for up to a year before hatching",
    "red",
    "The European lobster may grow to a length of 60 cm.",
)


def _tiny_tokenizer(*, with_eos: bool = True) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=["<eos>", "<bos>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(TRAIN, trainer=trainer)
    kw = {"eos_token": "<eos>", "bos_token": "<bos>"} if with_eos else {"bos_token": "<bos>"}
    return PreTrainedTokenizerFast(tokenizer_object=tok, **kw)


@pytest.fixture(scope="module")
def tok():
    return _tiny_tokenizer()


@pytest.fixture(scope="module")
def corpus():
    return _corpus(DOCS)


def _corpus(docs, name="tiny") -> Corpus:
    digest = hashlib.sha256("\n\n".join(docs).encode("utf-8")).hexdigest()
    return Corpus(name=name, source="memory", documents=tuple(docs), text_sha256=digest)


def _reference(docs, tokenizer, seq_len, n_windows, bos=None) -> np.ndarray:
    """Join + cut by hand: one document at a time, EOS between documents."""
    stream: list[int] = []
    for i, d in enumerate(docs):
        if i and tokenizer.eos_token_id is not None:
            stream.append(tokenizer.eos_token_id)
        stream.extend(tokenizer.encode(d, add_special_tokens=False))
    per = seq_len - (bos is not None)
    rows = [stream[w * per:(w + 1) * per] for w in range(n_windows)]
    assert all(len(r) == per for r in rows)
    if bos is not None:
        rows = [[bos] + r for r in rows]
    return np.array(rows, dtype=np.int32)


def _stream_len(docs, tokenizer) -> int:
    n = sum(len(tokenizer.encode(d, add_special_tokens=False)) for d in docs)
    return n + (len(docs) - 1 if tokenizer.eos_token_id is not None else 0)


def test_tiny_tokenizer_is_usable(tok):
    assert tok.is_fast and tok.eos_token_id is not None and tok.bos_token_id is not None
    assert tok.eos_token_id != tok.bos_token_id
    assert tok.decode(tok.encode("the lobster", add_special_tokens=False)) == "the lobster"


@pytest.mark.parametrize("bos", [None, "bos"])
def test_windows_equal_join_and_cut(tok, corpus, bos):
    bos_id = tok.bos_token_id if bos else None
    seq_len, n_tokens = 8, 40
    s = make_slice(corpus, tok, tokenizer_name="tiny", seq_len=seq_len, n_tokens=n_tokens, bos_token_id=bos_id)
    assert isinstance(s, TokenSlice)
    assert s.tokens.dtype == np.int32 and s.tokens.shape == (5, 8)
    assert np.array_equal(s.tokens, _reference(DOCS, tok, seq_len, 5, bos=bos_id))
    assert (s.n_windows, s.n_tokens, s.seq_len, s.clamped) == (5, 40, 8, False)
    assert (s.dataset, s.source, s.tokenizer, s.text_sha256) == ("tiny", "memory", "tiny", corpus.text_sha256)
    assert s.bos_token_id == bos_id
    assert s.token_sha256 == hashlib.sha256(s.tokens.astype("<i4").tobytes()).hexdigest()
    eos_count = int((s.tokens == tok.eos_token_id).sum())
    assert eos_count >= 2  # documents are joined with EOS
    if bos_id is not None:
        assert (s.tokens[:, 0] == bos_id).all()


def test_no_eos_means_no_separator(corpus):
    plain = _tiny_tokenizer(with_eos=False)
    assert plain.eos_token_id is None
    s = make_slice(corpus, plain, tokenizer_name="tiny-noeos", seq_len=4, n_tokens=16)
    assert np.array_equal(s.tokens, _reference(DOCS, plain, 4, 4))


def test_only_needed_documents_change_nothing(tok):
    docs = [f"{DOCS[i % len(DOCS)]} number {i}" for i in range(300)]
    c = _corpus(docs)
    full_windows = _stream_len(docs, tok) // 16
    big = make_slice(c, tok, tokenizer_name="tiny", seq_len=16, n_tokens=10**7)
    assert big.clamped and big.n_windows == full_windows
    assert np.array_equal(big.tokens, _reference(docs, tok, 16, full_windows))
    for n_windows in (1, 3, 17, 60):
        small = make_slice(c, tok, tokenizer_name="tiny", seq_len=16, n_tokens=16 * n_windows)
        assert not small.clamped
        assert np.array_equal(small.tokens, big.tokens[:n_windows])


def test_slice_id_stable_and_sensitive(tok, corpus):
    def sid(**kw):
        args = {"tokenizer_name": "tiny", "seq_len": 8, "n_tokens": 32, **kw}
        return make_slice(corpus, tok, **args).slice_id

    base = sid()
    assert re.fullmatch(r"[0-9a-f]{16}", base)
    assert sid() == base
    assert make_slice(corpus, _tiny_tokenizer(), tokenizer_name="tiny", seq_len=8, n_tokens=32).slice_id == base
    assert sid(n_tokens=39) == base  # same windows (39 // 8 == 4)
    assert sid(tokenizer_name="renamed") == base  # the id hashes token ids, not names
    others = {sid(seq_len=4), sid(seq_len=16), sid(n_tokens=40), sid(n_tokens=24),
              sid(bos_token_id=tok.bos_token_id), sid(bos_token_id=tok.eos_token_id)}
    assert base not in others and len(others) == 6


def test_clamping(tok, corpus):
    available = _stream_len(DOCS, tok) // 8
    s = make_slice(corpus, tok, tokenizer_name="tiny", seq_len=8, n_tokens=8 * (available + 50))
    assert s.clamped and s.n_windows == available and s.n_tokens == 8 * available
    assert np.array_equal(s.tokens, _reference(DOCS, tok, 8, available))
    exact = make_slice(corpus, tok, tokenizer_name="tiny", seq_len=8, n_tokens=8 * available)
    assert not exact.clamped and exact.slice_id == s.slice_id


def test_errors(tok, corpus):
    with pytest.raises(BadArgument, match="smaller than seq_len"):
        make_slice(corpus, tok, tokenizer_name="tiny", seq_len=64, n_tokens=63)
    with pytest.raises(BadArgument, match="fewer than one window"):
        make_slice(corpus, tok, tokenizer_name="tiny", seq_len=4096, n_tokens=4096)
    with pytest.raises(BadArgument, match="seq_len"):
        make_slice(corpus, tok, tokenizer_name="tiny", seq_len=0, n_tokens=8)
    with pytest.raises(BadArgument, match="seq_len"):
        make_slice(corpus, tok, tokenizer_name="tiny", seq_len=1, n_tokens=8, bos_token_id=1)


def test_meta_and_immutability(tok, corpus):
    s = make_slice(corpus, tok, tokenizer_name="tiny", seq_len=8, n_tokens=16, bos_token_id=tok.bos_token_id)
    meta = s.meta()
    assert "tokens" not in meta
    assert meta == {f.name: getattr(s, f.name) for f in dataclasses.fields(s) if f.name != "tokens"}
    json.dumps(meta)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.seq_len = 4  # type: ignore[misc]
    with pytest.raises(ValueError):
        s.tokens[0, 0] = 0


def test_wikitext_default_corpus(tok):
    c = load_corpus("wikitext-2")
    s = make_slice(c, tok, tokenizer_name="tiny", seq_len=128, n_tokens=128 * 20)
    assert s.dataset == "wikitext-2:valid" and s.text_sha256 == c.text_sha256
    assert np.array_equal(s.tokens, _reference(c.documents[:3], tok, 128, 20))
    assert tok.decode(s.tokens[0]).startswith("= Homarus gammarus =\n\nHomarus gammarus, known")
