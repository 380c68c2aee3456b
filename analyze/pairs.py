"""``negdb analyze pairs``: token pairs one neuron differentiates, and the negative share of non-Gaussianity.

Pairs (one neuron, from the stored md pairs (a_k, b_k), their MLP inputs h and the stored pre-activations x):
``d_in[k] = ||h[a_k] - h[b_k]|| / max_k ||...||``, ``d_out[k] = |x[a_k] - x[b_k]| / median_k |...|``,
``ratio = d_out / d_in``, so the neuron's ``md`` is the mean ratio. As in :mod:`negdb.stats.mapping`, pairs with
d_in == 0 are dropped from the median and the mean, and a zero median leaves every ratio undefined (NaN).
Each pair has a sign class: ``neg`` (x_a < 0 and x_b < 0), ``pos`` (both >= 0) or ``mixed``. The top ``k``
pairs by ratio (ties: lower pair index first) among the ``neg`` pairs (all pairs with ``all_signs``) are reported
with their tokens and contexts.

Shares (every layer with statistics of the checkpoint, and all layers together as layer NULL), from
``neuron_stats`` only: for the layer's top 1% by w_dist (``top1``, :func:`negdb.query.sets.select`), the other
neurons (``rest``) and ``all``: the mean over neurons of ``w_dist_neg / w_dist``, the pooled
``sum w_dist_neg / sum w_dist``, the mean ``frac_neg``, and a 95% percentile bootstrap CI of the mean share
(neurons resampled with replacement, :func:`negdb.evals.metrics.bootstrap_samples`, seeded). Neurons with an
undefined share (w_dist not > 0) are left out of every number of their group.

The analysis is stored (:mod:`negdb.analyze.record`): ``diff_pairs`` and ``neg_share`` rows, then the
``analyses`` row; a repeated call reads them back and computes nothing.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from negdb.analyze.record import Timer, analysis_id, lookup, publish
from negdb.errors import BadArgument, NegdbError, NotFound, StoreError
from negdb.evals.metrics import bootstrap_samples
from negdb.evals.options import Bootstrap
from negdb.ingest.layerstats import PairPlan
from negdb.query import neuron as nq
from negdb.query.sets import Keys, layer_widths, resolve_keys, select
from negdb.stats.mapping import input_distances
from negdb.store.arrays import layer_name, md_group_name, read_array
from negdb.store.catalog import Catalog
from negdb.store.layout import StoreLayout
from negdb.store.tables import DIFF_PAIRS, NEG_SHARE, Table
from negdb.values import as_int

__all__ = ["PairAnalysis", "PairsSpec", "PairScores", "class_summary", "neg_shares", "pair_scores", "run",
           "share_stats", "sign_classes", "top_pairs"]

KIND = "pairs"
SIGN_CLASSES = ("neg", "pos", "mixed")
SELECTIONS = ("top1", "rest", "all")
TOP_FRACTION = "1%"


# ------------------------------------------------------------------------------------------ pure functions


@dataclass(frozen=True)
class PairScores:
    """Per pair (all P, in stored order): ``d_out`` and ``ratio`` (NaN where undefined), and the median of
    ``|x_a - x_b|`` over the pairs with d_in > 0 (``used``)."""

    d_out: np.ndarray
    ratio: np.ndarray
    used: np.ndarray
    median: float

    @property
    def md(self) -> float:
        """The mean ratio over the used pairs (NaN when undefined): the neuron's mapping difficulty."""
        r = self.ratio[self.used]
        return float(r.mean()) if r.size and np.isfinite(r).all() else math.nan


def pair_scores(x_a: np.ndarray, x_b: np.ndarray, d_in: np.ndarray) -> PairScores:
    """d_out and d_out / d_in of each pair of one neuron (``x_a``, ``x_b``, ``d_in`` of shape ``(P,)``)."""
    x_a, x_b = np.asarray(x_a, dtype=np.float64), np.asarray(x_b, dtype=np.float64)
    d_in = np.asarray(d_in, dtype=np.float64)
    if not (x_a.shape == x_b.shape == d_in.shape) or x_a.ndim != 1:
        raise BadArgument(f"pair_scores needs x_a, x_b and d_in of one (P,) shape, got {x_a.shape}, {x_b.shape}, "
                         f"{d_in.shape}")
    used = d_in > 0
    diff = np.abs(x_a - x_b)
    median = float(np.median(diff[used])) if used.any() else math.nan
    d_out = np.full(diff.shape, np.nan)
    ratio = np.full(diff.shape, np.nan)
    if median > 0:
        d_out[used] = diff[used] / median
        ratio[used] = d_out[used] / d_in[used]
    return PairScores(d_out=d_out, ratio=ratio, used=used, median=median)


