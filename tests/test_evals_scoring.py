"""negdb.evals.scoring against naive per-request references on tiny models."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from negdb.errors import BadArgument
from negdb.evals.packing import Caps, capabilities
from negdb.evals.scoring import perplexity, score_continuations
from negdb.models.loading import from_model
from tiny_models import SENTENCES, TINY_CONFIGS, tiny_model, tiny_tokenizer

REQUESTS = [
    ("The quick brown fox", " jumps over the lazy dog."),
    ("Hello world,", " this is negdb"),
    ("", " Wasserstein neurons have heavy negative tails"),
    ("Small models are cheap", " to build"),
    ("", " Hello"),
    ("Wasserstein neurons have heavy negative tails before the nonlinearity. Small models", " are cheap to build."),
    ("a", " b c d e f g h"),
    ("The quick brown fox jumps over the lazy dog. Hello world, this is", " negdb, a neuron statistics database."),
]


@pytest.fixture(scope="module", params=["gpt_neox", "llama", "gpt2"])
def lm(request):
    return from_model(tiny_model(request.param, seed=3), tiny_tokenizer())


def _naive(lm, context: str, continuation: str, prefix: int | None) -> tuple[float, int, bool]:
    """One request alone: encode as lm-eval does, one unpadded forward, log_softmax everywhere, sum."""
    tok = lm.tokenizer
    if context:
        ctx = tok(context, add_special_tokens=False)["input_ids"]
        cont = tok(context + continuation, add_special_tokens=False)["input_ids"][len(ctx):]
    else:
        ctx, cont = [], tok(continuation, add_special_tokens=False)["input_ids"]
    full = ([prefix] if prefix is not None else []) + ctx + cont
    with torch.no_grad():
        logits = lm.model(torch.tensor([full])).logits[0].double()
    logp = torch.log_softmax(logits, dim=-1)
    n = len(cont)
    pos = range(len(full) - 1 - n, len(full) - 1)
    lps = [float(logp[p, full[p + 1]]) for p in pos]
    greedy = all(int(logits[p].argmax()) == full[p + 1] for p in pos)
    return sum(lps), n, greedy


def test_matches_naive_forward_without_bos(lm):
    got = score_continuations(lm, REQUESTS, bos=None, batch_tokens=64)
    for (ctx, cont), s in zip(REQUESTS, got):
        prefix = 0 if ctx == "" else None  # empty context -> the tokenizer's BOS (lm-eval)
        ref, n, greedy = _naive(lm, ctx, cont, prefix)
        assert s.prefix_id == prefix
        assert s.n_tokens == n
        assert s.logprob_sum == pytest.approx(ref, abs=1e-4)
        assert s.is_greedy == greedy


def test_matches_naive_forward_with_bos(lm):
    got = score_continuations(lm, REQUESTS, bos="<|endoftext|>", return_tokens=True)
    for (ctx, cont), s in zip(REQUESTS, got):
        ref, n, _ = _naive(lm, ctx, cont, 0)
        assert s.prefix_id == 0
        assert s.logprob_sum == pytest.approx(ref, abs=1e-4)
        assert len(s.token_logprobs) == n and sum(s.token_logprobs) == pytest.approx(s.logprob_sum)
    by_id = score_continuations(lm, REQUESTS, bos=0)
    assert [s.logprob_sum for s in by_id] == pytest.approx([s.logprob_sum for s in got], abs=1e-6)


def test_bos_changes_scores_of_nonempty_contexts(lm):
    with_bos = score_continuations(lm, REQUESTS[:2], bos=0)
    without = score_continuations(lm, REQUESTS[:2], bos=None)
    assert all(abs(a.logprob_sum - b.logprob_sum) > 1e-6 for a, b in zip(with_bos, without))


def test_batch_and_padding_invariance(lm):
    rng = random.Random(0)
    reqs = [(s[: rng.randint(0, 20)], " " + SENTENCES[rng.randrange(4)][: rng.randint(3, 40)].strip())
            for s in SENTENCES * 6]
    reqs = [(c.rstrip(), k) for c, k in reqs]
    one = score_continuations(lm, reqs, bos=None, batch_tokens=1)  # each request alone, no padding
    many = score_continuations(lm, reqs, bos=None, batch_tokens=100_000)  # one padded batch
    perm = list(range(len(reqs)))
    rng.shuffle(perm)
    shuffled = score_continuations(lm, [reqs[i] for i in perm], bos=None, batch_tokens=48)
    a = np.array([s.logprob_sum for s in one])
    np.testing.assert_allclose(np.array([s.logprob_sum for s in many]), a, atol=1e-4, rtol=0)
    back = np.empty(len(reqs))
    back[perm] = [s.logprob_sum for s in shuffled]
    np.testing.assert_allclose(back, a, atol=1e-4, rtol=0)
    assert [s.is_greedy for s in one] == [s.is_greedy for s in many]


def test_trailing_space_of_context_moves_to_continuation():
    lm = from_model(tiny_model("gpt_neox"), tiny_tokenizer())
    a, b = score_continuations(lm, [("The quick ", "brown fox"), ("The quick", " brown fox")], bos=None)
    assert a == b


def test_empty_context_falls_back_to_eos_without_bos_token():
    tok = tiny_tokenizer()
    tok.bos_token = None
    assert tok.bos_token_id is None and tok.eos_token_id == 0
    lm = from_model(tiny_model("gpt_neox"), tok)
    (s,) = score_continuations(lm, [("", " Hello world")], bos=None)
    assert s.prefix_id == 0


def test_bad_bos_and_empty_continuation_are_refused():
    lm = from_model(tiny_model("gpt_neox"), tiny_tokenizer())
    with pytest.raises(BadArgument, match="not in the tokenizer"):
        score_continuations(lm, REQUESTS[:1], bos="<s>")
    with pytest.raises(BadArgument, match="outside"):
        score_continuations(lm, REQUESTS[:1], bos=10**6)
    with pytest.raises(BadArgument, match="empty continuation"):
        score_continuations(lm, [("Hello", "")], bos=None)


def test_long_requests_are_truncated_on_the_left():
    lm = from_model(tiny_model("gpt_neox"), tiny_tokenizer())
    ctx = " ".join(SENTENCES) * 3
    (s,) = score_continuations(lm, [(ctx, " Hello world")], bos=None, max_length=32)
    tok = lm.tokenizer
    whole = tok(ctx + " Hello world", add_special_tokens=False)["input_ids"]
    n = s.n_tokens
    full = whole[-33:]
    with torch.no_grad():
        logp = torch.log_softmax(lm.model(torch.tensor([full[:-1]])).logits[0].double(), -1)
    ref = sum(float(logp[p, full[p + 1]]) for p in range(32 - n, 32))
    assert s.logprob_sum == pytest.approx(ref, abs=1e-4)


def _ppl_reference(lm, text: str, window: int, bos: int | None) -> tuple[float, int]:
    ids = lm.tokenizer(text, add_special_tokens=False)["input_ids"]
    step = window - 1 if bos is not None else window
    nll, n = 0.0, 0
    for off in range(0, len(ids), step):
        seq = ([bos] if bos is not None else []) + ids[off:off + step]
        if len(seq) < 2:
            continue
        x = torch.tensor([seq])
        with torch.no_grad():
            logits = lm.model(x).logits[0, :-1]
        nll += float(F.cross_entropy(logits.double(), x[0, 1:], reduction="sum"))
        n += len(seq) - 1
    return nll, n


@pytest.mark.parametrize("bos", [None, 0])
@pytest.mark.parametrize("window", [16, 37])
def test_perplexity_matches_cross_entropy_per_window(lm, bos, window):
    text = " ".join(SENTENCES * 5)
    res = perplexity(lm, text, bos=bos, window=window, batch_tokens=50)
    nll, n = _ppl_reference(lm, text, window, bos)
    assert res.n_predicted == n
    assert res.nll_sum == pytest.approx(nll, abs=1e-3)
    assert res.ppl == pytest.approx(math.exp(nll / n), rel=1e-5)
    assert res.per_token_nll.shape == res.token_ids.shape
    assert np.isfinite(res.per_token_nll).sum() == n
    if bos is None:  # the first token of every window is not predicted
        assert np.isnan(res.per_token_nll[::window]).all()
    else:
        assert res.bos_id == 0 and np.isfinite(res.per_token_nll).all()
    same = perplexity(lm, text, bos=bos, window=window, batch_tokens=10_000)
    np.testing.assert_allclose(same.per_token_nll, res.per_token_nll, atol=1e-4, equal_nan=True)


# ------------------------------------------------------------------ reuse, packing and logits_to_keep paths

PASSAGE = " ".join(SENTENCES[1:3]) + " Question: is it quick?"  # ~70 tokens (the tiny context is 128)
REUSE = [
    ("The quick brown fox", " jumps over the lazy dog."),
    ("The quick brown fox", " jumps over the lazy dog."),  # duplicate
    ("The quick brown fox", " jumps over"),  # input is a prefix of the first one's input
    ("The quick brown", " fox"),  # ... and of this one's prefix chain
    ("The quick brown fox jumps", " over the lazy dog."),  # same tokens, split elsewhere
    (PASSAGE, " quick"),  # single-token continuations sharing a long context (BoolQ-like): one input
    (PASSAGE, " the"),
    (PASSAGE, "."),
    (PASSAGE, " Hello world"),  # a multi-token choice on the same context
    ("", " Hello world, this is negdb"),  # minimal pair sharing a prefix
    ("", " Hello world, this is a neuron database"),
    ("", " Hello"),  # input [BOS]: a prefix of every empty-context input
    ("Small models are", " cheap to build and quick to run in tests."),
    ("Wasserstein neurons have heavy negative tails", " before the nonlinearity."),
]


def _one_by_one(lm, reqs, bos, **kw):
    """The un-optimised reference: each request alone, unpacked, no padding."""
    return [score_continuations(lm, [r], bos=bos, batch_tokens=1, pack=False, **kw)[0] for r in reqs]


def _assert_same(got, ref, atol=1e-4):
    assert [s.n_tokens for s in got] == [s.n_tokens for s in ref]
    assert [s.prefix_id for s in got] == [s.prefix_id for s in ref]
    np.testing.assert_allclose([s.logprob_sum for s in got], [s.logprob_sum for s in ref], atol=atol, rtol=0)
    assert [s.is_greedy for s in got] == [s.is_greedy for s in ref]


def test_single_token_choices_share_one_input():
    tok = tiny_tokenizer()
    for word in (" quick", " the", "."):
        assert len(tok(PASSAGE + word, add_special_tokens=False)["input_ids"]) == \
            len(tok(PASSAGE, add_special_tokens=False)["input_ids"]) + 1


@pytest.mark.parametrize("bos", [None, 0])
def test_reuse_and_packing_match_one_request_at_a_time(lm, bos):
    ref = _one_by_one(lm, REUSE, bos, return_tokens=True)
    for (ctx, cont), s in zip(REUSE, ref):  # the reference itself against a plain full forward
        prefix = 0 if (bos is not None or ctx == "") else None
        assert s.logprob_sum == pytest.approx(_naive(lm, ctx, cont, prefix)[0], abs=1e-4)
    for kw in ({}, {"pack": False}, {"batch_tokens": 40}, {"batch_tokens": 100_000}):
        got = score_continuations(lm, REUSE, bos=bos, return_tokens=True, **kw)
        _assert_same(got, ref)
        for g, r in zip(got, ref):
            np.testing.assert_allclose(g.token_logprobs, r.token_logprobs, atol=1e-4, rtol=0)
    assert ref[0] == ref[1]


@pytest.mark.parametrize("model_type", sorted(TINY_CONFIGS))
def test_packed_rows_on_every_family(model_type):
    lm = from_model(tiny_model(model_type, seed=5), tiny_tokenizer())
    assert capabilities(lm) == Caps(keep=True, tree=True, no_cache=True)
    rng = random.Random(1)
    reqs = REUSE + [("", " " + SENTENCES[rng.randrange(4)][: rng.randint(4, 60)].strip()) for _ in range(20)]
    ref = _one_by_one(lm, reqs, None)
    _assert_same(score_continuations(lm, reqs, bos=None), ref)
    _assert_same(score_continuations(lm, reqs, bos=None, batch_tokens=64), ref)


def test_small_rows_long_shared_prefixes_and_chunked_softmax(lm, monkeypatch):
    import negdb.evals.scoring as scoring

    reqs = [(PASSAGE, " " + s) for s in SENTENCES] + [(PASSAGE[:60], " " + s) for s in SENTENCES] + REUSE
    ref = _one_by_one(lm, reqs, None)
    for row_tokens, softmax_rows in ((1, 1024), (8, 5), (32, 1)):
        monkeypatch.setattr(scoring, "ROW_TOKENS", row_tokens)
        monkeypatch.setattr(scoring, "LOGSOFTMAX_ROWS", softmax_rows)
        _assert_same(score_continuations(lm, reqs, bos=None), ref)
        _assert_same(score_continuations(lm, reqs, bos=None, batch_tokens=200), ref)


class _Counter:
    """Records the input shape of every forward pass of a model."""

    def __init__(self, model):
        self.calls: list[tuple[tuple[int, ...], torch.Tensor | None]] = []
        self.handle = model.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs):
        self.calls.append((tuple(kwargs["input_ids"].shape), kwargs.get("attention_mask")))

    def real_tokens(self) -> int:
        return sum(int(m.sum()) if m is not None and m.ndim == 2 else s[0] * s[1] for s, m in self.calls)


def _n_input(lm, ctx, cont, prefix=None):
    tok = lm.tokenizer
    return len(([prefix] if prefix is not None else []) + tok(ctx + cont, add_special_tokens=False)["input_ids"]) - 1


def test_only_needed_inputs_are_run():
    lm = from_model(tiny_model("llama", seed=2), tiny_tokenizer())
    score_continuations(lm, REQUESTS[:1], bos=None)  # the one-time capability probe
    cases = [
        ([REUSE[0]] * 5, _n_input(lm, *REUSE[0])),  # duplicates run once
        (REUSE[:5], _n_input(lm, *REUSE[0])),  # prefixes and re-splits read the longest input
        (REUSE[5:8], _n_input(lm, PASSAGE, " quick")),  # single-token choices: the context alone
    ]
    for reqs, n in cases:
        counter = _Counter(lm.model)
        try:
            score_continuations(lm, reqs, bos=None, pack=False)
        finally:
            counter.handle.remove()
        assert len(counter.calls) == 1 and counter.real_tokens() == n
    # packed: a minimal pair runs as one row of len(a) + len(b) - common prefix tokens
    a, b = REUSE[9], REUSE[10]
    ta = [0] + lm.tokenizer(a[1], add_special_tokens=False)["input_ids"][:-1]
    tb = [0] + lm.tokenizer(b[1], add_special_tokens=False)["input_ids"][:-1]
    common = next(i for i, (x, y) in enumerate(zip(ta, tb)) if x != y)
    counter = _Counter(lm.model)
    try:
        got = score_continuations(lm, [a, b], bos=None)
    finally:
        counter.handle.remove()
    assert [shape for shape, _ in counter.calls] == [(1, len(ta) + len(tb) - common)]
    _assert_same(got, _one_by_one(lm, [a, b], None))


class _Plain(torch.nn.Module):
    """A causal LM whose forward takes only input_ids and attention_mask (no logits_to_keep, no position_ids)."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.config = inner.config

    def forward(self, input_ids, attention_mask=None):
        return self.inner(input_ids=input_ids, attention_mask=attention_mask)


