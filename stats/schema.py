"""The per-neuron statistic columns: names, Arrow types and one-line meanings, in table order.

Key columns (model, layer, neuron, ...) are added by negdb.store, not here.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

__all__ = ["Column", "NEURON_STATS", "column"]


@dataclass(frozen=True)
class Column:
    """One statistic column."""

    name: str
    arrow_type: pa.DataType
    description: str


_F = pa.float64()

NEURON_STATS: tuple[Column, ...] = (
    Column("n", pa.int64(), "number of tokens the statistics were computed over"),
    Column("mean", _F, "mean pre-activation"),
    Column("std", _F, "population standard deviation (ddof=0)"),
    Column("skew", _F, "skewness m3 / m2^1.5 (biased, as scipy.stats.skew); NaN for a constant neuron"),
    Column("kurtosis", _F, "Fisher excess kurtosis m4 / m2^2 - 3 (biased, as scipy.stats.kurtosis); NaN if constant"),
    Column("min", _F, "smallest pre-activation"),
    Column("max", _F, "largest pre-activation"),
    Column("q01", _F, "1st percentile (numpy 'linear' quantile)"),
    Column("q05", _F, "5th percentile"),
    Column("q25", _F, "25th percentile"),
    Column("q50", _F, "median"),
    Column("q75", _F, "75th percentile"),
    Column("q95", _F, "95th percentile"),
    Column("q99", _F, "99th percentile"),
    Column("frac_neg", _F, "fraction of tokens with a negative pre-activation"),
    Column("mean_neg", _F, "mean of the negative pre-activations (NaN if none)"),
    Column("mean_pos", _F, "mean of the positive pre-activations (NaN if none)"),
    Column("w_dist", _F, "1-Wasserstein distance of the z-normalised values to N(0,1) (exact, or the spec's sample)"),
    Column("w_dist_neg", _F, "part of w_dist over the quantile intervals whose raw value is negative"),
    Column("w_dist_pos", _F, "part of w_dist over the quantile intervals whose raw value is non-negative"),
    Column("w_pct", _F, "percentile (0..100) of w_dist among the neurons of its layer, ties averaged"),
    Column("md", _F, "mapping difficulty: mean |x_a - x_b| / median(|x_a - x_b|) / d_in over token pairs"),
)


def column(name: str) -> Column:
    """The column called ``name`` (KeyError if there is none)."""
    for col in NEURON_STATS:
        if col.name == name:
            return col
    raise KeyError(name)