def sign_classes(x_a: np.ndarray, x_b: np.ndarray) -> np.ndarray:
    """``neg`` (both < 0), ``pos`` (both >= 0) or ``mixed`` per pair."""
    x_a, x_b = np.asarray(x_a), np.asarray(x_b)
    out = np.full(x_a.shape, "mixed", dtype="<U5")
    out[(x_a < 0) & (x_b < 0)] = "neg"
    out[(x_a >= 0) & (x_b >= 0)] = "pos"
    return out


def top_pairs(ratio: np.ndarray, signs: np.ndarray, k: int, *, all_signs: bool = False) -> np.ndarray:
    """Indices of the ``k`` largest finite ratios among ``neg`` pairs (any pair with ``all_signs``), largest
    first, ties to the lower index."""
    ratio = np.asarray(ratio, dtype=np.float64)
    ok = np.isfinite(ratio) & (True if all_signs else np.asarray(signs) == "neg")
    idx = np.flatnonzero(ok)
    return idx[np.argsort(-ratio[idx], kind="stable")][:max(0, int(k))]


def _num(x: float) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


def class_summary(ratio: np.ndarray, signs: np.ndarray) -> dict[str, dict[str, Any]]:
    """Per sign class and ``all``: pairs with a finite ratio (``n``), their mean and median ratio."""
    ratio, signs = np.asarray(ratio, dtype=np.float64), np.asarray(signs)
    ok = np.isfinite(ratio)
    out = {}
    for name in (*SIGN_CLASSES, "all"):
        r = ratio[ok & ((signs == name) if name != "all" else True)]
        out[name] = {"n": int(r.size), "mean_ratio": _num(r.mean()) if r.size else None,
                     "median_ratio": _num(float(np.median(r))) if r.size else None}
    return out


def share_stats(w_dist: np.ndarray, w_dist_neg: np.ndarray, frac_neg: np.ndarray, *, n_boot: int = 1000,
                seed: int = 0) -> dict[str, Any]:
    """``n_neurons``, ``share_mean``, ``share_pooled``, ``neg_mass_mean``, ``ci_lo``, ``ci_hi`` of one group of
    neurons (those with w_dist > 0; the CI resamples them, ``bootstrap_samples`` with ``seed``)."""
    w = np.asarray(w_dist, dtype=np.float64)
    neg = np.asarray(w_dist_neg, dtype=np.float64)
    mass = np.asarray(frac_neg, dtype=np.float64)
    keep = np.isfinite(w) & (w > 0) & np.isfinite(neg)
    w, neg, mass = w[keep], neg[keep], mass[keep]
    if not w.size:
        return {"n_neurons": 0, "share_mean": None, "share_pooled": None, "neg_mass_mean": None, "ci_lo": None,
                "ci_hi": None}
    share = neg / w
    lo, hi = np.percentile(bootstrap_samples([(share, np.zeros_like(share))], n_boot, seed), [2.5, 97.5])
    return {"n_neurons": int(w.size), "share_mean": float(share.mean()), "share_pooled": float(neg.sum() / w.sum()),
            "neg_mass_mean": _num(float(np.nanmean(mass))) if np.isfinite(mass).any() else None,
            "ci_lo": float(lo), "ci_hi": float(hi)}


def neg_shares(stats: pl.DataFrame, *, n_boot: int = 1000, seed: int = 0) -> list[dict[str, Any]]:
    """NEG_SHARE rows: per layer (ascending), then all layers (layer None), each for top1, rest and all.

    ``stats`` has columns layer, w_dist, w_dist_neg, frac_neg and the boolean ``top1``.
    """
    groups: list[tuple[int | None, pl.DataFrame]] = [
        (int(layer), stats.filter(pl.col("layer") == layer)) for layer in sorted(stats["layer"].unique())]
    groups.append((None, stats))
    rows = []
    for layer, df in groups:
        for sel in SELECTIONS:
            part = df if sel == "all" else df.filter(pl.col("top1") if sel == "top1" else ~pl.col("top1"))
            rows.append({"layer": layer, "selection": sel,
                         **share_stats(part["w_dist"].to_numpy(), part["w_dist_neg"].to_numpy(),
                                       part["frac_neg"].to_numpy(), n_boot=n_boot, seed=seed)})
    return rows


