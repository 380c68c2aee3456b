"""Corpora: a spec string to an immutable list of documents.

``load_corpus(spec)`` understands:

* ``wikitext-2`` (= ``wikitext-2:valid``): the bundled *tokenized* WikiText-2 validation split
  (``data/wikitext-2/wiki.valid.tokens.gz``), split into articles and detokenized with the standard
  WikiText detokenizer (:func:`wikitext_detokenize`, the one lm-evaluation-harness and Megatron use;
  ``<unk>`` is kept as is). This is the default ingest corpus: neuron statistics are computed on the
  validation split so that neuron selection never sees the test text used for evaluation.
* ``wikitext-2:test``: the bundled *raw* test split (``wiki.test.raw.gz``), split into articles, text
  unchanged (no detokenization).
* a path to a ``.txt`` / ``.txt.gz`` file: the whole file is **one** document (newlines normalised to
  ``\\n``, surrounding whitespace trimmed). Blank lines are kept as paragraph breaks inside it; use a
  ``.jsonl`` file when you want several documents (documents are separated by EOS in token slices).
* a path to a ``.jsonl`` / ``.jsonl.gz`` file: one document per non-blank line, the string in
  ``text_field`` (default ``"text"``), unchanged.
* ``hf:<name>[:<config>][:<split>]``: a Hugging Face dataset through ``datasets.load_dataset`` (split
  defaults to ``train``; ``hf:name::split`` leaves the config out). One document per row, from
  ``text_field``. Needs the hub or the local datasets cache.

In every case documents that are empty or whitespace only are dropped, and a corpus without any
document is an error. WikiText articles start at lines like `` = Title = `` between blank lines (a
single ``=`` on each side; `` = = Section = = `` lines stay inside the article); each article is
trimmed of surrounding whitespace. Both bundled splits have 60 articles.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

from negdb.data import data_path
from negdb.errors import BadArgument

__all__ = [
    "Corpus",
    "DEFAULT_CORPUS",
    "load_corpus",
    "split_wikitext_articles",
    "wikitext_detokenize",
]

DEFAULT_CORPUS = "wikitext-2"

_WIKITEXT = {
    # canonical name: (bundled file, detokenize?)
    "wikitext-2:valid": (("wikitext-2", "wiki.valid.tokens.gz"), True),
    "wikitext-2:test": (("wikitext-2", "wiki.test.raw.gz"), False),
}
_WIKITEXT_ALIASES = {
    "wikitext-2": "wikitext-2:valid",
    "wikitext-2:valid": "wikitext-2:valid",
    "wikitext-2:validation": "wikitext-2:valid",
    "wikitext-2:test": "wikitext-2:test",
}
_TEXT_SUFFIXES = (".txt", ".txt.gz")
_JSONL_SUFFIXES = (".jsonl", ".jsonl.gz")
_SPEC_HELP = (
    "use wikitext-2 (= wikitext-2:valid), wikitext-2:test, a path to a .txt/.txt.gz/.jsonl/.jsonl.gz "
    "file, or hf:<name>[:<config>][:<split>]"
)


@dataclass(frozen=True)
class Corpus:
    """An immutable corpus: ``documents`` in order; ``text_sha256`` identifies their text."""

    name: str  # canonical spec: "wikitext-2:valid", an absolute file path, "hf:name:config:split"
    source: str  # the file read, or the Hugging Face dataset id
    documents: tuple[str, ...]
    text_sha256: str  # sha256 of "\n\n".join(documents) as UTF-8

    @property
    def n_documents(self) -> int:
        return len(self.documents)

    @property
    def n_chars(self) -> int:
        return sum(len(d) for d in self.documents)


def _make_corpus(name: str, source: str, documents: Iterable[str]) -> Corpus:
    docs = tuple(d for d in documents if d.strip())
    if not docs:
        raise BadArgument(f"corpus {name!r} has no text (no non-empty document); pass a corpus with text")
    digest = hashlib.sha256("\n\n".join(docs).encode("utf-8")).hexdigest()
    return Corpus(name=name, source=source, documents=docs, text_sha256=digest)


# --------------------------------------------------------------------------------------------------
# WikiText


def wikitext_detokenize(string: str) -> str:
    """Undo WikiText's tokenization (the standard detokenizer of lm-evaluation-harness / Megatron)."""
    # contractions
    string = string.replace("s '", "s'")
    string = re.sub(r"/' [0-9]/", r"/'[0-9]/", string)
    # number separators
    string = string.replace(" @-@ ", "-")
    string = string.replace(" @,@ ", ",")
    string = string.replace(" @.@ ", ".")
    # punctuation
    string = string.replace(" : ", ": ")
    string = string.replace(" ; ", "; ")
    string = string.replace(" . ", ". ")
    string = string.replace(" ! ", "! ")
    string = string.replace(" ? ", "? ")
    string = string.replace(" , ", ", ")
    # double brackets
    string = re.sub(r"\(\s*([^\)]*?)\s*\)", r"(\1)", string)
    string = re.sub(r"\[\s*([^\]]*?)\s*\]", r"[\1]", string)
    string = re.sub(r"{\s*([^}]*?)\s*}", r"{\1}", string)
    string = re.sub(r"\"\s*([^\"]*?)\s*\"", r'"\1"', string)
    string = re.sub(r"'\s*([^']*?)\s*'", r"'\1'", string)
    # miscellaneous
    string = string.replace("= = = =", "====")
    string = string.replace("= = =", "===")
    string = string.replace("= =", "==")
    string = string.replace(" " + chr(176) + " ", chr(176))
    string = string.replace(" \n", "\n")
    string = string.replace("\n ", "\n")
    string = string.replace(" N ", " 1 ")
    string = string.replace(" 's", "'s")
    return string


