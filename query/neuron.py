"""One neuron: its statistics, the histogram of its stored pre-activations against the fitted Gaussian, and the
token contexts where it is most negative, most positive and closest to zero.

The statistics come from the catalog; the values from the layer's stored Zarr array (one 128-neuron column
stripe per shard is read); the contexts decode the slice's stored token ids with the model's tokenizer
(:func:`negdb.models.loading.load_tokenizer`), staying within the token's window.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from negdb.errors import BadArgument, NegdbError, NotFound
from negdb.query.encode import json_value
from negdb.query.sets import Keys, resolve_keys
from negdb.store.arrays import read_array
from negdb.store.catalog import Catalog

__all__ = ["Context", "Histogram", "NeuronReport", "activations", "contexts_at", "histogram", "layer_array_path",
           "report", "slice_tokenizer", "token_contexts"]

KINDS = ("most_negative", "most_positive", "near_zero")
MARK_OPEN, MARK_CLOSE = "[[", "]]"


@dataclass(frozen=True)
class Histogram:
    """``counts[i]`` values fall in ``[edges[i], edges[i+1])`` (the last bin is closed); ``expected[i]`` is
    ``n * (Phi((edges[i+1]-mean)/std) - Phi((edges[i]-mean)/std))`` for the stored mean and std."""

    edges: np.ndarray
    counts: np.ndarray
    expected: np.ndarray
    n: int
    mean: float
    std: float

    def to_dict(self) -> dict[str, Any]:
        return {"edges": [float(e) for e in self.edges], "counts": [int(c) for c in self.counts],
                "expected": [_finite(float(e)) for e in self.expected], "n": self.n,
                "mean": _finite(self.mean), "std": _finite(self.std)}


@dataclass(frozen=True)
class Context:
    """One token occurrence: its row in the slice, value, window and position, and the text around it with the
    token marked ``[[like this]]`` (without a tokenizer ``token`` is None and ``text`` shows token ids)."""

    row: int
    value: float
    window: int
    position: int
    token_id: int
    token: str | None
    text: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"row": self.row, "value": _finite(self.value), "window": self.window, "position": self.position,
                "token_id": self.token_id, "token": self.token, "text": self.text}


@dataclass
class NeuronReport:
    """Everything ``negdb neuron`` shows about one neuron.

    ``histogram`` and ``contexts`` are None when the layer's activations were not kept; ``notes`` then say why
    (and when the tokenizer could not be loaded, the contexts carry token ids only).
    """

    keys: Keys
    layer: int
    neuron: int
    stats: dict[str, Any]
    histogram: Histogram | None = None
    contexts: dict[str, list[Context]] | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable form (NaN and infinities become None, timestamps ISO strings)."""
        return {**self.keys._asdict(), "layer": self.layer, "neuron": self.neuron,
                "stats": {k: json_value(v) for k, v in self.stats.items()},
                "histogram": self.histogram.to_dict() if self.histogram is not None else None,
                "contexts": ({k: [c.to_dict() for c in v] for k, v in self.contexts.items()}
                             if self.contexts is not None else None),
                "notes": list(self.notes)}