# ---------------------------------------------------------------------------------------------- options


@dataclass(frozen=True)
class PairsSpec:
    """``negdb analyze pairs`` as one value.

    Attributes:
        model, checkpoint: the statistics (default: the latest ingest).
        layer, index: one neuron (both or neither; neither: the per-layer share table only).
        k: pairs reported.
        context: tokens of context shown either side of each pair's tokens (``--context``, formerly ``--window``;
            the stored key keeps the name ``window``).
        all_signs: rank every pair, not only those with both values negative.
        bootstrap: draws and seed of the share CIs.
    """

    model: str
    checkpoint: str | None = None
    layer: int | None = None
    index: int | None = None
    k: int = 20
    context: int = 8
    all_signs: bool = False
    bootstrap: Bootstrap = field(default_factory=Bootstrap)

    def __post_init__(self) -> None:
        if (self.layer is None) != (self.index is None):
            raise BadArgument("--layer and --index name one neuron: give both, or neither for the per-layer "
                              "share table only")
        if self.layer is not None:
            object.__setattr__(self, "layer", as_int(self.layer, "layer", minimum=0))
            object.__setattr__(self, "index", as_int(self.index, "index", minimum=0))
        object.__setattr__(self, "k", as_int(self.k, "k", minimum=1))
        object.__setattr__(self, "context", as_int(self.context, "context", minimum=0))
        if not isinstance(self.all_signs, bool):
            raise BadArgument(f"all_signs must be True or False, got {self.all_signs!r}")
        if not isinstance(self.bootstrap, Bootstrap):
            raise BadArgument(f"bootstrap must be a Bootstrap, got {type(self.bootstrap).__name__}")


# ---------------------------------------------------------------------------------------------- results


def _jsonable(v: Any) -> Any:
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return v


PAIR_COLUMNS = ("rank", "token_a", "token_b", "x_a", "x_b", "d_in", "d_out", "ratio", "signs", "text_a", "text_b",
                "context_a", "context_b")
SHARE_COLUMNS = ("layer", "selection", "n_neurons", "share_mean", "share_pooled", "neg_mass_mean", "ci_lo", "ci_hi")


@dataclass
class PairAnalysis:
    """A stored ``pairs`` analysis: its key, whether it was read back, the summary and both tables."""

    analysis_id: str
    reused: bool
    summary: dict[str, Any]
    pairs: pl.DataFrame
    shares: pl.DataFrame
    config: dict[str, Any] = field(default_factory=dict)

    def frame(self, table: str = "pairs") -> pl.DataFrame:
        """The ``diff_pairs`` rows (``table="pairs"``) or the ``neg_share`` rows (``"shares"``)."""
        if table not in ("pairs", "shares"):
            raise BadArgument(f"unknown pairs table {table!r}: use pairs or shares")
        return self.pairs if table == "pairs" else self.shares

    def to_dict(self) -> dict[str, Any]:
        return _jsonable({"analysis_id": self.analysis_id, "reused": self.reused, "config": self.config,
                          "summary": self.summary, "pairs": self.pairs.to_dicts(), "shares": self.shares.to_dicts()})

    def render(self, fmt: str = "table") -> str:
        """``table`` (text), ``json`` (one document) or ``csv`` (the pairs table, a blank line, the shares table;
        the shares table alone without a neuron)."""
        if fmt == "json":
            return json.dumps(self.to_dict(), indent=2)
        if fmt == "csv":
            parts = [self.pairs] if self.summary.get("neuron") else []
            return "\n".join(_csv(df) for df in [*parts, self.shares]).rstrip("\n")
        if fmt == "table":
            return _table(self)
        raise BadArgument(f"unknown format {fmt!r}: use table, json or csv")


def _csv(df: pl.DataFrame) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(df.columns)
    for row in df.iter_rows():
        w.writerow(["" if v is None or (isinstance(v, float) and not math.isfinite(v)) else v for v in row])
    return buf.getvalue()


