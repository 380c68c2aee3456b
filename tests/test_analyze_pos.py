"""``negdb analyze pos``: tagging and alignment against hand-written references, the aggregation against an
independent computation, and the command end to end on a tiny ingested store (stored rows = printed rows, a
rerun computes nothing, bad input gives one error line)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest

from negdb.analyze import pos as poslib
from negdb.analyze import postag
from negdb.analyze.pos import aggregate, check_ids, paired, tag_tokens
from negdb.analyze.postag import SPACE, Tagged, align
from negdb.errors import BadArgument, ModelLoadError, NegdbError, StoreDamaged, StoreError
from negdb.evals import registry
from tests.ablate_helpers import draws, percentile, table_files
from tests.ingest_helpers import assert_one_error, cli, ingest_into
from tests.tiny_models import save_tiny, tiny_tokenizer

pytestmark = pytest.mark.timeout(300)

FUNCTION = {"DET", "ADP", "AUX", "PART", "PRON", "CCONJ", "SCONJ", "PUNCT"}


# ------------------------------------------------------------------------------------------ references


def align_reference(text: str, offsets, spans) -> list[str]:
    """Character by character: the spaCy span sharing the most non-whitespace characters, the earlier on ties."""
    out = []
    for a, b in offsets:
        best, tag = 0, SPACE
        for s, e, t in sorted(spans):
            shared = sum(1 for i in range(a, b) if s <= i < e and not text[i].isspace())
            if shared > best:
                best, tag = shared, t
        out.append(tag)
    return out


def aggregate_reference(frame: pl.DataFrame, n_boot: int, seed: int) -> dict[str, dict]:
    """Per tag and ALL, from the definitions: polars means and sums; the bootstrap by plain loops over windows."""
    f = frame.with_columns((pl.col("ablated_nll") - pl.col("baseline_nll")).alias("d"))
    total, n_all = f["d"].sum(), f.height
    g = f.group_by("tag").agg(pl.len().alias("n"), pl.col("baseline_nll").mean().alias("b"),
                              pl.col("ablated_nll").mean().alias("a"), pl.col("d").mean().alias("m"),
                              pl.col("d").sum().alias("s"))
    ref = {r["tag"]: {"n_tokens": r["n"], "baseline_nll": r["b"], "ablated_nll": r["a"], "excess": r["m"],
                      "excess_total": r["s"], "share": r["s"] / total, "token_share": r["n"] / n_all}
           for r in g.to_dicts()}
    ref["ALL"] = {"n_tokens": n_all, "baseline_nll": f["baseline_nll"].mean(), "ablated_nll": f["ablated_nll"].mean(),
                  "excess": f["d"].mean(), "excess_total": total, "share": 1.0, "token_share": 1.0}
    windows = sorted(set(f["window"].to_list()))
    per_window: dict[int, list[tuple[str, float]]] = {w: [] for w in windows}
    for w, t, d in zip(f["window"].to_list(), f["tag"].to_list(), f["d"].to_list()):
        per_window[w].append((t, d))
    boots: dict[str, list[float]] = {t: [] for t in ref}
    for row in draws(np.random.default_rng(seed), len(windows), n_boot):
        for t in ref:
            vals = [d for i in row for tt, d in per_window[windows[i]] if t == "ALL" or tt == t]
            if vals:
                boots[t].append(sum(vals) / len(vals))
    for t in ref:
        ref[t]["ci_lo"], ref[t]["ci_hi"] = percentile(boots[t], 2.5), percentile(boots[t], 97.5)
    return ref


def synthetic_frame(seed: int = 3) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    n = 600
    windows = rng.choice([2, 5, 9, 11, 17, 23, 30, 31], size=n)  # not 0..W-1, not sorted
    tags = rng.choice(["DET", "NOUN", "PUNCT", "VERB", "ADP"], size=n, p=[0.25, 0.3, 0.2, 0.15, 0.1]).tolist()
    tags[0] = "INTJ"  # a tag in one window only: some draws miss it
    base = rng.gamma(2.0, 1.5, size=n)
    bump = np.array([{"DET": 0.6, "PUNCT": 0.4, "ADP": 0.3}.get(t, 0.05) for t in tags])
    abl = base + bump + rng.normal(0, 0.3, size=n)
    return pl.DataFrame({"window": windows, "tag": tags, "baseline_nll": base, "ablated_nll": abl})


# ------------------------------------------------------------------------------------------ alignment


TEXT = " The cat's  toy,\nran.\u00e9"
SPANS = [(1, 4, "DET"), (5, 8, "NOUN"), (8, 10, "PART"), (12, 15, "NOUN"), (15, 16, "PUNCT"), (17, 20, "VERB"),
         (20, 21, "PUNCT"), (21, 22, "X")]


def test_align_crafted_cases():
    offsets = [(0, 4),    # " The": leading space, DET
               (4, 7),    # " ca": a word split across LM tokens
               (7, 10),   # "t's": 1 char of cat, 2 of 's -> PART
               (7, 9),    # "t'": 1 and 1 -> tie, the earlier spaCy token
               (10, 12),  # "  ": whitespace only
               (12, 16),  # "toy,": NOUN 3 vs PUNCT 1
               (15, 17),  # ",\n": punctuation then newline
               (16, 17),  # "\n"
               (17, 21),  # "ran.": VERB 3 vs PUNCT 1
               (5, 5),    # empty span
               (21, 22), (21, 22)]  # one multi-byte character split over two byte-level tokens
    want = ["DET", "NOUN", "PART", "NOUN", SPACE, "NOUN", "PUNCT", SPACE, "VERB", SPACE, "X", "X"]
    tagged = Tagged.from_spans(SPANS)
    assert align(TEXT, offsets, tagged) == want
    assert align_reference(TEXT, offsets, SPANS) == want  # the reference agrees with the hand labels


def test_align_matches_the_reference_on_random_spans():
    rng = np.random.default_rng(0)
    chars = list("ab c\nd,e  f.")
    for trial in range(30):
        text = "".join(rng.choice(chars, size=60))
        cuts = np.sort(rng.choice(np.arange(1, 60), size=25, replace=False))
        bounds = [0, *cuts.tolist(), 60]
        spans = [(a, b, f"T{k}") for k, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])) if rng.random() < 0.7]
        starts = rng.integers(0, 60, size=40)
        offsets = [(int(s), int(min(60, s + rng.integers(0, 6)))) for s in starts]
        assert align(text, offsets, Tagged.from_spans(spans)) == align_reference(text, offsets, spans), trial


def test_align_rejects_offsets_outside_the_text():
    with pytest.raises(BadArgument):
        align("abc", [(0, 5)], Tagged.from_spans([(0, 3, "NOUN")]))


class FakeNlp:
    """Splits on spaces; tags by a dict (``X`` otherwise); whitespace runs become space tokens."""

    def __init__(self, tags: dict[str, str]) -> None:
        self.tags, self.calls = tags, 0

    def pipe(self, texts, batch_size=256):
        import re

        for t in texts:
            self.calls += 1
            yield [SimpleNamespace(text=m.group(), idx=m.start(), is_space=m.group().isspace(),
                                   pos_="SPACE" if m.group().isspace() else self.tags.get(m.group(), "X"))
                   for m in re.finditer(r"\S+|\s+", t)]


def test_tag_text_tracks_offsets_over_lines_and_long_lines():
    text = " = Head = \n \n the dog  runs \nthe end"
    nlp = FakeNlp({"the": "DET", "dog": "NOUN", "runs": "VERB", "=": "PUNCT"})
    tagged = postag.tag_text(text, nlp)
    got = [(text[s:e], t) for s, e, t in zip(tagged.start.tolist(), tagged.end.tolist(), tagged.tag)]
    assert got == [("=", "PUNCT"), ("Head", "X"), ("=", "PUNCT"), ("the", "DET"), ("dog", "NOUN"), ("runs", "VERB"),
                   ("the", "DET"), ("end", "X")]
    assert nlp.calls == 3  # blank lines are not tagged
    # a line longer than the chunk limit is cut after its last space within the limit (or at the limit)
    assert list(postag._pieces("aaa bbb ccc ddddddddddd e\n\n  \nxy", 8)) == [
        (0, "aaa bbb "), (8, "ccc "), (12, "dddddddd"), (20, "ddd e"), (30, "xy")]


def test_tag_text_refuses_empty_pos():
    nlp = FakeNlp({"dog": ""})
    with pytest.raises(ModelLoadError, match="no POS tag"):
        postag.tag_text("the dog", nlp)


def test_cached_tags_are_reused(tmp_path):
    nlp = FakeNlp({"the": "DET"})
    a, computed = postag.cached_tags(tmp_path, "the cat\nthe dog", nlp)
    b, again = postag.cached_tags(tmp_path, "the cat\nthe dog", nlp)
    assert computed and not again and nlp.calls == 2  # tagged once
    assert a.tag == b.tag and a.start.tolist() == b.start.tolist() and a.end.tolist() == b.end.tolist()
    (path,) = (tmp_path / "cache").glob("pos-*.parquet")
    assert pq.read_table(path).schema.metadata[b"spacy_model"] == postag.SPACY_MODEL.encode()
    _, other = postag.cached_tags(tmp_path, "another text", nlp)
    assert other and len(list((tmp_path / "cache").glob("pos-*.parquet"))) == 2


def test_real_spacy_tags_and_alignment():
    text = "The cat didn't sit on the mat, and it was happy."
    tagged = postag.tag_text(text)
    words = [(text[s:e], t) for s, e, t in zip(tagged.start.tolist(), tagged.end.tolist(), tagged.tag)]
    assert words == [("The", "DET"), ("cat", "NOUN"), ("did", "AUX"), ("n't", "PART"), ("sit", "VERB"),
                     ("on", "ADP"), ("the", "DET"), ("mat", "NOUN"), (",", "PUNCT"), ("and", "CCONJ"),
                     ("it", "PRON"), ("was", "AUX"), ("happy", "ADJ"), (".", "PUNCT")]
    ids, offsets = postag.token_offsets(tiny_tokenizer(), text)
    assert len(ids) == len(offsets)
    got = align(text, offsets, tagged)
    assert got == align_reference(text, offsets.tolist(), list(zip(tagged.start.tolist(), tagged.end.tolist(),
                                                                    tagged.tag)))
    assert got[0] == "DET" and got[-1] == "PUNCT"


# ------------------------------------------------------------------------------------------ aggregation


def test_aggregate_matches_an_independent_computation():
    frame = synthetic_frame()
    got = aggregate(frame, n_boot=300, seed=7)
    ref = aggregate_reference(frame, 300, 7)
    assert got["tag"].to_list()[-1] == "ALL"
    assert set(got["tag"].to_list()) == set(ref)
    for r in got.to_dicts():
        want = ref[r["tag"]]
        for k, v in want.items():
            assert r[k] == pytest.approx(v, rel=1e-9, abs=1e-12), (r["tag"], k)
        assert r["function_word"] == (None if r["tag"] == "ALL" else r["tag"] in FUNCTION)
    tags = got.filter(pl.col("tag") != "ALL")
    assert tags["share"].sum() == pytest.approx(1.0) and tags["token_share"].sum() == pytest.approx(1.0)
    assert tags["n_tokens"].sum() == frame.height
    assert tags["share"].to_list() == sorted(tags["share"].to_list(), reverse=True)
    # a CI brackets the mean where the tag has many tokens
    for r in got.filter(pl.col("n_tokens") > 50).to_dicts():
        assert r["ci_lo"] < r["excess"] < r["ci_hi"]
    # the function words carry more than their token share (the synthetic bump)
    fw = tags.filter(pl.col("function_word"))
    assert fw["share"].sum() > fw["token_share"].sum()


def test_aggregate_is_seeded():
    frame = synthetic_frame()
    a, b = aggregate(frame, n_boot=200, seed=1), aggregate(frame, n_boot=200, seed=1)
    assert a.equals(b)
    c = aggregate(frame, n_boot=200, seed=2)
    assert a["excess"].to_list() == c["excess"].to_list() and a["ci_lo"].to_list() != c["ci_lo"].to_list()


def test_aggregate_edge_cases():
    with pytest.raises(BadArgument):
        aggregate(synthetic_frame(), n_boot=0)
    with pytest.raises(BadArgument):
        aggregate(synthetic_frame().head(0))
    flat = pl.DataFrame({"window": [0, 0, 1], "tag": ["DET", "NOUN", "DET"], "baseline_nll": [1.0, 2.0, 3.0],
                         "ablated_nll": [1.0, 2.0, 3.0]})
    got = aggregate(flat, n_boot=10)
    assert got["share"].null_count() == got.height  # no excess at all: shares undefined, not a division error
    assert got["excess"].to_list() == [0.0, 0.0, 0.0]


def test_check_ids_tag_tokens_and_paired():
    text = "ab cd"
    tagged = Tagged.from_spans([(0, 2, "NOUN"), (3, 5, "VERB")])
    ids, offsets = [5, 6, 7], np.array([[0, 2], [2, 3], [3, 5]])
    toks = pl.DataFrame({"window": [0, 0], "position": [1, 2], "token_id": [6, 7], "nll": [1.0, 2.0]})
    check_ids(ids, toks)
    assert tag_tokens(text, offsets, tagged, toks)["tag"].to_list() == [SPACE, "VERB"]
    with pytest.raises(StoreDamaged, match="re-tokenized"):
        check_ids(ids, toks.with_columns(pl.Series("token_id", [6, 8])))
    with pytest.raises(StoreDamaged, match="beyond"):
        check_ids(ids, toks.with_columns(pl.Series("position", [1, 3])))
    tagged_toks = tag_tokens(text, offsets, tagged, toks)
    cond = SimpleNamespace(result_id="x" * 64, tokens=lambda: pl.DataFrame({"position": [1], "nll": [3.0]}))
    with pytest.raises(StoreDamaged, match="other tokens"):
        paired(tagged_toks, cond)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------ end to end


ARGS = ["--top", "10%", "--ppl-tokens", "256", "--probe-tokens", "256", "--seeds", "2", "--window", "64",
        "--n-boot", "200", "--quiet"]


@pytest.fixture(scope="module")
def env(tmp_path_factory, short_wikitext):
    model = save_tiny(tmp_path_factory.mktemp("m") / "neox", "gpt_neox", seed=0)
    store = ingest_into(tmp_path_factory, model)
    first = cli(store, "analyze", "pos", "--model", str(model), *ARGS, "--format", "json")
    assert first.exit_code == 0, first.output
    return {"store": store, "model": str(model), "first": first, "doc": json.loads(first.stdout),
            "files": {t: table_files(store, t) for t in ("pos_surprisal", "analyses", "eval_results")}}


def _stored_rows(store: Path, aid: str) -> pl.DataFrame:
    return pl.from_arrow(pq.read_table(store / "tables" / "pos_surprisal" / f"{aid}.parquet"))


def test_stored_rows_are_the_printed_ones(env):
    doc, store = env["doc"], env["store"]
    stored = _stored_rows(store, doc["analysis_id"])
    assert stored.to_dicts() == doc["rows"]
    keys = list(dict.fromkeys((r["condition"], r["seed"]) for r in doc["rows"]))
    assert keys == [("ablation", None), ("random", 0), ("random", 1), ("ppl-matched", None)]
    (row,) = pq.read_table(store / "tables" / "analyses" / f"{doc['analysis_id']}.parquet").to_pylist()
    assert row["kind"] == "pos" and json.loads(row["config_json"])["n_boot"] == 200
    # the analysis read the evaluations of the ablation experiment it ran
    abl = pl.from_arrow(pq.read_table(store / "tables" / "ablations" / f"{doc['summary']['ablation_id']}.parquet"))
    by = {(r["condition"], r["seed"]): r["result_ids"][0] for r in abl.to_dicts()}
    for r in doc["rows"]:
        assert r["result_id"] == by[(r["condition"], r["seed"])] and r["baseline_id"] == by[("baseline", None)]


def test_numbers_recomputed_from_the_stored_tokens(env):
    """Re-derive the ablation's rows from eval_tokens, the tokenizer's offsets and the reference alignment."""
    doc, store = env["doc"], env["store"]
    rows = [r for r in doc["rows"] if r["condition"] == "ablation"]
    tok = lambda rid: pl.from_arrow(pq.read_table(store / "tables" / "eval_tokens" / f"{rid}.parquet"))  # noqa: E731
    base, abl = tok(rows[0]["baseline_id"]), tok(rows[0]["result_id"])
    assert base.height == 256 - 4  # 4 windows of 64, the first token of each not predicted
    text = "\n".join(it.text for it in registry.load_items("wikitext2"))
    enc = tiny_tokenizer()(text, add_special_tokens=False, return_offsets_mapping=True)
    assert [enc["input_ids"][p] for p in base["position"].to_list()] == base["token_id"].to_list()
    (cache,) = (store / "cache").glob("pos-*.parquet")
    t = pq.read_table(cache).to_pydict()
    spans = list(zip(t["start"], t["end"], t["tag"]))
    offsets = [enc["offset_mapping"][p] for p in base["position"].to_list()]
    end = max(b for _, b in offsets)
    tags = align_reference(text, offsets, [s for s in spans if s[0] < end])  # later spans cannot overlap
    assert min(base["position"].to_list()) == 1 and len(set(tags)) > 3
    frame = base.select("window", "position", pl.col("nll").alias("baseline_nll")).with_columns(
        pl.Series("tag", tags)).join(abl.select("position", pl.col("nll").alias("ablated_nll")), on="position")
    ref = aggregate_reference(frame, 200, 0)
    assert {r["tag"] for r in rows} == set(ref)
    for r in rows:
        for k, v in ref[r["tag"]].items():
            assert r[k] == pytest.approx(v, rel=1e-9, abs=1e-12), (r["tag"], k)
    assert next(r for r in rows if r["tag"] == "ALL")["excess"] != 0  # the ablation really changed something


def test_rerun_computes_nothing(env, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("recomputed")

    monkeypatch.setattr(postag, "tag_text", boom)
    monkeypatch.setattr(poslib, "_tokenizer", boom)
    out = env["store"] / "pos.txt"
    res = cli(env["store"], "analyze", "pos", "--model", env["model"], *ARGS, "--out", str(out))
    assert res.exit_code == 0, res.output
    assert "read from the store" in res.stderr and "0 evaluations computed" in res.stderr
    assert "loading" not in res.stderr
    for table, files in env["files"].items():
        assert table_files(env["store"], table) == files, table
    # the table shows the stored numbers, tags by the ablation's share
    rows = [r for r in env["doc"]["rows"] if r["condition"] == "ablation"]
    every = next(r for r in rows if r["tag"] == "ALL")
    assert f"{every['excess']:+.4f} [{every['ci_lo']:+.4f}, {every['ci_hi']:+.4f}]" in res.stdout
    order = [line.split()[0] for line in res.stdout.splitlines()[2:2 + len(rows)]]
    assert order == [r["tag"] for r in rows]
    assert out.read_text() == res.stdout
    as_csv = cli(env["store"], "analyze", "pos", "--model", env["model"], *ARGS, "--format", "csv")
    parsed = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert len(parsed) == len(env["doc"]["rows"]) and parsed[0]["analysis_id"] == env["doc"]["analysis_id"]


def test_new_bootstrap_reuses_tags_and_evaluations(env, monkeypatch):
    monkeypatch.setattr(postag, "tag_text", lambda *a, **k: (_ for _ in ()).throw(AssertionError("re-tagged")))
    args = [a if a != "200" else "100" for a in ARGS]
    res = cli(env["store"], "analyze", "pos", "--model", env["model"], *args, "--controls", "none",
              "--format", "json")
    assert res.exit_code == 0, res.output
    assert "pos analysis" in res.stderr and "computed;" in res.stderr and "0 evaluations computed" in res.stderr
    doc = json.loads(res.stdout)
    assert doc["analysis_id"] != env["doc"]["analysis_id"]
    assert {r["condition"] for r in doc["rows"]} == {"ablation"}
    first = {r["tag"]: r for r in env["doc"]["rows"] if r["condition"] == "ablation"}
    for r in doc["rows"]:  # the same tokens and tags: only the CIs move
        assert r["excess"] == pytest.approx(first[r["tag"]]["excess"]) and r["n_tokens"] == first[r["tag"]]["n_tokens"]


def test_changed_text_is_refused(env, monkeypatch):
    import dataclasses

    real = registry.load_items

    def shifted(name, limit=None, seed=0):
        items = real(name, limit=limit, seed=seed)
        return [dataclasses.replace(it, text="Other words . " + it.text) for it in items] if name == "wikitext2" \
            else items

    monkeypatch.setattr(registry, "load_items", shifted)
    before = table_files(env["store"], "analyses")
    res = cli(env["store"], "analyze", "pos", "--model", env["model"], *ARGS, "--n-boot", "50", "--controls", "none")
    assert res.exit_code == 2, res.output
    errors = [line for line in res.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "changed" in errors[0] and "tagging" not in res.stderr  # checked before tagging
    assert table_files(env["store"], "analyses") == before


@pytest.mark.parametrize("args", [
    [],  # no selector
    ["--top", "10%", "--set", "x"],
    ["--top", "10%", "--n-boot", "0"],
    ["--top", "10%", "--controls", "random,bogus"],
    ["--top", "10%", "--seeds", "0"],
    ["--top", "10%", "--mode", "zero"],
    ["--top", "10%", "--window", "1"],
    ["--where", "w_dist > 1e9"],
])
def test_bad_arguments_give_one_error_line(env, args):
    before = table_files(env["store"], "analyses")
    res = cli(env["store"], "analyze", "pos", "--model", env["model"], *args, "--quiet")
    assert_one_error(res)
    assert table_files(env["store"], "analyses") == before


def test_missing_store(tmp_path, env):
    res = cli(tmp_path / "nowhere", "analyze", "pos", "--model", env["model"], "--top", "10%", "--quiet")
    assert_one_error(res, StoreError)
    assert not (tmp_path / "nowhere").exists()


@pytest.mark.slow
def test_smollm2_tokens_of_all_wikitext_align_to_sensible_tags(tmp_path):
    """The real SmolLM2 tokenizer and spaCy on the whole WikiText-2 test file (about 35 s on one core)."""
    from negdb.models.checkpoints import select
    from negdb.models.loading import load_tokenizer
    from negdb.models.registry import resolve

    try:
        source = resolve("smollm2-135m")
    except NegdbError as err:
        pytest.skip(str(err))
    tok = load_tokenizer(source, select(source, "final")[0])
    text = "\n".join(it.text for it in registry.load_items("wikitext2"))
    ids, offsets = postag.token_offsets(tok, text)
    assert ids == list(tok(text, add_special_tokens=False)["input_ids"])  # as the perplexity evaluation has them
    tagged, computed = postag.cached_tags(tmp_path, text)
    assert computed
    tags = align(text, offsets, tagged)
    pieces = [text[a:b] for a, b in offsets.tolist()]
    # whitespace-only tokens, and only they, get SPACE
    assert all((t == SPACE) == (p.strip() == "") for t, p in zip(tags, pieces))
    by_piece: dict[str, list[str]] = {}
    for t, p in zip(tags, pieces):
        by_piece.setdefault(p, []).append(t)
    share = lambda piece, tag: by_piece[piece].count(tag) / len(by_piece[piece])  # noqa: E731
    assert share(" the", "DET") > 0.98 and share(" ,", "PUNCT") > 0.99 and share(" .", "PUNCT") > 0.99
    assert share(" of", "ADP") > 0.95 and share(" was", "AUX") > 0.8 and share(" and", "CCONJ") > 0.95
    # the reference rule on a sample of tokens (spans near each token: the others cannot overlap)
    rng = np.random.default_rng(0)
    spans = list(zip(tagged.start.tolist(), tagged.end.tolist(), tagged.tag))
    for i in rng.choice(len(ids), size=300, replace=False).tolist():
        a, b = offsets[i].tolist()
        k = int(np.searchsorted(tagged.start, a))
        near = spans[max(0, k - 3):k + 6]
        assert align_reference(text, [(a, b)], near) == [tags[i]]