def _is_article_heading(line: str) -> bool:
    s = line.strip()
    return (
        len(s) > 4
        and s.startswith("= ")
        and s.endswith(" =")
        and not s.startswith("= =")
        and not s.endswith("= =")
    )


def split_wikitext_articles(text: str) -> list[str]:
    """Split WikiText into articles at `` = Title = `` lines (a single ``=`` on each side).

    A heading counts only between blank lines (or at the start of the text), as WikiText writes
    them; this keeps the two wrapped equation lines of the test article "Constant k filter"
    (`` = 1 rad / s and a nominal impedance k = ``) inside it, so both bundled splits give the 60
    articles of the data set. Every article is the exact text of its lines, heading included; text
    before the first heading, if any, is its own article. Nothing is trimmed here.
    """
    lines = text.splitlines(keepends=True)
    articles: list[str] = []
    start = 0
    for i, line in enumerate(lines):
        if (
            i > start
            and _is_article_heading(line)
            and not lines[i - 1].strip()
            and (i + 1 == len(lines) or not lines[i + 1].strip())
        ):
            articles.append("".join(lines[start:i]))
            start = i
    if start < len(lines):
        articles.append("".join(lines[start:]))
    return articles


def _load_wikitext(name: str) -> Corpus:
    parts, detok = _WIKITEXT[name]
    path = data_path(*parts)
    text = _read_text(path)
    articles = split_wikitext_articles(text)
    if detok:
        articles = [wikitext_detokenize(a) for a in articles]
    return _make_corpus(name, str(path), (a.strip() for a in articles))


# --------------------------------------------------------------------------------------------------
# local files


def _read_text(path: Path) -> str:
    try:
        if path.name.lower().endswith(".gz"):
            with gzip.open(path, "rt", encoding="utf-8") as f:
                return f.read()
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BadArgument(f"corpus file not found: {path}; check the path") from None
    except IsADirectoryError:
        raise BadArgument(f"corpus path is a directory, not a file: {path}; pass a file") from None
    except UnicodeDecodeError as e:
        raise BadArgument(f"cannot read corpus file {path}: not UTF-8 text ({e.reason} at byte {e.start}); "
                         "convert it to UTF-8") from None
    except (OSError, EOFError) as e:  # permissions, bad gzip data, truncated gzip
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise BadArgument(f"cannot read corpus file {path}: {reason}; check that it is readable") from None


def _load_txt(path: Path) -> Corpus:
    text = _read_text(path).replace("\r\n", "\n").replace("\r", "\n")
    return _make_corpus(str(path), str(path), [text.strip()])


def _load_jsonl(path: Path, text_field: str) -> Corpus:
    text = _read_text(path)
    docs: list[str] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise BadArgument(f"{path} line {lineno}: not valid JSON ({e.msg}); "
                             "each line must be one JSON object") from None
        if not isinstance(row, dict):
            raise BadArgument(f"{path} line {lineno}: expected a JSON object, got {type(row).__name__}; "
                             "each line must be one JSON object") from None
        if text_field not in row:
            keys = ", ".join(map(str, row)) or "none"
            raise BadArgument(f"{path} line {lineno}: no field {text_field!r} (fields: {keys}); "
                             "pass text_field=<one of these>")
        value = row[text_field]
        if not isinstance(value, str):
            raise BadArgument(f"{path} line {lineno}: field {text_field!r} is {type(value).__name__}, "
                             "not a string; pass the text_field that holds the text")
        docs.append(value)
    return _make_corpus(str(path), str(path), docs)


