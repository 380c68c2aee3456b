"""negdb.ingest.corpus: specs, WikiText detokenization and article split, local files, errors."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import os
import subprocess
import sys
import textwrap

import pytest

from negdb.data import data_path
from negdb.errors import BadArgument
from negdb.ingest.corpus import (
    Corpus,
    load_corpus,
    split_wikitext_articles,
    wikitext_detokenize,
)

# Pinned so that an accidental change of the default corpus (and so of every slice) is noticed.
VALID_TEXT_SHA256 = "82f45eae15c526f1745f74bfcb727cecdaf5a5995bab6a9685dfebd61a4513d5"
TEST_TEXT_SHA256 = "15409a548807c9972b7367313ce0b495afbed8971568c6eea77b557f271d9708"


def _digest(docs) -> str:
    return hashlib.sha256("\n\n".join(docs).encode("utf-8")).hexdigest()


# ------------------------------------------------------------------------------------------------
# detokenizer and article split


@pytest.mark.parametrize(
    ("tokenized", "expected"),
    [
        ("a well @-@ known fact , they said .", "a well-known fact, they said ."),
        ("It is 1 @,@ 000 km ( 620 mi ) long", "It is 1,000 km (620 mi) long"),
        ("3 @.@ 5 ° C", "3.5°C"),
        ('becoming " lobster red " on cooking', 'becoming "lobster red" on cooking'),
        ("the lobster 's claws ; the players ' union", "the lobster's claws; the players' union"),
        ("Why ? Because ! Then : done", "Why? Because! Then: done"),
        (" = = = Film roles = = = ", " === Film roles === "),
        (" = Title = \n \n Text , more . \n", " = Title =\n\nText, more.\n"),
        ("a species of <unk> lobster", "a species of <unk> lobster"),
    ],
)
def test_wikitext_detokenize(tokenized, expected):
    assert wikitext_detokenize(tokenized) == expected


def test_split_wikitext_articles():
    text = (
        " \n = First = \n \n Body one . \n \n = = Section = = \n \n More . \n"
        " \n = Second = \n \n a cut @-@ off of ωc \n = 1 rad / s and k = \n 1 Ω . \n"
    )
    arts = split_wikitext_articles(text)
    assert "".join(arts) == text  # nothing lost, nothing trimmed
    arts = [a for a in arts if a.strip()]
    assert [a.strip().splitlines()[0].strip() for a in arts] == ["= First =", "= Second ="]
    assert "= = Section = =" in arts[0]  # sub-headings stay inside the article
    assert "= 1 rad / s and k =" in arts[1]  # an equation line, not between blank lines


def test_default_corpus_is_detokenized_valid_split():
    c = load_corpus("wikitext-2")
    assert isinstance(c, Corpus)
    assert c.name == "wikitext-2:valid"
    assert c.source == str(data_path("wikitext-2", "wiki.valid.tokens.gz"))
    assert c.n_documents == 60
    assert c.documents[0].startswith("= Homarus gammarus =\n\nHomarus gammarus, known as the European lobster")
    assert all(d.startswith("= ") and d == d.strip() for d in c.documents)
    joined = "\n\n".join(c.documents)
    assert " @-@ " not in joined and " , " not in joined
    assert "<unk>" in joined
    assert c.text_sha256 == _digest(c.documents) == VALID_TEXT_SHA256
    assert load_corpus("wikitext-2:valid") == c
    assert load_corpus("WikiText-2:validation") == c


def test_wikitext_test_split_is_raw_text_unchanged():
    c = load_corpus("wikitext-2:test")
    assert c.name == "wikitext-2:test"
    assert c.n_documents == 60
    with gzip.open(data_path("wikitext-2", "wiki.test.raw.gz"), "rt", encoding="utf-8") as f:
        raw = f.read()
    assert c.documents[0].startswith("= Robert Boulter = \n \n Robert Boulter is an English film ,")
    pos = 0
    for d in c.documents:  # each article is an exact, in-order piece of the file
        pos = raw.index(d, pos) + len(d)
    assert any(d.startswith("= Constant k filter =") and "= 1 rad / s" in d for d in c.documents)
    assert c.text_sha256 == TEST_TEXT_SHA256


def test_corpus_is_frozen():
    c = load_corpus("wikitext-2:test")
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.name = "x"  # type: ignore[misc]


# ------------------------------------------------------------------------------------------------
# local files


def test_txt_file_is_one_document(tmp_path):
    p = tmp_path / "notes.txt"
    p.write_bytes(b"\n  First paragraph.\r\nStill first.\r\n\r\nSecond paragraph.\n\n")
    c = load_corpus(str(p))
    assert c.name == c.source == str(p.resolve())
    assert c.documents == ("First paragraph.\nStill first.\n\nSecond paragraph.",)
    assert c.text_sha256 == _digest(c.documents)

    gz = tmp_path / "notes.txt.gz"
    gz.write_bytes(gzip.compress(p.read_bytes()))
    assert load_corpus(str(gz)).documents == c.documents
    assert load_corpus(p) == c  # os.PathLike works too


def test_jsonl_one_document_per_line(tmp_path):
    rows = [{"text": "alpha beta", "id": 1}, {"text": "", "id": 2}, {"text": "  ", "id": 3},
            {"text": "gamma\n\ndelta ", "id": 4}]
    body = "\n".join(json.dumps(r) for r in rows[:2]) + "\n\n" + "\n".join(json.dumps(r) for r in rows[2:]) + "\n"
    p = tmp_path / "docs.jsonl"
    p.write_text(body, encoding="utf-8")
    c = load_corpus(str(p))
    assert c.documents == ("alpha beta", "gamma\n\ndelta ")  # empty ones dropped, text unchanged
    assert c.name == str(p.resolve())

    gz = tmp_path / "docs.jsonl.gz"
    gz.write_bytes(gzip.compress(body.encode()))
    assert load_corpus(str(gz)).documents == c.documents

    p2 = tmp_path / "other.jsonl"
    p2.write_text('{"body": "one"}\n{"body": "two"}\n', encoding="utf-8")
    assert load_corpus(str(p2), text_field="body").documents == ("one", "two")


# ------------------------------------------------------------------------------------------------
# errors


def _error(spec, **kw) -> str:
    with pytest.raises(BadArgument) as info:
        load_corpus(spec, **kw)
    msg = str(info.value)
    assert "\n" not in msg
    return msg


def test_missing_file(tmp_path):
    for name in ("nope.txt", "nope.jsonl.gz"):
        msg = _error(str(tmp_path / name))
        assert "not found" in msg and name in msg and "check the path" in msg


def test_missing_json_field_names_field_and_keys(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text('{"text": "ok"}\n{"content": "x", "meta": 1}\n', encoding="utf-8")
    msg = _error(str(p))
    assert "line 2" in msg and "'text'" in msg and "content, meta" in msg and "text_field" in msg


def test_bad_json_lines(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text('{"text": "ok"}\n{not json\n', encoding="utf-8")
    assert "line 2" in _error(str(p)) and "JSON" in _error(str(p))
    p.write_text('["a list"]\n', encoding="utf-8")
    assert "JSON object" in _error(str(p))
    p.write_text('{"text": 3}\n', encoding="utf-8")
    assert "not a string" in _error(str(p))


def test_empty_corpus(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text(" \n\n", encoding="utf-8")
    assert "no text" in _error(str(empty))
    blank = tmp_path / "blank.jsonl"
    blank.write_text('{"text": ""}\n\n{"text": "  "}\n', encoding="utf-8")
    assert "no text" in _error(str(blank))


def test_unknown_and_unsupported_specs(tmp_path):
    msg = _error("no-such-corpus")
    assert "unknown corpus spec" in msg and "wikitext-2" in msg and "hf:" in msg
    assert "wikitext-2:test" in _error("wikitext-2:train")
    assert "empty corpus spec" in _error("  ")
    csv = tmp_path / "table.csv"
    csv.write_text("a,b\n", encoding="utf-8")
    assert "unsupported corpus file" in _error(str(csv))
    assert "hf:<name>" in _error("hf:")
    assert "hf:<name>" in _error("hf:a:b:c:d")


def test_unreadable_files(tmp_path):
    d = tmp_path / "dir.txt"
    d.mkdir()
    assert "directory" in _error(str(d))
    bad_gz = tmp_path / "bad.txt.gz"
    bad_gz.write_bytes(b"this is not gzip")
    assert "cannot read corpus file" in _error(str(bad_gz))
    latin = tmp_path / "latin.txt"
    latin.write_bytes("caf\xe9".encode("latin-1"))
    assert "not UTF-8" in _error(str(latin))


def test_hf_spec_offline_gives_hint(tmp_path):
    # A fresh interpreter: the offline switches are read when datasets / huggingface_hub are imported.
    code = textwrap.dedent(
        """
        from negdb.errors import NegdbError
        from negdb.ingest.corpus import load_corpus
        try:
            load_corpus("hf:negdb-tests/no-such-dataset:default:validation")
        except NegdbError as e:
            print("NEGDB:" + str(e))
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"),
               HF_DATASETS_CACHE=str(tmp_path / "hf" / "datasets"))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    lines = [line for line in out.stdout.splitlines() if line.startswith("NEGDB:")]
    assert len(lines) == 1, out.stdout + out.stderr
    msg = lines[0]
    assert "negdb-tests/no-such-dataset" in msg and "local .txt/.jsonl file" in msg
