"""Benchmark definitions (data/benchmarks.json) load from the bundled data with the expected shapes."""

from __future__ import annotations

import gzip
import json
import re
from collections import Counter

import pytest

from negdb.data import data_path
from negdb.errors import BadArgument
from negdb.evals.registry import KINDS, benchmarks, get, load_items

# Row counts from data/README.md (independent of the spec's own "expected").
COUNTS = {
    "blimp": 67_000, "tse": 163_124, "arc_easy": 2_376, "arc_challenge": 1_172, "piqa": 1_838,
    "hellaswag": 1_000, "boolq": 3_270, "copa": 100, "openbookqa": 500, "winogrande": 1_267,
    "lambada_openai": 5_153, "wikitext2": 1,
}
CHOICES = {"arc_easy": 4, "arc_challenge": 4, "piqa": 2, "hellaswag": 4, "boolq": 2, "copa": 2,
           "openbookqa": 4, "winogrande": 2, "lambada_openai": 1, "blimp": 2, "tse": 2}


def test_every_benchmark_is_defined_with_a_known_kind():
    specs = benchmarks()
    assert set(specs) == set(COUNTS)
    assert {s.kind for s in specs.values()} == set(KINDS)
    assert specs["winogrande"].kind == "partial" and specs["lambada_openai"].kind == "last_word"
    assert specs["tse"].metrics == ("acc_mean", "acc_sum")


@pytest.mark.parametrize("name", sorted(COUNTS))
def test_items_load_with_expected_counts(name):
    items = load_items(name)
    assert len(items) == COUNTS[name] == get(name).expected["items"]
    assert [it.index for it in items] == list(range(len(items)))
    if name == "wikitext2":
        assert len(items[0].text) > 1_000_000 and items[0].requests == ()
        return
    assert {len(it.requests) for it in items} == {CHOICES[name]}
    assert all(0 <= it.gold < len(it.requests) for it in items)
    assert all(cont for it in items for _, cont in it.requests)


def test_blimp_groups_and_lm_eval_format():
    items = load_items("blimp")
    groups = Counter(it.group for it in items)
    assert len(groups) == 67 and set(groups.values()) == {1000}
    first = items[0]
    assert first.meta.keys() == {"field", "linguistics_term", "UID"} and first.meta["UID"] == first.group
    with gzip.open(data_path("blimp", f"{first.group}.jsonl.gz"), "rt") as f:
        row = json.loads(f.readline())
    assert first.requests == (("", " " + row["sentence_good"]), ("", " " + row["sentence_bad"]))
    assert first.gold == 0 and first.id == row["pairID"]


def test_tse_groups():
    items = load_items("tse")
    groups = Counter(it.group for it in items)
    assert len(groups) == 22 and groups["simple_agrmt"] == 140 and groups["reflexives_across"] == 22_400
    assert {it.meta["category"] for it in items} == {"subject_verb_agreement", "reflexive_anaphora",
                                                     "npi_licensing"}


def test_prompts_follow_lm_eval():
    arc = load_items("arc_easy")[0]
    assert arc.requests[0][0].startswith("Question: ") and arc.requests[0][0].endswith("\nAnswer:")
    assert arc.requests[0][1] == " " + arc.choices[0]
    piqa = load_items("piqa")[0]
    assert piqa.requests[1][0].startswith("Question: How do I") and piqa.requests[1][1].startswith(" Provide")
    copa = load_items("copa")
    assert all(re.search(r"[^,] (because|therefore)$", it.requests[0][0]) for it in copa)
    assert all(c[1][1].islower() for it in copa for c in it.requests)
    hs = load_items("hellaswag")
    raw = json.loads(gzip.open(data_path("benchmarks", "hellaswag_val_subset1000.jsonl.gz"), "rt").readline())
    ctx = raw["activity_label"] + ": " + raw["ctx_a"] + " " + raw["ctx_b"].capitalize()
    assert hs[0].requests[0][0] == ctx.strip() and hs[0].gold == raw["label"]
    assert not any("[" in c for it in hs for c, _ in it.requests)
    wg = load_items("winogrande")[0]
    assert wg.requests[0][1] == wg.requests[1][1] and wg.requests[0][0] != wg.requests[1][0]
    lam = load_items("lambada_openai")[0]
    assert lam.requests[0][1].startswith(" ") and " " not in lam.requests[0][1][1:]


def test_limit_is_per_group_seeded_and_keeps_pairs():
    full = {it.index: it for it in load_items("blimp")}
    a = load_items("blimp", limit=5, seed=1)
    assert Counter(it.group for it in a) == {g: 5 for g in {it.group for it in full.values()}}
    assert all(full[it.index] == it for it in a)  # whole pairs, unchanged
    assert [it.index for it in a] == sorted(it.index for it in a)
    assert load_items("blimp", limit=5, seed=1) == a
    assert [it.index for it in load_items("blimp", limit=5, seed=2)] != [it.index for it in a]
    tse = load_items("tse", limit=200, seed=0)
    counts = Counter(it.group for it in tse)
    assert counts["simple_agrmt"] == 140 and counts["simple_npi_anim"] == 120 and counts["prep_anim"] == 200
    assert len(load_items("arc_easy", limit=10)) == 10
    assert load_items("copa", limit=1000) == load_items("copa")


def test_unknown_benchmark_lists_the_known_ones():
    with pytest.raises(BadArgument, match="unknown benchmark 'blimpp'.*arc_easy.*winogrande"):
        load_items("blimpp")
