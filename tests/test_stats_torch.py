"""negdb.stats.torch_block: the torch statistics kernel against the numpy kernel and the scipy references (CPU).

The same kernel runs on a GPU (tests/test_gpu.py checks it there against these CPU values).
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
import torch
from scipy.stats import wasserstein_distance

from negdb.errors import BadArgument
from negdb.stats.compute import BLOCK_COLUMNS, block_stats
from negdb.stats.mapping import draw_pairs, mapping_difficulty
from negdb.stats.torch_block import backend_for, block_stats_torch
from negdb.stats.wasserstein import NormalSampler
from tests.test_stats_wasserstein import columns, quad_w1


def assert_same(got: dict[str, np.ndarray], want: dict[str, np.ndarray], atol: float = 1e-6) -> None:
    assert set(got) == set(want)
    for name in want:
        assert got[name].dtype == want[name].dtype, name
        assert got[name].shape == want[name].shape, name
        np.testing.assert_array_equal(np.isnan(got[name].astype(float)), np.isnan(want[name].astype(float)),
                                      err_msg=name)
        np.testing.assert_allclose(got[name], want[name], rtol=0, atol=atol, equal_nan=True, err_msg=name)


def block(n: int, seed: int) -> np.ndarray:
    """Every kind of column of tests/test_stats_wasserstein.py plus a constant and an all-zero one."""
    x = columns(n, np.random.default_rng(seed))
    return np.column_stack([x, np.full(n, 0.25), np.zeros(n)])


@pytest.mark.parametrize("n", [1, 2, 7, 300, 5000])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_equals_numpy_kernel(n: int, dtype: type) -> None:
    x = block(n, n).astype(dtype)
    want = block_stats(x, threads=1)
    got = block_stats_torch(torch.from_numpy(x))
    assert_same(got, want, atol=1e-9)


def test_exact_w1_against_numerical_integration() -> None:
    x = block(200, 3)[:, :6].astype(np.float32)
    got = block_stats_torch(x)
    for j in range(6):
        neg, pos = quad_w1(x[:, j])
        assert got["w_dist_neg"][j] == pytest.approx(neg, abs=1e-9)
        assert got["w_dist_pos"][j] == pytest.approx(pos, abs=1e-9)


def test_moments_and_quantiles_against_scipy_and_numpy() -> None:
    x = block(1001, 4)[:, :6].astype(np.float32)
    got = block_stats_torch(x)
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(got["mean"], x64.mean(0), rtol=1e-12)
    np.testing.assert_allclose(got["std"], x64.std(0), rtol=1e-12)
    np.testing.assert_allclose(got["skew"], scipy.stats.skew(x64, axis=0), rtol=1e-9)
    np.testing.assert_allclose(got["kurtosis"], scipy.stats.kurtosis(x64, axis=0), rtol=1e-9)
    for name, p in (("q01", 0.01), ("q25", 0.25), ("q50", 0.5), ("q99", 0.99)):
        np.testing.assert_allclose(got[name], np.quantile(x64, p, axis=0), rtol=1e-12)
    np.testing.assert_array_equal(got["frac_neg"], (x < 0).mean(0))
    np.testing.assert_allclose(got["mean_pos"][:5], [c[c > 0].mean() for c in x64.T[:5]], rtol=1e-12)
    assert np.isnan(got["mean_neg"][5])  # the log-normal column has no negative value


def test_sample_reference_against_scipy() -> None:
    n = 800
    x = block(n, 5).astype(np.float32)
    got = block_stats_torch(x, reference="sample", sampler=NormalSampler(seed=7, layer=2))
    want = block_stats(x, reference="sample", sampler=NormalSampler(seed=7, layer=2))
    assert_same(got, want, atol=1e-12)
    y = np.random.default_rng([7, 2]).standard_normal((x.shape[1], n))
    x64 = x.astype(np.float64)
    for j in range(6):
        z = (x64[:, j] - x64[:, j].mean()) / x64[:, j].std()
        assert got["w_dist"][j] == pytest.approx(wasserstein_distance(z, y[j]), abs=1e-9)


@pytest.mark.parametrize("budget_values", [1, 3, 10_000])
def test_chunks_and_md(budget_values: int) -> None:
    """Column chunks of any size give the same values; md equals the numpy kernel and the plain loop."""
    n = 2000
    x = block(n, 6).astype(np.float16)
    a, b = draw_pairs(n, 700, 1)
    d_in = np.random.default_rng(2).random(700)
    d_in[5] = 0.0  # dropped, as in negdb.stats.mapping
    want = block_stats(x, pairs=(a, b), d_in=d_in, threads=2)
    got = block_stats_torch(x, pairs=(a, b), d_in=d_in, budget_bytes=budget_values * n * 48)
    assert_same(got, want, atol=1e-9)
    keep = d_in > 0
    np.testing.assert_allclose(got["md"], mapping_difficulty(x[a[keep]], x[b[keep]], d_in[keep]), rtol=1e-12)
    assert np.isnan(got["md"][-2:]).all()  # constant columns: median |x_a - x_b| is 0


def test_md_with_shared_tokens() -> None:
    x = block(100, 7).astype(np.float32)
    a = np.array([0, 1, 2, 3, 4])
    b = np.array([1, 2, 3, 4, 0])  # every token twice: the numpy kernel takes its gather path
    d_in = np.linspace(0.2, 1.0, 5)
    want = block_stats(x, pairs=(a, b), d_in=d_in)
    assert_same(block_stats_torch(x, pairs=(a, b), d_in=d_in), want, atol=1e-12)


def test_strided_and_empty_input() -> None:
    x = torch.from_numpy(block(500, 8).astype(np.float32)).t().contiguous().t()  # column-major storage
    assert_same(block_stats_torch(x), block_stats(x.numpy()), atol=1e-12)
    empty = block_stats_torch(np.zeros((10, 0), np.float32))
    assert set(empty) == set(BLOCK_COLUMNS) and all(v.shape == (0,) for v in empty.values())


def test_errors() -> None:
    with pytest.raises(BadArgument, match="NormalSampler"):
        block_stats_torch(np.zeros((10, 2), np.float32), reference="sample")
    with pytest.raises(BadArgument, match="reference"):
        block_stats_torch(np.zeros((10, 2), np.float32), reference="midpoint")  # type: ignore[arg-type]
    with pytest.raises(BadArgument, match="no tokens"):
        block_stats_torch(np.zeros((0, 2), np.float32))
    with pytest.raises(BadArgument, match="floating"):
        block_stats_torch(np.zeros((4, 2), np.int32))
    bad = np.ones((10, 2), np.float32)
    bad[3, 1] = np.inf
    with pytest.raises(BadArgument, match="NaN or infinite"):
        block_stats_torch(bad)


def test_backend_choice() -> None:
    assert backend_for("cpu") == "numpy"
    assert backend_for(torch.device("cuda:1")) == "torch"
    assert backend_for("cuda", "numpy") == "numpy"
    assert backend_for("cpu", "torch") == "torch"
    with pytest.raises(BadArgument, match="stats-backend"):
        backend_for("cpu", "jax")
