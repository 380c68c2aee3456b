"""negdb.evals.scoring against naive per-request references on tiny models."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from negdb.errors import NegdbError
from negdb.evals.scoring import perplexity, score_continuations
from negdb.models.loading import from_model
from tiny_models import SENTENCES, tiny_model, tiny_tokenizer

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
    with pytest.raises(NegdbError, match="not in the tokenizer"):
        score_continuations(lm, REQUESTS[:1], bos="<s>")
    with pytest.raises(NegdbError, match="outside"):
        score_continuations(lm, REQUESTS[:1], bos=10**6)
    with pytest.raises(NegdbError, match="empty continuation"):
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
