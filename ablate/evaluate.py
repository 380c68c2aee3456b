"""Evaluate one benchmark under one intervention, stored and resumable.

:func:`evaluate` returns the stored result at once when its key is in the store. Otherwise it scores the items
chunk by chunk, writing each finished chunk to ``<store>/work/eval-<result_id>/``, so an interrupted evaluation
resumes at the first missing chunk; the model is loaded only when something has to be computed. A lock per
result keeps two processes from computing the same one.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from negdb.ablate.interventions import Intervention, apply
from negdb.evals import registry
from negdb.errors import BadArgument
from negdb.evals.run import ScoringRule, dtype_key, primary, score_items, score_windows, summarize
from negdb.evals.windows import plan_windows
from negdb.models.loading import LoadedModel
from negdb.store.layout import StoreLayout
from negdb.store.results import EvalKey, StoredResult, lookup, publish
from negdb.store.runs import library_versions, now
from negdb.store.segments import write_segment

CHUNK_REQUESTS = 2048
"""Requests per resumable chunk (pairs: two per item)."""
CHUNK_WINDOWS = 8
"""Perplexity windows per resumable chunk."""


@dataclass(frozen=True)
class Target:
    """What to evaluate: a checkpoint (``revision``, ``commit``) under an intervention (``None``: baseline)."""

    model_id: str
    revision: str
    commit: str | None
    intervention: Intervention | None
    set_id: str | None

    @property
    def mode(self) -> str:
        return "none" if self.intervention is None or self.set_id is None else self.intervention.mode

    @property
    def n_neurons(self) -> int:
        return 0 if self.intervention is None else self.intervention.size


def make_key(target: Target, benchmark: str, rule: ScoringRule, limit: int | None, seed: int) -> EvalKey:
    """The key of ``benchmark`` on ``target`` (``limit``: items per group, or tokens for perplexity)."""
    ppl = registry.get(benchmark).kind == "perplexity"
    scoring = (("bos", rule.bos), ("window", rule.window)) if ppl else (("bos", rule.bos),)
    scoring += tuple(dtype_key(rule.dtype).items())
    sampled = limit is not None and not ppl  # perplexity keeps the first `limit` tokens: no sampling
    return EvalKey(target.model_id, target.revision, target.commit, target.mode, target.set_id, benchmark,
                   registry.spec_hash(benchmark), scoring, limit, seed if sampled else 0)


def _chunks(n: int, size: int) -> list[tuple[int, int]]:
    return [(a, min(a + size, n)) for a in range(0, n, size)]


def _read_chunk(path: Path) -> tuple[list[dict[str, Any]], float]:
    table = pq.read_table(path)
    seconds = float((table.schema.metadata or {}).get(b"seconds", b"0"))
    return table.to_pylist(), seconds


def _write_chunk(path: Path, rows: list[dict[str, Any]], seconds: float) -> None:
    table = pa.Table.from_pylist(rows) if rows else pa.table({})
    write_segment(path, table.replace_schema_metadata({"seconds": repr(seconds)}), exclusive=False)


def evaluate(layout: StoreLayout, target: Target, benchmark: str, rule: ScoringRule, *,
             get_lm: Callable[[], LoadedModel], limit: int | None = None, seed: int = 0,
             batch_tokens: int = 8192, progress: bool = True, label: str = "") -> StoredResult:
    """The stored result of ``benchmark`` on ``target``, computing (and storing) it if needed.

    Args:
        get_lm: returns the loaded model of ``target`` (called only when there is work).
        limit: items per group (BLiMP paradigm, TSE phenomenon, or the whole benchmark), seeded by ``seed``;
            for perplexity, the number of text tokens. ``None``: everything.
    """
    key = make_key(target, benchmark, rule, limit, seed)
    rid = key.result_id
    found = lookup(layout, rid)
    if found is not None:
        return found
    with layout.guard(f"eval-{rid}", done=lambda: lookup(layout, rid) is not None):
        found = lookup(layout, rid)
        if found is not None:
            return found
        lm = get_lm()
        _check_dtype(lm, rule)
        return _compute(layout, target, key, rule, lm, limit, seed, batch_tokens, progress, label)


def _check_dtype(lm: LoadedModel, rule: ScoringRule) -> None:
    """The model runs in the dtype the result's key says (a float32 key never labels bfloat16 numbers)."""
    dtype = getattr(getattr(lm, "model", None), "dtype", None)
    if dtype is not None and str(dtype).removeprefix("torch.") != rule.dtype:
        raise BadArgument(f"the model is loaded in {str(dtype).removeprefix('torch.')} but the scoring rule says "
                          f"{rule.dtype}: load it with dtype={rule.dtype}")


