"""The top Wasserstein neurons per layer, straight from the catalog."""

from __future__ import annotations

import polars as pl

from negdb.errors import BadArgument, NotFound
from negdb.store.catalog import Catalog

TOP_SQL = """
SELECT model_id, revision, layer, neuron, w_dist, w_pct, w_dist_neg / NULLIF(w_dist, 0) AS neg_share,
       frac_neg, skew, kurtosis, md
FROM neurons
WHERE model_id = ? AND revision = ? AND slice_id = ? AND spec_id = ?
QUALIFY row_number() OVER (PARTITION BY layer ORDER BY w_dist DESC, neuron) <= ?
ORDER BY layer, w_dist DESC
"""

LATEST_SQL = """
SELECT n.model_id, n.revision, n.slice_id, n.spec_id FROM neuron_stats n
JOIN runs r ON r.run_id = n.run_id
WHERE (? IS NULL OR n.model_id = ?) AND (? IS NULL OR n.revision = ?)
ORDER BY r.updated_at DESC LIMIT 1
"""


def top_neurons(cat: Catalog, *, k: int = 3, model: str | None = None, revision: str | None = None,
                slice_id: str | None = None, spec_id: str | None = None) -> pl.DataFrame:
    """Top ``k`` neurons per layer by ``w_dist``; unspecified keys default to the latest ingest's."""
    if k < 1:
        raise BadArgument("--k must be at least 1")
    latest = cat.arrow(LATEST_SQL, [model, model, revision, revision]).to_pylist()
    if not latest:
        what = f" for {model}" + (f"@{revision}" if revision else "") if model else ""
        raise NotFound(f"no statistics{what} in {cat.layout.location}: run `negdb ingest` first")
    row = latest[0]
    keys = [model or row["model_id"], revision or row["revision"], slice_id or row["slice_id"],
            spec_id or row["spec_id"], k]
    return cat.sql(TOP_SQL, keys)
