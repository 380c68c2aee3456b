"""Shared helpers of the ablation tests: brute-force bootstrap references and synthetic stored results.

The references here are written from the definitions (docs/DEFINITIONS.md, the docstrings of
:mod:`negdb.evals.metrics`), with plain Python loops, not by calling the code under test.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile with linear interpolation between closest ranks (numpy's default), by hand."""
    xs = sorted(float(v) for v in values)
    h = (len(xs) - 1) * q / 100.0
    lo = math.floor(h)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (h - lo) * (xs[hi] - xs[lo])


def draws(rng: np.random.Generator, n: int, n_boot: int) -> list[list[int]]:
    """``n_boot`` resamples of ``range(n)`` with replacement, consuming ``rng`` as one ``(n_boot, n)`` block.

    The block is drawn the way the documented procedure draws it (``rng.integers(0, n, size=(n_boot, n))``); the
    rest of each reference is plain Python.
    """
    return rng.integers(0, n, size=(n_boot, n)).tolist()


def stratified_reference(strata: Sequence[tuple[Sequence[float], Sequence[float]]], n_boot: int, seed: int
                         ) -> tuple[float, list[float]]:
    """Observed macro difference and the ``n_boot`` resampled ones: per stratum, in order, one block of draws
    from ``default_rng(seed)``; each draw's macro difference is the mean over strata of the mean resampled
    ``a - b``."""
    rng = np.random.default_rng(seed)
    per_stratum = []
    observed = 0.0
    for a, b in strata:
        d = [float(x) - float(y) for x, y in zip(a, b)]
        observed += sum(d) / len(d)
        per_stratum.append([sum(d[i] for i in row) / len(d) for row in draws(rng, len(d), n_boot)])
    boots = [sum(s[k] for s in per_stratum) / len(strata) for k in range(n_boot)]
    return observed / len(strata), boots


def ci(boots: Sequence[float]) -> tuple[float, float]:
    return percentile(boots, 2.5), percentile(boots, 97.5)


def ppl_reference(nll_a: Sequence[float], n_a: Sequence[float], nll_b: Sequence[float], n_b: Sequence[float],
                  n_boot: int, seed: int) -> tuple[float, float, float]:
    """Paired bootstrap of ``exp(sum nll_a / sum n_a) - exp(sum nll_b / sum n_b)`` over units, by hand."""
    rng = np.random.default_rng(seed)
    boots = []
    for row in draws(rng, len(nll_a), n_boot):
        pa = math.exp(sum(nll_a[i] for i in row) / sum(n_a[i] for i in row))
        pb = math.exp(sum(nll_b[i] for i in row) / sum(n_b[i] for i in row))
        boots.append(pa - pb)
    delta = math.exp(sum(nll_a) / sum(n_a)) - math.exp(sum(nll_b) / sum(n_b))
    return (delta, *ci(boots))


def fake_result_id(*parts: Any) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()


def publish_synthetic(layout: Any, benchmark: str, items: list[dict[str, Any]], *, tag: str, mode: str = "none",
                      set_id: str | None = None, n_neurons: int = 0) -> Any:
    """Publish ``items`` (``eval_items`` rows without ``result_id``) as a stored result of ``benchmark``."""
    from negdb.evals import registry
    from negdb.evals.run import primary, summarize
    from negdb.store.results import publish

    spec = registry.get(benchmark)
    metrics = summarize(spec, items)
    name, value = primary(spec, metrics)
    rid = fake_result_id(benchmark, tag, mode, set_id)
    row = {"result_id": rid, "model_id": "synthetic", "revision": "final", "commit": None, "mode": mode,
           "set_id": set_id, "n_neurons": n_neurons, "benchmark": benchmark, "bench_hash": "x",
           "scoring_json": "{}", "item_limit": None, "sample_seed": 0, "n_items": len(items),
           "primary_metric": name, "primary_value": value, "seconds": 0.0, "created_at": None,
           "versions_json": "{}"}
    return publish(layout, row, items, metrics)


def choice_items(benchmark: str, correct: Sequence[bool], alt: Sequence[bool] | None = None,
                 groups: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Synthetic accuracy items (decisions given; scores made up consistently enough for summarize)."""
    out = []
    for i, c in enumerate(correct):
        out.append({"benchmark": benchmark, "item": i, "item_id": str(i),
                    "grp": None if groups is None else groups[i], "meta_json": None, "correct": bool(c),
                    "correct_alt": None if alt is None else bool(alt[i]), "logprobs": [-1.0, -2.0],
                    "n_tokens": [1, 1], "greedy": [False, False], "prefix_id": None})
    return out


def window_items(benchmark: str, nll: Sequence[float], n: Sequence[int],
                 greedy: Sequence[bool] | None = None) -> list[dict[str, Any]]:
    """Synthetic perplexity windows (``benchmark="wikitext2"``) or LAMBADA items (``n`` ones, ``greedy``)."""
    out = []
    for i, (v, k) in enumerate(zip(nll, n)):
        g = bool(greedy[i]) if greedy is not None else None
        out.append({"benchmark": benchmark, "item": i, "item_id": str(i), "grp": None, "meta_json": None,
                    "correct": g, "correct_alt": None, "logprobs": [-float(v)], "n_tokens": [int(k)],
                    "greedy": [bool(g)], "prefix_id": None})
    return out


WIKI_CHARS = 20_000
"""WikiText-2 is cut to this many characters in the ablate tests: they read at most a few hundred tokens of it."""


def short_wikitext_loader(real: Any) -> Any:
    """A ``registry.load_items`` that returns WikiText-2 cut to :data:`WIKI_CHARS` characters (others unchanged)."""
    import dataclasses

    def load(name: str, limit: int | None = None, seed: int = 0) -> Any:
        items = real(name, limit=limit, seed=seed)
        if name == "wikitext2":
            items = [dataclasses.replace(it, text=it.text[:WIKI_CHARS]) for it in items]
        return items

    return load


def table_files(store: Path, table: str) -> dict[str, int]:
    """The published segments of one table (name -> modification time): to check that a command stored nothing."""
    return {p.name: p.stat().st_mtime_ns for p in (store / "tables" / table).glob("*.parquet")}