def _finite(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else x


# ------------------------------------------------------------------------------------------------- reading


def _check_index(cat: Catalog, keys: Keys, layer: int, neuron: int | None) -> int:
    """The layer's neuron count; NegdbError when the layer or neuron is out of range."""
    rows = cat.arrow("SELECT layer, count(DISTINCT neuron) AS n FROM neuron_stats WHERE model_id = ? AND "
                     "revision = ? AND slice_id = ? AND spec_id = ? GROUP BY layer ORDER BY layer",
                     list(keys)).to_pylist()
    width = {r["layer"]: r["n"] for r in rows}
    if layer not in width:
        have = sorted(width)
        span = f"{have[0]}-{have[-1]}" if have and have == list(range(have[0], have[-1] + 1)) else str(have)
        raise NotFound(f"layer {layer} out of range: {keys.model_id}@{keys.revision} has statistics for "
                         f"layers {span}")
    if neuron is not None and not 0 <= neuron < width[layer]:
        raise NotFound(f"neuron {neuron} out of range: layer {layer} has neurons 0-{width[layer] - 1}")
    return width[layer]


def _array_path(cat: Catalog, keys: Keys, layer: int) -> Path | str:
    rows = cat.arrow("SELECT array_path FROM activations WHERE model_id = ? AND revision = ? AND slice_id = ? "
                     "AND layer = ? LIMIT 1", [keys.model_id, keys.revision, keys.slice_id, layer]).to_pylist()
    path = cat.location(rows[0]["array_path"]) if rows else None
    if path is None or (isinstance(path, Path) and not path.exists()):
        raise NotFound(f"the activations of layer {layer} of {keys.model_id}@{keys.revision} were not kept: "
                         "re-ingest with `--activations all` to store them (the statistics are still shown by "
                         "`negdb neuron`)")
    return path


def _read(cat: Catalog, keys: Keys, layer: int, neuron: int | None) -> np.ndarray:
    path = _array_path(cat, keys, layer)
    return read_array(path, (slice(None), neuron) if neuron is not None else Ellipsis)


def activations(cat: Catalog, model: str, revision: str | None, layer: int, neuron: int | None = None, *,
                slice_id: str | None = None, spec_id: str | None = None) -> np.ndarray:
    """Stored pre-activations: ``(n_tokens,)`` of one neuron, or ``(n_tokens, d_mlp)`` of the whole layer, in the
    stored dtype (float16 by default). Keys not given default to the latest ingest of ``model``.

    Raises:
        NegdbError: unknown model/checkpoint, layer or neuron out of range, or activations not kept.
    """
    keys = resolve_keys(cat, model, revision, slice_id, spec_id)
    _check_index(cat, keys, int(layer), None if neuron is None else int(neuron))
    return _read(cat, keys, int(layer), None if neuron is None else int(neuron))


def histogram(x: np.ndarray, mean: float, std: float, bins: int = 40) -> Histogram:
    """Histogram of ``x`` with the expected counts of N(mean, std) per bin."""
    from scipy.special import ndtr

    values = np.asarray(x, dtype=np.float64)
    counts, edges = np.histogram(values, bins=bins)
    n = int(values.size)
    if std is not None and math.isfinite(std) and std > 0 and mean is not None and math.isfinite(mean):
        expected = n * np.diff(ndtr((edges - mean) / std))
    else:  # a constant neuron: the degenerate Gaussian puts everything in the bin of its mean
        expected = np.zeros(len(counts))
        if n and mean is not None and math.isfinite(mean):
            idx = int(np.clip(np.searchsorted(edges, mean, side="right") - 1, 0, len(counts) - 1))
            expected[idx] = n
    return Histogram(edges=edges, counts=counts.astype(np.int64), expected=expected, n=n,
                     mean=float(mean) if mean is not None else math.nan,
                     std=float(std) if std is not None else math.nan)


@lru_cache(maxsize=8)
def _tokenizer(model_id: str, revision: str, step: int | None, tokens_seen: int | None, location: str) -> Any:
    from negdb.models.checkpoints import Checkpoint
    from negdb.models.loading import load_tokenizer
    from negdb.models.registry import resolve

    source = resolve(model_id)
    return load_tokenizer(source, Checkpoint(revision, step, tokens_seen, location or source.location))


def slice_tokenizer(cat: Catalog, keys: Keys) -> Any:
    """The tokenizer of the checkpoint of ``keys`` (cached per checkpoint)."""
    rows = cat.arrow("SELECT step, tokens_seen, location FROM checkpoints WHERE model_id = ? AND revision = ? "
                     "LIMIT 1", [keys.model_id, keys.revision]).to_pylist()
    row = rows[0] if rows else {"step": None, "tokens_seen": None, "location": ""}
    return _tokenizer(keys.model_id, keys.revision, row["step"], row["tokens_seen"], row["location"] or "")


def _decode(tokenizer: Any, ids: np.ndarray) -> str:
    if len(ids) == 0:
        return ""
    if tokenizer is None:
        return " ".join(f"<{int(i)}>" for i in ids)
    return tokenizer.decode([int(i) for i in ids], skip_special_tokens=False, clean_up_tokenization_spaces=False)


def _context(row: int, value: float, token_ids: np.ndarray, windows: np.ndarray, positions: np.ndarray,
             tokenizer: Any, width: int) -> Context:
    n = len(token_ids)
    lo, hi = max(0, row - width), min(n, row + width + 1)
    same = np.nonzero(windows[lo:hi] == windows[row])[0] + lo  # windows are contiguous runs of rows
    lo, hi = int(same.min()), int(same.max()) + 1
    start_cut = positions[lo] > 0
    end_cut = hi < n and windows[hi] == windows[row]
    target = token_ids[row:row + 1]
    token = _decode(tokenizer, target)
    text = (("..." if start_cut else "") + _decode(tokenizer, token_ids[lo:row]) + MARK_OPEN + token + MARK_CLOSE
            + _decode(tokenizer, token_ids[row + 1:hi]) + ("..." if end_cut else ""))
    return Context(row=int(row), value=float(value), window=int(windows[row]), position=int(positions[row]),
                   token_id=int(target[0]), token=token if tokenizer is not None else None, text=text)


def layer_array_path(cat: Catalog, keys: Keys, layer: int) -> Path:
    """The stored pre-activation array of one layer; its slice group (token ids, md inputs) is two folders up.

    Raises:
        NegdbError: the layer's activations were not kept.
    """
    return _array_path(cat, keys, int(layer))


def slice_vectors(group: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The token ids, window and position indices of a slice group (checked: StoreDamaged, never zeros)."""
    return read_array(group / "token_ids"), read_array(group / "window"), read_array(group / "position")


def contexts_at(group: Path, rows: np.ndarray, values: np.ndarray, tokenizer: Any, width: int = 8) -> list[Context]:
    """Token contexts of the slice ``rows`` (flat token indices) of the slice group ``group``, in order."""
    token_ids, windows, positions = slice_vectors(group)
    return [_context(int(r), float(v), token_ids, windows, positions, tokenizer, width)
            for r, v in zip(np.asarray(rows).reshape(-1), np.asarray(values).reshape(-1))]


def token_contexts(x: np.ndarray, group: Path, tokenizer: Any, k: int = 5, width: int = 8) -> dict[str, list[Context]]:
    """Token contexts of the ``k`` most negative, most positive and closest-to-zero values of ``x`` (ties: lower
    row first), each with ``width`` tokens either side within the token's window."""
    token_ids, windows, positions = slice_vectors(group)
    values = np.asarray(x, dtype=np.float64)
    orders = {"most_negative": np.argsort(values, kind="stable"),
              "most_positive": np.argsort(-values, kind="stable"),
              "near_zero": np.argsort(np.abs(values), kind="stable")}
    return {kind: [_context(int(r), values[r], token_ids, windows, positions, tokenizer, width)
                   for r in order[:k]] for kind, order in orders.items()}


def report(cat: Catalog, model: str, revision: str | None, layer: int, index: int, *, bins: int = 40,
           contexts: int = 5, window: int = 8, slice_id: str | None = None, spec_id: str | None = None,
           tokenizer: Any = None) -> NeuronReport:
    """Statistics, histogram with the fitted Gaussian's expected counts, and token contexts of one neuron.

    Args:
        cat: the catalog.
        model, revision: the model (a stored key or anything ``--model`` accepts) and checkpoint (None: the
            latest ingested; ``final`` also finds the final checkpoint stored as ``step<N>``).
        layer, index: the neuron.
        bins: histogram bins; contexts: tokens per context list; window: tokens shown either side.
        tokenizer: decode with this tokenizer instead of loading the model's.

    When the layer's activations were not kept the report holds the statistics only, with a note.
    """
    if bins < 1:
        raise BadArgument("--bins must be at least 1")
    if contexts < 0 or window < 0:
        raise BadArgument("--contexts and --window must not be negative")
    keys = resolve_keys(cat, model, revision, slice_id, spec_id)
    layer, index = int(layer), int(index)
    _check_index(cat, keys, layer, index)
    row = cat.arrow("SELECT * FROM neurons WHERE model_id = ? AND revision = ? AND slice_id = ? AND spec_id = ? "
                    "AND layer = ? AND neuron = ? LIMIT 1", [*keys, layer, index]).to_pylist()[0]
    out = NeuronReport(keys=keys, layer=layer, neuron=index, stats=row)
    try:
        path = _array_path(cat, keys, layer)
    except NegdbError as err:
        out.notes.append(str(err))
        return out
    x = read_array(path, (slice(None), index))
    out.histogram = histogram(x, row["mean"], row["std"], bins)
    if contexts:
        tok = tokenizer
        if tok is None:
            try:
                tok = slice_tokenizer(cat, keys)
            except Exception as err:  # noqa: BLE001 - any failure to load it only costs the decoded text
                out.notes.append(f"the tokenizer of {keys.model_id} could not be loaded ({err}); contexts show "
                                 "token ids")
        out.contexts = token_contexts(x, path.parent.parent, tok, contexts, window)
    else:
        out.contexts = {kind: [] for kind in KINDS}
    return out
