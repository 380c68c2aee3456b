"""Neuron sets: pick neurons from one set of statistics, save them under a name, read them back.

A :class:`Selection` refers to the statistics of one ``(model_id, revision, slice_id, spec_id)``; keys that are
not given default to the latest ingest of the model. Pickers:

- ``where``: a boolean SQL expression over the columns of the ``neurons`` view (checked by
  :func:`negdb.store.safety.check_where`, run through ``Catalog.query``, the path for user SQL);
- ``top`` / ``bottom``: per layer, the ``k`` neurons with the highest / lowest ``by`` column, where ``k`` is a
  count (``"5"``) or a fraction of the layer width (``"1%"``, ``"0.01"``: ``k = max(1, round(frac * d_mlp))``,
  the paper's definition); ties go to the lower neuron index, NaN/NULL values are never picked;
- ``random_like=SET``: per layer as many random neurons as the saved set ``SET`` holds, none of its members,
  drawn with ``numpy.random.default_rng(seed)`` (deterministic per seed): layers in increasing order, each
  layer's candidates sorted by index, ``rng.choice(candidates, size=count, replace=False)``. The statistics
  keys and the layers default to the set's.

``where`` filters first and combines with any picker; ``layers`` restricts every picker. A set is stored
immutably (:func:`save`, in :mod:`negdb.query.setstore`): one ``neuron_sets`` segment per name, first writer wins, and one
``neuron_set_members`` segment per content hash. Saving a name again with the same members is a no-op; with
other members it is refused.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from negdb.errors import BadArgument, BadQuery, NegdbError, NotFound, preview
from negdb.query.selection import Keys, Selection, content_hash
# storage is negdb.query.setstore's; re-exported so that `sets.save/get/list_sets` stay one namespace
from negdb.query.setstore import NeuronSet, check_name, get, list_sets, save
from negdb.store.catalog import QUERY_TIMEOUT_S, Catalog

__all__ = ["Keys", "NeuronSet", "Selection", "check_name", "get", "list_sets", "member_stats", "parse_k", "layer_widths",
           "resolve_keys", "save", "select", "stat_columns"]

_FRACTION = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)\s*%$")
_COUNT = re.compile(r"^\d+$")
_DECIMAL = re.compile(r"^(\d*\.\d+|\d+\.\d*)$")


# ---------------------------------------------------------------------------------------------------- keys


def _stored_models(cat: Catalog) -> list[str]:
    return cat.arrow("SELECT DISTINCT model_id FROM neuron_stats ORDER BY 1").column("model_id").to_pylist()


def resolve_model(cat: Catalog, model: str) -> str:
    """The catalog key of ``model`` (a stored key, or anything ``negdb ingest --model`` accepts)."""
    stored = _stored_models(cat)
    if model in stored:
        return model
    from negdb.models.registry import resolve

    try:
        model_id = resolve(model).model_id
    except NegdbError:
        model_id = None
    if model_id in stored:
        return model_id  # type: ignore[return-value]
    if not stored:
        raise NotFound(f"no statistics in {cat.layout.location}: run `negdb ingest --model {model}` first")
    raise NotFound(f"no statistics for model '{model}' in {cat.layout.location}: stored models are {preview(stored)}")


def _final_revision(model_id: str) -> str | None:
    from negdb.models.checkpoints import final_revision
    from negdb.models.registry import resolve

    try:
        return final_revision(resolve(model_id))
    except NegdbError:
        return None


_KEYS_SQL = """
SELECT n.revision, n.slice_id, n.spec_id, max(n.updated_at) AS updated_at, any_value(c.step) AS step
FROM ({source}) n
LEFT JOIN checkpoints c ON c.model_id = n.model_id AND c.revision = n.revision
GROUP BY ALL
ORDER BY updated_at DESC NULLS LAST, revision, slice_id, spec_id
"""
# the keys of finished ingest runs: a tiny table, where scanning neuron_stats reads every segment of the model
_RUN_KEYS = ("SELECT model_id, revision, slice_id, spec_id, updated_at FROM runs "
             "WHERE model_id = ? AND kind = 'ingest' AND status = 'done'")
_STAT_KEYS = ("SELECT DISTINCT s.model_id, s.revision, s.slice_id, s.spec_id, r.updated_at FROM neuron_stats s "
              "LEFT JOIN runs r ON r.run_id = s.run_id WHERE s.model_id = ?")


def resolve_keys(cat: Catalog, model: str, revision: str | None = None, slice_id: str | None = None,
                 spec_id: str | None = None) -> Keys:
    """The statistics keys: unspecified ones default to the latest ingest of ``model`` matching the given ones.

    ``revision='final'`` (or ``main``) also finds the model's final checkpoint stored under its own name
    (Pythia ``step143000``, the largest ``step<N>/`` folder).
    """
    model_id = resolve_model(cat, model)
    rows = cat.arrow(_KEYS_SQL.format(source=_RUN_KEYS), [model_id]).to_pylist()
    if not rows:  # statistics without run records (e.g. written by a tool): read the keys off the statistics
        rows = cat.arrow(_KEYS_SQL.format(source=_STAT_KEYS), [model_id]).to_pylist()
    if revision is not None:
        revisions = list(dict.fromkeys(r["revision"] for r in sorted(
            rows, key=lambda r: (r["step"] is None, r["step"] or 0, r["revision"]))))
        if revision not in revisions:
            final = _final_revision(model_id) if revision.lower() in ("final", "main") else None
            if final is None or final not in revisions:
                raise NotFound(f"{model_id} has no statistics for checkpoint '{revision}': stored checkpoints "
                                 f"are {preview(revisions)}")
            revision = final
        rows = [r for r in rows if r["revision"] == revision]
    for name, value in (("slice", slice_id), ("spec", spec_id)):
        if value is not None:
            found = [r for r in rows if r[f"{name}_id"] == value]
            if not found:
                have = list(dict.fromkeys(r[f"{name}_id"] for r in rows))
                raise NotFound(f"{model_id}{'@' + revision if revision else ''} has no statistics with "
                                 f"{name}_id '{value}': stored are {preview(have)}")
            rows = found
    row = rows[0]
    return Keys(model_id, row["revision"], row["slice_id"], row["spec_id"])


_WHERE_KEYS = "model_id = ? AND revision = ? AND slice_id = ? AND spec_id = ?"


def layer_widths(cat: Catalog, keys: Keys) -> dict[int, int]:
    """Layers with statistics under ``keys`` -> number of neurons in the layer."""
    rows = cat.arrow(f"SELECT layer, count(DISTINCT neuron) AS n FROM neuron_stats WHERE {_WHERE_KEYS} "
                     "GROUP BY layer ORDER BY layer", list(keys)).to_pylist()
    return {r["layer"]: r["n"] for r in rows}


def _n_layers(cat: Catalog, model_id: str) -> int | None:
    rows = cat.arrow("SELECT max(n_layers) AS n FROM models WHERE model_id = ?", [model_id]).to_pylist()
    return rows[0]["n"] if rows else None


def parse_layer_list(spec: str | int | Iterable[int] | None, cat: Catalog, keys: Keys) -> list[int]:
    """``None`` (every layer with statistics), a spec like ``0-3,7`` or an iterable of indices."""
    info = layer_widths(cat, keys)
    have = sorted(info)
    n_layers = _n_layers(cat, keys.model_id) or (max(have) + 1 if have else 0)
    if spec is None:
        return have
    if isinstance(spec, str):
        from negdb.ingest.plan import parse_layers

        wanted = parse_layers(spec, n_layers)
    else:
        wanted = sorted({int(x) for x in ([spec] if isinstance(spec, int) else spec)})
        bad = [i for i in wanted if not 0 <= i < n_layers]
        if bad or not wanted:
            raise BadArgument(f"layers {bad or '(none)'} out of range: the model has layers 0-{n_layers - 1}")
    missing = [i for i in wanted if i not in info]
    if missing:
        raise NotFound(f"layer(s) {preview(missing)} of {keys.model_id}@{keys.revision} have no statistics: "
                         f"layers with statistics are {preview(have)}")
    return wanted


# ------------------------------------------------------------------------------------------------- pickers


def parse_k(text: str | int | float) -> tuple[str, float | int]:
    """``"1%"``/``"0.01"`` -> ``("fraction", 0.01)``; ``"5"``/``5`` -> ``("count", 5)``."""
    raw = str(text).strip()
    usage = (f"bad neuron count '{text}': use a percentage like 1% or 35%, a fraction like 0.01, "
             "or a count like 5")
    if isinstance(text, bool):
        raise BadArgument(usage)
    if isinstance(text, int) or _COUNT.match(raw):
        count = int(raw)
        if count < 1:
            raise BadArgument(usage)
        return "count", count
    m = _FRACTION.match(raw)
    if m:
        frac = float(m.group(1)) / 100.0
    elif _DECIMAL.match(raw):
        frac = float(raw)
    else:
        raise BadArgument(usage)
    if not 0.0 < frac <= 1.0:
        raise BadArgument(usage)
    return "fraction", frac


def k_for(kind: str, value: float | int, d_mlp: int) -> int:
    """Neurons per layer for a parsed count: a count as given, a fraction as ``max(1, round(frac * d_mlp))``."""
    if kind == "count":
        return int(value)
    return max(1, round(float(value) * d_mlp))


def stat_columns() -> list[str]:
    """The numeric ``neuron_stats`` columns a set can be ranked by (``by``)."""
    from negdb.stats.schema import NEURON_STATS

    return [c.name for c in NEURON_STATS if pa.types.is_floating(c.arrow_type) or pa.types.is_integer(c.arrow_type)]


def _check_where(cat: Catalog, expr: str) -> str:
    """The safety check of user ``where`` text (one boolean expression over the neurons view)."""
    from negdb.store.safety import check_where

    return check_where(expr, cat=cat)


def _where_rows(cat: Catalog, keys: Keys, layers: list[int], expr: str, timeout_s: float | None) -> pl.DataFrame:
    """(layer, neuron) of the neurons of ``layers`` for which ``expr`` is TRUE.

    ``expr`` is applied as a WHERE condition over the statistics' rows, as the service's ``GET /neurons?where=``
    applies it (the same check, the same meaning, the same time limit), through ``Catalog.query``, the hardened
    path for user SQL.
    """
    checked = _check_where(cat, expr)
    sql = (f"SELECT layer, neuron FROM (SELECT * FROM neurons WHERE {_WHERE_KEYS} AND list_contains(?, layer)) "
           f"AS n WHERE ({checked})")
    df = pl.from_arrow(cat.query(sql, [*keys, layers], timeout_s=timeout_s).table)
    assert isinstance(df, pl.DataFrame)
    return df.select(pl.col("layer").cast(pl.Int32), pl.col("neuron").cast(pl.Int32)).unique()


def _universe(cat: Catalog, keys: Keys, layers: list[int], columns: Iterable[str] = ()) -> pl.DataFrame:
    extra = "".join(f", {c}" for c in columns)
    df = cat.sql(f"SELECT DISTINCT layer, neuron{extra} FROM neuron_stats WHERE {_WHERE_KEYS} "
                 "AND list_contains(?, layer) ORDER BY layer, neuron", [*keys, layers])
    return df.with_columns(pl.col("layer").cast(pl.Int32), pl.col("neuron").cast(pl.Int32))


def _ranked(pool: pl.DataFrame, by: str, descending: bool, k_spec: tuple[str, float | int],
            widths: dict[int, int]) -> pl.DataFrame:
    """Per layer, the first k of ``pool`` by ``by`` (ties: lower neuron first; NaN/NULL never)."""
    valid = pool.filter(pl.col(by).is_not_null() & pl.col(by).cast(pl.Float64).is_not_nan())
    parts = []
    for layer, group in valid.group_by("layer", maintain_order=True):
        k = k_for(*k_spec, widths[layer[0]])
        parts.append(group.sort([by, "neuron"], descending=[descending, False]).head(k))
    if not parts:
        return pool.clear().select("layer", "neuron")
    return pl.concat(parts).select("layer", "neuron")


def _random_like(pool: pl.DataFrame, source: pl.DataFrame, layers: list[int], seed: int,
                 name: str) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    parts = []
    for layer in layers:
        want = source.filter(pl.col("layer") == layer).height
        if want == 0:
            continue
        taken = set(source.filter(pl.col("layer") == layer)["neuron"].to_list())
        cand = np.array(sorted(set(pool.filter(pl.col("layer") == layer)["neuron"].to_list()) - taken),
                        dtype=np.int64)
        if len(cand) < want:
            raise BadArgument(f"--random-like {name}: layer {layer} has only {len(cand)} candidate neurons outside "
                             f"the set (it holds {want} there); widen --where or pick fewer layers")
        chosen = np.sort(rng.choice(cand, size=want, replace=False))
        parts.append(pl.DataFrame({"layer": np.full(want, layer, dtype=np.int32),
                                   "neuron": chosen.astype(np.int32)}))
    if not parts:
        return pl.DataFrame(schema={"layer": pl.Int32, "neuron": pl.Int32})
    return pl.concat(parts)


def _canonical(obj: dict[str, Any]) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def select(cat: Catalog, model: str, revision: str | None = None, *, where: str | None = None,
           top: str | int | None = None, bottom: str | int | None = None, by: str = "w_dist",
           random_like: str | None = None, seed: int = 0, layers: str | Iterable[int] | None = None,
           slice_id: str | None = None, spec_id: str | None = None,
           timeout_s: float | None = QUERY_TIMEOUT_S) -> Selection:
    """Pick neurons of one model's statistics (see the module docstring for the pickers).

    ``where`` runs under the time limit ``timeout_s`` (the service's default: the same wall for every path).

    Raises:
        NegdbError: unknown model/checkpoint/set, a bad count, an unknown ``by`` column, a ``where`` that is
            not a boolean expression, or more than one of ``top``/``bottom``/``random_like``.
    """
    pickers = [n for n, v in (("top", top), ("bottom", bottom), ("random_like", random_like)) if v is not None]
    if len(pickers) > 1:
        raise BadArgument(f"choose one of --top, --bottom and --random-like (got {', '.join(pickers)})")
    if not pickers and where is None:
        raise BadArgument("choose neurons with --where EXPR, --top K, --bottom K or --random-like SET")
    if where is not None and not where.strip():
        raise BadQuery("--where is empty: give a boolean expression like 'w_dist > 0.5'")
    ranked = bool(pickers) and pickers[0] in ("top", "bottom")
    if ranked:
        numeric = stat_columns()
        if by not in numeric:
            raise BadArgument(f"--by {by}: not a statistic column; use one of {', '.join(numeric)}")
        k_spec = parse_k(top if top is not None else bottom)  # type: ignore[arg-type]
    source = None
    if random_like is not None:
        source = get(cat, random_like)
        model_id = resolve_model(cat, model)
        if source.keys.model_id != model_id:
            raise BadArgument(f"--random-like {random_like} holds neurons of {source.keys.model_id}, not {model_id}")
        if revision is None and slice_id is None and spec_id is None:
            revision, slice_id, spec_id = source.keys.revision, source.keys.slice_id, source.keys.spec_id
        if layers is None:  # the layers the source set was picked from
            layers = sorted(source.counts) or sorted(set(source.members["layer"].to_list()))
    keys = resolve_keys(cat, model, revision, slice_id, spec_id)
    scope = parse_layer_list(layers, cat, keys)
    expression: dict[str, Any] = {"layers": "all" if layers is None else scope}
    if where is not None:
        expression["where"] = where.strip()

    pool = _universe(cat, keys, scope, [by] if ranked else [])
    if where is not None:
        pool = pool.join(_where_rows(cat, keys, scope, where, timeout_s), on=["layer", "neuron"], how="semi")

    if not pickers:
        members = pool.select("layer", "neuron")
        expression["pick"] = "where"
    elif ranked:
        widths = layer_widths(cat, keys)
        members = _ranked(pool, by, pickers[0] == "top", k_spec, widths)
        kind, value = k_spec
        expression.update(pick=pickers[0], by=by, k={kind: value})
    else:
        assert source is not None
        members = _random_like(pool, source.members, scope, seed, source.name)
        expression.update(pick="random_like", like={"name": source.name, "set_id": source.set_id}, seed=int(seed))

    members = members.with_columns(pl.col("layer").cast(pl.Int32), pl.col("neuron").cast(pl.Int32)).sort(
        "layer", "neuron")
    per_layer = dict(members.group_by("layer").len().iter_rows())
    counts = {int(layer): int(per_layer.get(layer, 0)) for layer in scope}
    return Selection(keys=keys, expression=_canonical(expression), members=members, counts=counts,
                     content_hash=content_hash(keys, members))


def member_stats(cat: Catalog, selection: Selection | NeuronSet, columns: Iterable[str] = ("w_dist",),
                 limit: int | None = None) -> pl.DataFrame:
    """The members with statistic ``columns`` (default ``w_dist``), in (layer, neuron) order."""
    numeric = set(stat_columns())
    cols = list(dict.fromkeys(c for c in columns if c in numeric))
    members = selection.members if limit is None else selection.members.head(limit)
    if members.height == 0:
        return members.with_columns([pl.lit(None, dtype=pl.Float64).alias(c) for c in cols])
    stats = _universe(cat, selection.keys, sorted(set(members["layer"].to_list())), cols)
    return members.join(stats, on=["layer", "neuron"], how="left").sort("layer", "neuron")
