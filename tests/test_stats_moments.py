"""negdb.stats moments, quantiles and sign statistics against scipy.stats / numpy; the schema."""

from __future__ import annotations

import warnings

import numpy as np
import pyarrow as pa
import pytest
from scipy import stats

from negdb.errors import BadArgument
from negdb.stats.compute import BLOCK_COLUMNS, block_stats
from negdb.stats.moments import QUANTILES, quantiles_sorted
from negdb.stats.schema import NEURON_STATS, column


def sample(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([
        rng.standard_normal(n) * 3 - 1,
        rng.exponential(size=n),  # no negatives
        -rng.exponential(size=n),  # no positives
        rng.standard_t(3, size=n) + 40.0,  # large mean relative to std
        np.where(rng.random(n) < 0.3, 0.0, rng.standard_normal(n)),  # many exact zeros
        rng.integers(-3, 4, size=n).astype(np.float64),  # ties
    ], axis=1)


@pytest.mark.filterwarnings("ignore:Precision loss:RuntimeWarning")  # scipy, on the n=2 tied column
@pytest.mark.parametrize("n", [2, 7, 1000, 4099])
@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.float64])
def test_moments_match_scipy_and_numpy(n: int, dtype: type) -> None:
    x = sample(n, n).astype(dtype)
    got = block_stats(x)
    x64 = x.astype(np.float64)
    d = stats.describe(x64, axis=0)
    np.testing.assert_array_equal(got["n"], np.full(x.shape[1], n))
    assert got["n"].dtype == np.int64
    np.testing.assert_allclose(got["mean"], d.mean, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(got["std"], np.std(x64, axis=0), rtol=1e-11)
    np.testing.assert_allclose(got["skew"], stats.skew(x64, axis=0), rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(got["kurtosis"], stats.kurtosis(x64, axis=0), rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(got["skew"], d.skewness, rtol=1e-9, atol=1e-11)
    np.testing.assert_array_equal(got["min"], d.minmax[0])
    np.testing.assert_array_equal(got["max"], d.minmax[1])
    for name, p in QUANTILES:
        np.testing.assert_allclose(got[name], np.quantile(x64, p, axis=0), rtol=1e-14, atol=1e-14)
    for j in range(x.shape[1]):
        col = x64[:, j]
        assert got["frac_neg"][j] == np.mean(col < 0)
        for name, part in (("mean_neg", col[col < 0]), ("mean_pos", col[col > 0])):
            if part.size:
                assert got[name][j] == pytest.approx(part.mean(), rel=1e-12)
            else:
                assert np.isnan(got[name][j])


def test_sign_columns_at_the_edges() -> None:
    x = sample(500, 1).astype(np.float32)
    got = block_stats(x)
    assert got["frac_neg"][1] == 0 and np.isnan(got["mean_neg"][1])
    assert got["frac_neg"][2] == 1 and np.isnan(got["mean_pos"][2])
    assert got["mean_pos"][1] > 0 > got["mean_neg"][2]


def test_every_column_is_float64_of_length_k() -> None:
    got = block_stats(sample(100, 2).astype(np.float32))
    # every stored statistic but the two computed elsewhere (w_pct from the whole layer, md from pairs)
    assert list(got) == [c.name for c in NEURON_STATS if c.name not in ("w_pct", "md")]
    for name, values in got.items():
        assert values.shape == (6,)
        assert values.dtype == (np.int64 if name == "n" else np.float64)


def test_constant_columns() -> None:
    x = sample(63, 3).astype(np.float32)
    x[:, 0] = 0.1  # 63 x 0.1f / 63 in float64 need not give 0.1f back: the variance is rounding noise
    x[:, 1] = 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = block_stats(x)
    for j in (0, 1):
        assert got["std"][j] == pytest.approx(0.0, abs=1e-15)
        assert np.isnan(got["skew"][j]) and np.isnan(got["kurtosis"][j])
        assert got["q50"][j] == x[0, j]
    assert np.isfinite(got["skew"][2:]).all()


def test_single_token() -> None:
    got = block_stats(np.array([[1.5, -2.0]], dtype=np.float32))
    np.testing.assert_array_equal(got["mean"], [1.5, -2.0])
    np.testing.assert_array_equal(got["q99"], [1.5, -2.0])
    np.testing.assert_array_equal(got["frac_neg"], [0.0, 1.0])
    assert np.isnan(got["w_dist"]).all() and np.isnan(got["skew"]).all()


def test_quantiles_sorted_matches_numpy() -> None:
    rows = np.sort(np.random.default_rng(4).standard_normal((3, 11)), axis=1)
    probs = (0.0, 0.1, 0.5, 0.55, 0.95, 1.0)
    np.testing.assert_allclose(quantiles_sorted(rows, probs), np.quantile(rows, probs, axis=1), rtol=1e-15)


def test_bad_input() -> None:
    with pytest.raises(BadArgument, match="2-D"):
        block_stats(np.zeros(5, np.float32))
    with pytest.raises(BadArgument, match="floating"):
        block_stats(np.zeros((5, 2), np.int32))
    with pytest.raises(BadArgument, match="no tokens"):
        block_stats(np.zeros((0, 2), np.float32))
    assert block_stats(np.zeros((5, 0), np.float32))["w_dist"].shape == (0,)


def test_schema() -> None:
    names = [c.name for c in NEURON_STATS]
    assert names == ["n", "mean", "std", "skew", "kurtosis", "min", "max", "q01", "q05", "q25", "q50", "q75",
                     "q95", "q99", "frac_neg", "mean_neg", "mean_pos", "w_dist", "w_dist_neg", "w_dist_pos",
                     "w_pct", "md"]
    assert column("n").arrow_type == pa.int64()
    assert all(c.arrow_type == pa.float64() for c in NEURON_STATS if c.name != "n")
    assert all(c.description for c in NEURON_STATS)
    assert set(BLOCK_COLUMNS) == set(names) - {"w_pct", "md"}
    pa.schema([(c.name, c.arrow_type) for c in NEURON_STATS])


def test_long_rows_and_strided_input() -> None:
    """Rows longer than one BLAS segment (8192) in uneven pieces; a column slice of a wider array as input."""
    rng = np.random.default_rng(5)
    wide = (rng.standard_t(4, size=(20001, 9)) * 2 + 1).astype(np.float32)
    x = wide[:, 2:7]
    got = block_stats(x)
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(got["std"], np.std(x64, axis=0), rtol=1e-12)
    np.testing.assert_allclose(got["skew"], stats.skew(x64, axis=0), rtol=1e-9)
    np.testing.assert_allclose(got["kurtosis"], stats.kurtosis(x64, axis=0), rtol=1e-9)
    np.testing.assert_allclose(got["q95"], np.quantile(x64, 0.95, axis=0), rtol=1e-14)


def test_infinite_values_are_refused_without_warnings() -> None:
    x = np.ones((20, 3), np.float32)
    x[4, 2] = -np.inf
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(BadArgument, match="infinite"):
            block_stats(x)
