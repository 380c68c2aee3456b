"""Real-model check: SmolLM2-135M prefers the good sentence of easy BLiMP pairs."""

from __future__ import annotations

import pytest

from negdb.evals.metrics import group_accuracy, minimal_pair_correct
from negdb.evals.registry import load_items
from negdb.evals.scoring import score_continuations


@pytest.mark.slow
def test_smollm2_blimp_easy_paradigm_well_above_chance(smollm2):
    items = [it for it in load_items("blimp", limit=20, seed=0) if it.group == "determiner_noun_agreement_1"]
    assert len(items) == 20
    requests = [req for it in items for req in it.requests]
    scores = score_continuations(smollm2, requests, bos=None, batch_tokens=2048)  # lm-eval convention
    bos_id = smollm2.tokenizer.bos_token_id
    assert bos_id is not None and {s.prefix_id for s in scores} == {bos_id}
    correct = minimal_pair_correct(scores[0::2], scores[1::2])
    acc = group_accuracy(correct, [it.group for it in items])
    assert acc.micro >= 0.7, acc