# --------------------------------------------------------------------------------------------------
# Hugging Face datasets


@contextlib.contextmanager
def _offline_unless_reachable(datasets: Any) -> Iterator[None]:
    """Use only the local datasets cache when the hub does not answer (no ~25 s of retries)."""
    from huggingface_hub import constants

    from negdb.models.loading import hub_reachable

    if constants.HF_HUB_OFFLINE or hub_reachable():
        yield
        return
    with mock.patch.object(datasets.config, "HF_HUB_OFFLINE", True), \
            mock.patch.object(constants, "HF_HUB_OFFLINE", True):
        yield


def _load_hf(spec: str, text_field: str) -> Corpus:
    parts = spec[len("hf:"):].split(":")
    if not parts[0] or len(parts) > 3:
        raise BadArgument(f"bad corpus spec {spec!r}: expected hf:<name>[:<config>][:<split>]")
    name = parts[0]
    config = parts[1] if len(parts) > 1 and parts[1] else None
    split = parts[2] if len(parts) > 2 and parts[2] else "train"
    canonical = f"hf:{name}:{config or ''}:{split}"
    hint = "pass a local .txt/.jsonl file instead (or check the name, config and split)"
    try:
        import datasets
    except ImportError:
        raise BadArgument(f"cannot load {spec!r}: the 'datasets' package is not installed; {hint}") from None
    try:
        with _offline_unless_reachable(datasets):
            ds = datasets.load_dataset(name, config, split=split)
    except Exception as e:  # noqa: BLE001 - datasets raises many kinds (connection, not found, ...)
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        reason = f"{type(e).__name__}: {first}" if first else type(e).__name__
        if len(reason) > 200:
            reason = reason[:197] + "..."
        raise BadArgument(f"cannot load Hugging Face dataset {name!r} (config {config or 'default'}, split {split}): "
                         f"{reason}; the hub or a local datasets cache is needed, {hint}") from None
    columns = list(getattr(ds, "column_names", None) or [])
    if text_field not in columns:
        raise BadArgument(f"{canonical}: no field {text_field!r} (fields: {', '.join(columns) or 'none'}); "
                         "pass text_field=<one of these>")
    texts = list(ds[text_field])
    if texts and not all(isinstance(t, str) for t in texts if t is not None):
        raise BadArgument(f"{canonical}: field {text_field!r} does not hold strings; "
                         "pass the text_field that holds the text")
    return _make_corpus(canonical, name, (t for t in texts if t))


# --------------------------------------------------------------------------------------------------


def load_corpus(spec: str, *, text_field: str = "text") -> Corpus:
    """Load a corpus from a spec (see the module docstring); raises ``BadArgument`` on bad input."""
    if isinstance(spec, os.PathLike):
        spec = os.fspath(spec)
    if not isinstance(spec, str) or not spec.strip():
        raise BadArgument(f"empty corpus spec; {_SPEC_HELP}")
    spec = spec.strip()
    key = spec.lower()
    if key in _WIKITEXT_ALIASES:
        return _load_wikitext(_WIKITEXT_ALIASES[key])
    if key.startswith("hf:"):
        return _load_hf(spec, text_field)

    path = Path(spec).expanduser()
    lname = path.name.lower()
    if lname.endswith(_JSONL_SUFFIXES) or lname.endswith(_TEXT_SUFFIXES):
        if not path.exists():
            raise BadArgument(f"corpus file not found: {path}; check the path")
        path = path.resolve()
        if lname.endswith(_JSONL_SUFFIXES):
            return _load_jsonl(path, text_field)
        return _load_txt(path)
    if path.exists():
        raise BadArgument(f"unsupported corpus file {path}: expected .txt, .txt.gz, .jsonl or .jsonl.gz; "
                         "convert it to one of these")
    if key.startswith("wikitext"):
        raise BadArgument(f"unknown corpus spec {spec!r}: the bundled WikiText-2 splits are "
                         "wikitext-2:valid (default) and wikitext-2:test")
    raise BadArgument(f"unknown corpus spec {spec!r}: {_SPEC_HELP}")