def _f(v: Any, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return f"{v:.{digits}g}" if isinstance(v, float) else str(v)


def _table(res: PairAnalysis) -> str:
    s = res.summary
    lines = []
    nr = s.get("neuron")
    if nr:
        which = "pairs (all signs)" if res.config.get("all_signs") else "both-negative pairs"
        lines.append(f"{s['model_id']}@{s['revision']} layer {nr['layer']} neuron {nr['index']}: top "
                     f"{res.pairs.height} of {nr['eligible']} {which} by d_out/d_in (md {_f(nr['md'])}, stored "
                     f"md {_f(nr['md_stored'])}; {nr['n_used']} of {nr['n_pairs']} pairs with d_in > 0)")
        lines.append(f"{'rank':>4} {'x_a':>9} {'x_b':>9} {'d_in':>8} {'d_out':>8} {'ratio':>9}  signs")
        for r in res.pairs.iter_rows(named=True):
            lines.append(f"{r['rank']:>4} {_f(r['x_a']):>9} {_f(r['x_b']):>9} {_f(r['d_in']):>8} "
                         f"{_f(r['d_out']):>8} {_f(r['ratio']):>9}  {r['signs']}")
            lines.append(f"     a: {r['context_a']!r}")
            lines.append(f"     b: {r['context_b']!r}")
        lines.append("")
        lines.append("ratio by sign class (pairs with a defined ratio):")
        lines.append(f"  {'class':<6} {'n':>7} {'mean':>9} {'median':>9}")
        for name in (*SIGN_CLASSES, "all"):
            c = nr["classes"][name]
            lines.append(f"  {name:<6} {c['n']:>7} {_f(c['mean_ratio']):>9} {_f(c['median_ratio']):>9}")
        lines.append("")
    lines.append(f"share of w_dist in the negative region ({s['model_id']}@{s['revision']}; 95% CI: "
                 f"{res.config.get('n_boot')} bootstrap draws over neurons, seed {res.config.get('seed')}):")
    lines.append(f"{'layer':>5} {'selection':<9} {'n':>6} {'share':>7} {'pooled':>7} {'frac_neg':>8} "
                 f"{'ci_lo':>7} {'ci_hi':>7}")
    for r in res.shares.iter_rows(named=True):
        layer = "all" if r["layer"] is None else str(r["layer"])
        lines.append(f"{layer:>5} {r['selection']:<9} {r['n_neurons']:>6} {_f(r['share_mean'], 3):>7} "
                     f"{_f(r['share_pooled'], 3):>7} {_f(r['neg_mass_mean'], 3):>8} {_f(r['ci_lo'], 3):>7} "
                     f"{_f(r['ci_hi'], 3):>7}")
    for note in s.get("notes", []):
        lines.append(f"note: {note}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ reading


@dataclass(frozen=True)
class _NeuronData:
    x: np.ndarray  # (n_tokens,) float64
    a: np.ndarray
    b: np.ndarray
    d_in: np.ndarray
    group: Path


def _md_key(cat: Catalog, keys: Keys) -> tuple[str, int]:
    row = cat.arrow("SELECT md_pairs, md_seed FROM stat_specs WHERE spec_id = ? LIMIT 1", [keys.spec_id]).to_pylist()
    if not row:
        raise NotFound(f"statistics spec {keys.spec_id} is not in the catalog: re-ingest {keys.model_id}")
    return md_group_name(int(row[0]["md_pairs"]), int(row[0]["md_seed"])), int(row[0]["md_pairs"])


def _ingest_hint(keys: Keys, layer: int) -> str:
    return (f"ingest them with `negdb ingest --model {keys.model_id} --checkpoints {keys.revision} "
            f"--activations all` (or --activations layers={layer})")


def _neuron_data(cat: Catalog, keys: Keys, layer: int, index: int) -> _NeuronData:
    """The neuron's stored pre-activations, the md pairs and their d_in (NegdbError when not stored)."""
    try:
        path = nq.layer_array_path(cat, keys, layer)
    except NegdbError:
        raise NotFound(f"layer {layer} of {keys.model_id}@{keys.revision} has no stored pre-activations or md "
                         f"inputs: {_ingest_hint(keys, layer)}") from None
    group = path.parent.parent
    md_key, n_pairs = _md_key(cat, keys)
    md = group / "md" / md_key
    if not (md / "pairs").exists() or not (md / layer_name(layer)).exists():
        raise NotFound(f"layer {layer} of {keys.model_id}@{keys.revision} has no stored md inputs for its "
                         f"statistics ({md_key}): {_ingest_hint(keys, layer)} --md-pairs {n_pairs}")
    x = np.asarray(read_array(path, (slice(None), index)), dtype=np.float64)
    pairs = np.asarray(read_array(md / "pairs"), dtype=np.int64)
    a, b = pairs[:, 0], pairs[:, 1]
    plan = PairPlan(a=a, b=b, md_rows=np.unique(np.concatenate([a, b])))
    h = read_array(md / layer_name(layer))
    pos_a, pos_b = plan.positions()
    return _NeuronData(x=x, a=a, b=b, d_in=input_distances(h[pos_a], h[pos_b]), group=group)


def _check_neuron(widths: dict[int, int], keys: Keys, layer: int, index: int) -> None:
    if layer not in widths:
        have = sorted(widths)
        raise NotFound(f"layer {layer} out of range: {keys.model_id}@{keys.revision} has statistics for layers "
                         f"{have[0]}-{have[-1]}" if have else f"{keys.model_id}@{keys.revision} has no statistics")
    if not 0 <= index < widths[layer]:
        raise NotFound(f"neuron {index} out of range: layer {layer} has neurons 0-{widths[layer] - 1}")


def _stored_md(cat: Catalog, keys: Keys, layer: int, index: int) -> float | None:
    rows = cat.arrow("SELECT md FROM neuron_stats WHERE model_id = ? AND revision = ? AND slice_id = ? AND "
                     "spec_id = ? AND layer = ? AND neuron = ? LIMIT 1", [*keys, layer, index]).to_pylist()
    return _num(rows[0]["md"]) if rows and rows[0]["md"] is not None else None


def _pair_part(cat: Catalog, keys: Keys, opts: PairsSpec, notes: list[str], tokenizer: Any
               ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The neuron's summary and its DIFF_PAIRS rows."""
    layer, index = int(opts.layer), int(opts.index)  # type: ignore[arg-type]
    data = _neuron_data(cat, keys, layer, index)
    x_a, x_b = data.x[data.a], data.x[data.b]
    sc = pair_scores(x_a, x_b, data.d_in)
    signs = sign_classes(x_a, x_b)
    top = top_pairs(sc.ratio, signs, opts.k, all_signs=opts.all_signs)
    top_any = top_pairs(sc.ratio, signs, opts.k, all_signs=True)
    eligible = int((np.isfinite(sc.ratio) & ((signs == "neg") | opts.all_signs)).sum())
    if not sc.median > 0:
        notes.append(f"the median |x_a - x_b| of neuron {layer}.{index} over the pairs is "
                     f"{_f(sc.median)}: its ratios (and md) are undefined")
    tok = tokenizer
    if tok is None and top.size:
        try:
            tok = nq.slice_tokenizer(cat, keys)
        except Exception as err:  # noqa: BLE001 - failing to load it only costs the decoded text
            notes.append(f"the tokenizer of {keys.model_id} could not be loaded ({err}); contexts show token ids")
    ca = nq.contexts_at(data.group, data.a[top], x_a[top], tok, opts.context)
    cb = nq.contexts_at(data.group, data.b[top], x_b[top], tok, opts.context)
    rows = []
    for rank, (k, c_a, c_b) in enumerate(zip(top, ca, cb), start=1):
        rows.append({"model_id": keys.model_id, "revision": keys.revision, "layer": layer, "neuron": index,
                     "rank": rank, "token_a": int(data.a[k]), "token_b": int(data.b[k]), "x_a": float(x_a[k]),
                     "x_b": float(x_b[k]), "d_in": float(data.d_in[k]), "d_out": float(sc.d_out[k]),
                     "ratio": float(sc.ratio[k]), "signs": str(signs[k]),
                     "text_a": c_a.token if c_a.token is not None else f"<{c_a.token_id}>",
                     "text_b": c_b.token if c_b.token is not None else f"<{c_b.token_id}>",
                     "context_a": c_a.text, "context_b": c_b.text})
    summary = {"layer": layer, "index": index, "n_pairs": int(len(data.a)), "n_used": int(sc.used.sum()),
               "median_abs_diff": _num(sc.median), "md": _num(sc.md), "md_stored": _stored_md(cat, keys, layer, index),
               "classes": class_summary(sc.ratio, signs), "eligible": eligible,
               "top_any_neg_share": (float(np.mean(signs[top_any] == "neg")) if top_any.size else None)}
    return summary, rows


def _share_part(cat: Catalog, keys: Keys, opts: PairsSpec) -> list[dict[str, Any]]:
    stats = cat.sql("SELECT layer, neuron, w_dist, w_dist_neg, frac_neg FROM neuron_stats WHERE model_id = ? AND "
                    "revision = ? AND slice_id = ? AND spec_id = ? ORDER BY layer, neuron", list(keys))
    top = select(cat, keys.model_id, keys.revision, top=TOP_FRACTION, slice_id=keys.slice_id, spec_id=keys.spec_id)
    members = top.members.select(pl.col("layer").cast(pl.Int32), pl.col("neuron").cast(pl.Int32),
                                 pl.lit(True).alias("top1"))
    stats = (stats.with_columns(pl.col("layer").cast(pl.Int32), pl.col("neuron").cast(pl.Int32))
             .join(members, on=["layer", "neuron"], how="left").with_columns(pl.col("top1").fill_null(False)))
    return [{"model_id": keys.model_id, "revision": keys.revision, **r}
            for r in neg_shares(stats, n_boot=opts.bootstrap.n_boot, seed=opts.bootstrap.seed)]


def _read_table(layout: StoreLayout, table: Table, aid: str, columns: tuple[str, ...], sort: list[str]
                ) -> pl.DataFrame:
    path = layout.table_dir(table.name) / f"{aid}.parquet"
    if path.exists():
        df = pl.from_arrow(pq.read_table(path))
    else:
        df = pl.from_arrow(table.schema.empty_table())
    assert isinstance(df, pl.DataFrame)
    df = df.with_row_index("_row").sort(sort, nulls_last=True, maintain_order=True) if sort else df
    return df.select(list(columns))


def _stored(layout: StoreLayout, row: dict[str, Any], reused: bool) -> PairAnalysis:
    aid = row["analysis_id"]
    pairs = _read_table(layout, DIFF_PAIRS, aid, PAIR_COLUMNS, ["rank"])
    shares = _read_table(layout, NEG_SHARE, aid, SHARE_COLUMNS, ["layer", "_row"])
    return PairAnalysis(aid, reused, json.loads(row["summary_json"]), pairs, shares, json.loads(row["config_json"]))


def run(opts: PairsSpec, store: str | Path | None = None, *, tokenizer: Any = None) -> PairAnalysis:
    """Run (or read back) ``negdb analyze pairs`` in ``store``; see the module docstring.

    Args:
        opts: the arguments.
        store: the store folder (default ``$NEGDB_STORE`` / ``./negdb-store``).
        tokenizer: decode contexts with this tokenizer instead of loading the model's.

    Raises:
        NegdbError: bad options, unknown model/checkpoint, neuron out of range, or a layer whose activations or
            md inputs were not stored.
    """
    layout = StoreLayout.at(store)
    if not layout.is_store():
        raise StoreError(f"{layout.location} is not a negdb store: run `negdb ingest --model {opts.model}` first")
    with Catalog(layout.location) as cat:
        keys = resolve_keys(cat, opts.model, opts.checkpoint)
        widths = layer_widths(cat, keys)
        neuron = None
        if opts.layer is not None and opts.index is not None:
            _check_neuron(widths, keys, int(opts.layer), int(opts.index))
            neuron = [int(opts.layer), int(opts.index)]
        config = {**keys._asdict(), "layers": sorted(widths), "neuron": neuron, "k": opts.k, "window": opts.context,
                  "all_signs": opts.all_signs, "n_boot": opts.bootstrap.n_boot, "seed": opts.bootstrap.seed,
                  "top": TOP_FRACTION}
        aid = analysis_id(KIND, config)
        row = lookup(layout, aid)
        if row is not None:
            return _stored(layout, row, reused=True)
        with Timer() as t:
            notes: list[str] = []
            pair_summary, pair_rows = _pair_part(cat, keys, opts, notes, tokenizer) if neuron else (None, [])
            share_rows = _share_part(cat, keys, opts)
        overall = {r["selection"]: {k: r[k] for k in SHARE_COLUMNS[2:]} for r in share_rows if r["layer"] is None}
        summary = {**keys._asdict(), "neuron": pair_summary, "shares": overall, "notes": notes}
        row = publish(layout, aid, kind=KIND, model_id=keys.model_id, revision=keys.revision, config=config,
                      summary=_jsonable(summary), seconds=t.seconds,
                      tables={DIFF_PAIRS: pair_rows, NEG_SHARE: share_rows})
    return _stored(layout, row, reused=False)