class _Misleading(_Plain):
    """Accepts logits_to_keep and position_ids but ignores them and 4-D masks: the probe must refuse both."""

    def forward(self, input_ids, attention_mask=None, position_ids=None, logits_to_keep=0):
        if attention_mask is not None and attention_mask.ndim == 4:
            attention_mask = None
        return self.inner(input_ids=input_ids, attention_mask=attention_mask)


@pytest.mark.parametrize("wrapper", [_Plain, _Misleading])
def test_models_without_the_needed_forward_arguments_fall_back(wrapper):
    import dataclasses

    base = from_model(tiny_model("gpt_neox", seed=4), tiny_tokenizer())
    lm = dataclasses.replace(base, model=wrapper(base.model))
    assert capabilities(lm) == Caps(keep=False, tree=False, no_cache=False)
    ref = _one_by_one(base, REUSE, None)
    _assert_same(score_continuations(lm, REUSE, bos=None), ref)
    _assert_same(score_continuations(lm, REUSE, bos=None, batch_tokens=40), ref)


def test_sliding_window_models_run_longer_inputs_alone():
    lm = from_model(tiny_model("gemma2", seed=6), tiny_tokenizer())  # sliding window of 16 tokens
    assert lm.config.sliding_window == 16
    reqs = [(PASSAGE, " quick"), (PASSAGE, " Hello world"), ("The quick", " brown fox"), ("The quick", " fox")]
    ref = _one_by_one(lm, reqs, None)
    for (ctx, cont), s in zip(reqs, ref):
        assert s.logprob_sum == pytest.approx(_naive(lm, ctx, cont, None)[0], abs=1e-4)
    _assert_same(score_continuations(lm, reqs, bos=None), ref)


def test_no_requests():
    lm = from_model(tiny_model("gpt_neox"), tiny_tokenizer())
    assert score_continuations(lm, [], bos=None) == []