def _compute(layout: StoreLayout, target: Target, key: EvalKey, rule: ScoringRule, lm: LoadedModel,
             limit: int | None, seed: int, batch_tokens: int, progress: bool, label: str) -> StoredResult:
    spec = registry.get(key.benchmark)
    work = layout.work_dir(f"eval-{key.result_id}")
    work.mkdir(parents=True, exist_ok=True)
    if spec.kind == "perplexity":
        ids = _token_ids(lm.tokenizer, "\n".join(it.text or "" for it in registry.load_items(spec.name)))
        units: list[Any] = plan_windows(ids, window=rule.window_for(lm), bos_id=rule.bos_id(lm), max_tokens=limit)
        spans = _chunks(len(units), CHUNK_WINDOWS)
        sizes = [sum(len(w.ids) for w in units[a:b]) for a, b in spans]
        unit = "tok"
    else:
        units = registry.load_items(spec.name, limit=limit, seed=seed)
        per = max(1, CHUNK_REQUESTS // max(1, len(units[0].requests))) if units else 1
        spans = _chunks(len(units), per)
        sizes = [sum(len(it.requests) for it in units[a:b]) for a, b in spans]
        unit = "req"
    items: list[dict[str, Any]] = []
    tokens: list[dict[str, Any]] = []
    seconds = 0.0
    bar = tqdm(total=sum(sizes), unit=unit, unit_scale=True, desc=f"{label or target.mode} {spec.name}",
               disable=not progress, leave=False, dynamic_ncols=True)
    try:
        with apply(lm, target.intervention) if target.intervention is not None else contextlib.nullcontext():
            for (a, b), size in zip(spans, sizes):
                path = work / f"chunk-{a:07d}-{b:07d}.parquet"  # named by its span: a resume after a change
                tpath = work / f"tokens-{a:07d}-{b:07d}.parquet"  # of chunk size never reuses the wrong items
                if path.exists() and (spec.kind != "perplexity" or tpath.exists()):
                    rows, took = _read_chunk(path)
                    if len(rows) == b - a:
                        items.extend(rows)
                        if spec.kind == "perplexity":
                            tokens.extend(_read_chunk(tpath)[0])
                        seconds += took
                        bar.update(size)
                        continue
                t0 = time.perf_counter()
                if spec.kind == "perplexity":
                    rows, toks = score_windows(lm, spec.name, units[a:b], rule, batch_tokens=batch_tokens)
                    took = time.perf_counter() - t0
                    _write_chunk(tpath, toks, took)
                    tokens.extend(toks)
                else:
                    rows = score_items(lm, units[a:b], rule, batch_tokens=batch_tokens)
                    took = time.perf_counter() - t0
                _write_chunk(path, rows, took)
                items.extend(rows)
                seconds += took
                bar.update(size)
    finally:
        bar.close()
    metrics = summarize(spec, items)
    name, value = primary(spec, metrics)
    row = {"result_id": key.result_id, "model_id": key.model_id, "revision": key.revision, "commit": key.commit,
           "mode": key.mode, "set_id": key.set_id, "n_neurons": target.n_neurons, "benchmark": spec.name,
           "bench_hash": key.bench_hash, "scoring_json": _json(rule.describe(lm, spec)), "item_limit": limit,
           "sample_seed": key.seed, "n_items": len(items), "primary_metric": name, "primary_value": value,
           "seconds": round(seconds, 3), "created_at": now(), "versions_json": _json(library_versions())}
    stored = publish(layout, row, items, metrics, tokens or None)
    shutil.rmtree(work, ignore_errors=True)
    return stored


@lru_cache(maxsize=4)
def _token_ids(tokenizer: Any, text: str) -> tuple[int, ...]:
    """``text`` tokenized once per tokenizer (the probes of a perplexity match share it)."""
    return tuple(tokenizer(text, add_special_tokens=False)["input_ids"])


def _json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, default=str)
