"""Benchmark definitions (``negdb.data/benchmarks.json``) and their items.

The definitions are data: each benchmark names its bundled file(s), its kind, the fields to read, the prompt
template and its metrics. :func:`load_items` turns the rows into :class:`Item` s, each holding the
``(context, continuation)`` requests that :func:`negdb.evals.scoring.score_continuations` scores.

Kinds and the requests of one item:

- ``minimal_pairs`` (BLiMP, TSE): two requests, the good sentence first (``gold == 0``), then the bad one.
- ``multiple_choice`` (ARC, PIQA, HellaSwag, BoolQ, COPA, OpenBookQA): one request per choice, same context.
- ``partial`` (WinoGrande): one request per option context, same continuation.
- ``last_word`` (LAMBADA): one request (the final word after its context), ``gold == 0``.
- ``perplexity`` (WikiText-2): no requests; ``text`` holds the text to score with
  :func:`negdb.evals.scoring.perplexity`.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from negdb.data import data_path
from negdb.errors import BadArgument, NotFound

KINDS = ("minimal_pairs", "multiple_choice", "partial", "last_word", "perplexity")
SPEC_FILE = "benchmarks.json"
PERPLEXITY_BENCHMARK = "wikitext2"
"""The perplexity benchmark (WikiText-2 raw test): perplexity matching, POS surprisal and ``--ppl-tokens``."""


@dataclass(frozen=True)
class BenchmarkSpec:
    """One benchmark as defined in ``benchmarks.json`` (see that file's ``about``)."""

    name: str
    kind: str
    files: tuple[str, ...]
    fields: dict[str, Any]
    metrics: tuple[str, ...]
    template: dict[str, str] = field(default_factory=dict)
    group: str | None = None
    meta: tuple[str, ...] = ()
    preprocess: str | None = None
    split: str | None = None
    expected: dict[str, int] = field(default_factory=dict)
    notes: str = ""


@dataclass(frozen=True)
class Item:
    """One scored unit of a benchmark.

    Attributes:
        benchmark: the benchmark's name.
        kind: the benchmark's kind.
        index: the row's position in the benchmark (files in sorted order, rows in file order).
        id: the row's own id where it has one (BLiMP ``pairID``, TSE ``item``), else ``str(index)``.
        group: the grouping value (BLiMP ``UID``, TSE ``phenomenon``), else ``None``.
        meta: the grouping fields named by the spec's ``meta`` (e.g. BLiMP ``field``, ``linguistics_term``).
        requests: the ``(context, continuation)`` pairs to score, in choice order.
        choices: the choice strings without the target delimiter (their character lengths give acc_norm).
        gold: index of the correct request (minimal pairs: 0, the good sentence).
        text: the text to score (``perplexity`` kind only).
    """

    benchmark: str
    kind: str
    index: int
    id: str
    group: str | None
    meta: dict[str, str]
    requests: tuple[tuple[str, str], ...]
    choices: tuple[str, ...]
    gold: int | None
    text: str | None = None


# ---------------------------------------------------------------------------------------------- specs


def _spec(name: str, raw: dict[str, Any]) -> BenchmarkSpec:
    kind = raw.get("kind")
    if kind not in KINDS:
        raise BadArgument(f"benchmark {name!r} in {SPEC_FILE} has kind {kind!r}; expected one of {', '.join(KINDS)}")
    if not raw.get("files"):
        raise BadArgument(f"benchmark {name!r} in {SPEC_FILE} names no files")
    pre = raw.get("preprocess")
    if pre is not None and pre not in PREPROCESS:
        raise BadArgument(f"benchmark {name!r}: unknown preprocess {pre!r}; known: {', '.join(sorted(PREPROCESS))}")
    return BenchmarkSpec(
        name=name,
        kind=kind,
        files=tuple(raw["files"]),
        fields=dict(raw.get("fields", {})),
        metrics=tuple(raw.get("metrics", ())),
        template=dict(raw.get("template", {})),
        group=raw.get("group"),
        meta=tuple(raw.get("meta", ())),
        preprocess=pre,
        split=raw.get("split"),
        expected=dict(raw.get("expected", {})),
        notes=raw.get("notes", ""),
    )


@lru_cache(maxsize=4)
def _load_raw(path: str) -> dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


@lru_cache(maxsize=4)
def _load_specs(path: str) -> dict[str, BenchmarkSpec]:
    return {name: _spec(name, spec) for name, spec in _load_raw(path)["benchmarks"].items()}


def aliases() -> dict[str, list[str]]:
    """Named groups of benchmarks (``ppl``, ``grammar``, ``suite``) from ``benchmarks.json``."""
    return {k: list(v) for k, v in _load_raw(str(data_path(SPEC_FILE))).get("aliases", {}).items()}


def expand(names: str | list[str]) -> list[str]:
    """Benchmark names from a comma list of names and aliases (``"ppl,blimp,suite"``), order kept, no repeats."""
    parts = [p.strip() for p in names.split(",")] if isinstance(names, str) else [str(p).strip() for p in names]
    specs, groups = benchmarks(), aliases()
    out: list[str] = []
    for part in filter(None, parts):
        if part not in specs and part not in groups:
            raise BadArgument(f"unknown benchmark {part!r}: use {', '.join([*groups, *specs])}")
        for name in groups.get(part, [part]):
            if name not in out:
                out.append(name)
    if not out:
        raise BadArgument("no benchmarks given: use e.g. --evals ppl,blimp,tse,suite")
    return out


def spec_hash(name: str) -> str:
    """SHA-256 over the benchmark's definition and the bytes of its data files (what a stored result depends on)."""
    spec = get(name)
    raw = _load_raw(str(data_path(SPEC_FILE)))["benchmarks"][name]
    h = hashlib.sha256(json.dumps(raw, sort_keys=True).encode())
    for rel in _files(spec):
        h.update(rel.encode())
        h.update(_file_digest(str(data_path(rel))).encode())
    return h.hexdigest()


@lru_cache(maxsize=64)
def _file_digest(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def benchmarks() -> dict[str, BenchmarkSpec]:
    """Every benchmark defined in the bundled ``benchmarks.json``, by name."""
    return dict(_load_specs(str(data_path(SPEC_FILE))))


def get(name: str) -> BenchmarkSpec:
    """The spec of benchmark ``name``; ``NegdbError`` listing the known ones if there is none."""
    specs = benchmarks()
    if name not in specs:
        raise BadArgument(f"unknown benchmark {name!r}; known: {', '.join(specs)}")
    return specs[name]


# ---------------------------------------------------------------------------------------- preprocessing


def _hellaswag_text(text: str) -> str:
    """lm-evaluation-harness ``hellaswag.utils.preprocess``."""
    text = text.strip()
    text = text.replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    return text.replace("  ", " ")


def _hellaswag(row: dict[str, Any]) -> dict[str, Any]:
    ctx = row["ctx_a"] + " " + row["ctx_b"].capitalize()
    return {**row, "query": _hellaswag_text(row["activity_label"] + ": " + ctx),
            "endings": [_hellaswag_text(e) for e in row["endings"]]}


_COPA = re.compile(r",\s*(because|therefore)$")


def _copa(row: dict[str, Any]) -> dict[str, Any]:
    choices = [c[:1].lower() + c[1:] for c in row["choices"]]
    return {**row, "query": _COPA.sub(r" \1", row["query"].strip()), "choices": choices}


PREPROCESS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {"hellaswag": _hellaswag, "copa": _copa}
"""Named row preprocessing steps a spec may ask for (``"preprocess": name``)."""


# --------------------------------------------------------------------------------------------- items


def _files(spec: BenchmarkSpec) -> list[str]:
    root = data_path(SPEC_FILE).parent
    out: list[str] = []
    for pattern in spec.files:
        hits = sorted(p.relative_to(root).as_posix() for p in root.glob(pattern))
        if not hits:
            raise NotFound(f"benchmark {spec.name!r}: no bundled file matches {pattern!r}")
        out.extend(hits)
    return out


def _rows(path: str) -> list[dict[str, Any]]:
    with gzip.open(data_path(path), "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _read_field(row: dict[str, Any], key: str | list[str]) -> Any:
    if isinstance(key, list):
        return [row[k] for k in key]
    return row[key]


def _item(spec: BenchmarkSpec, index: int, row: dict[str, Any]) -> Item:
    f, t = spec.fields, spec.template
    group = str(row[spec.group]) if spec.group else None
    meta = {k: str(row[k]) for k in spec.meta if k in row}
    rid = str(row[f["id"]]) if "id" in f else str(index)
    if spec.kind == "minimal_pairs":
        sentences = (row[f["good"]], row[f["bad"]])
        ctx = t["context"].format(**row)
        reqs = tuple((ctx, t["continuation"].format(**{**row, "sentence": s})) for s in sentences)
        return Item(spec.name, spec.kind, index, rid, group, meta, reqs, sentences, 0)
    if spec.kind == "multiple_choice":
        query = _read_field(row, f["query"])
        choices = tuple(str(c) for c in _read_field(row, f["choices"]))
        ctx = t["context"].format(**{**row, "query": query})
        reqs = tuple((ctx, t["continuation"].format(**{**row, "choice": c})) for c in choices)
        return Item(spec.name, spec.kind, index, rid, group, meta, reqs, choices, int(row[f["gold"]]))
    if spec.kind == "partial":
        contexts = tuple(_read_field(row, f["contexts"]))
        cont = t["continuation"].format(**{**row, "continuation": row[f["continuation"]]})
        reqs = tuple((t["context"].format(**{**row, "context": c}), cont) for c in contexts)
        return Item(spec.name, spec.kind, index, rid, group, meta, reqs, contexts, int(row[f["gold"]]))
    if spec.kind == "last_word":
        ctx = t["context"].format(**{**row, "context": row[f["context"]]})
        cont = t["continuation"].format(**{**row, "continuation": row[f["continuation"]]})
        return Item(spec.name, spec.kind, index, rid, group, meta, ((ctx, cont),), (row[f["continuation"]],), 0)
    raise AssertionError(spec.kind)


def _text_items(spec: BenchmarkSpec) -> list[Item]:
    texts = []
    for path in _files(spec):
        with gzip.open(data_path(path), "rt", encoding="utf-8", newline="") as fh:
            texts.append(fh.read())
    if spec.split == "articles":
        from negdb.ingest.corpus import split_wikitext_articles

        texts = [a for t in texts for a in split_wikitext_articles(t)]
    elif spec.split not in (None, "none"):
        raise BadArgument(f"benchmark {spec.name!r}: unknown split {spec.split!r} (none | articles)")
    return [Item(spec.name, spec.kind, i, str(i), None, {}, (), (), None, text=t) for i, t in enumerate(texts)]


@lru_cache(maxsize=16)
def _all_items(name: str) -> tuple[Item, ...]:
    spec = get(name)
    if spec.kind == "perplexity":
        return tuple(_text_items(spec))
    pre = PREPROCESS[spec.preprocess] if spec.preprocess else None
    items: list[Item] = []
    for path in _files(spec):
        for row in _rows(path):
            items.append(_item(spec, len(items), pre(row) if pre else row))
    return tuple(items)


def _group_seed(seed: int, group: str | None) -> list[int]:
    return [seed, zlib.crc32((group or "").encode("utf-8"))]


def load_items(name: str, limit: int | None = None, seed: int = 0) -> list[Item]:
    """The items of benchmark ``name`` in their source order.

    Args:
        name: a key of :func:`benchmarks`.
        limit: keep at most ``limit`` items per group (BLiMP paradigm, TSE phenomenon; the whole benchmark when it
            has no groups), drawn without replacement with a seed derived from ``seed`` and the group name, so a
            group's draw does not depend on the other groups. An item is a whole pair or question: none is split.
            The kept items stay in source order.
        seed: the sampling seed.
    """
    items = _all_items(name)
    if limit is None:
        return list(items)
    if limit < 0:
        raise BadArgument(f"limit must be >= 0, got {limit}")
    by_group: dict[str | None, list[int]] = {}
    for i, item in enumerate(items):
        by_group.setdefault(item.group, []).append(i)
    keep: list[int] = []
    for group, idx in by_group.items():
        if len(idx) <= limit:
            keep.extend(idx)
        else:
            rng = np.random.default_rng(_group_seed(seed, group))
            keep.extend(idx[j] for j in rng.choice(len(idx), size=limit, replace=False))
    return [items[i] for i in sorted(keep)]
