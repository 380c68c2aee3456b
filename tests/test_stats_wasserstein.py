"""negdb.stats.wasserstein: exact W1 against numerical integration, the sample variant against scipy."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy.integrate import quad
from scipy.special import ndtr, ndtri
from scipy.stats import wasserstein_distance

import negdb.stats.wasserstein as wmod
from negdb.errors import BadArgument
from negdb.stats.compute import block_stats
from negdb.stats.wasserstein import NormalSampler, normal_tables, w1_exact_rows


def quad_w1(x: np.ndarray) -> tuple[float, float]:
    """Independent reference: integrate |F^-1(u) - Q(u)| over each interval with scipy.integrate.quad.

    Returns (part over intervals whose raw value is negative, part over the others).
    """
    x = np.sort(np.asarray(x, dtype=np.float64))
    z = (x - x.mean()) / x.std()
    n = len(z)
    neg = pos = 0.0
    for i, c in enumerate(z):
        a, b = i / n, (i + 1) / n
        cut = float(ndtr(c))
        pieces = [(a, cut), (cut, b)] if a < cut < b else [(a, b)]
        part = sum(quad(lambda u: abs(c - ndtri(u)), lo, hi, epsabs=1e-13, epsrel=1e-12, limit=200)[0]
                   for lo, hi in pieces)
        if x[i] < 0:
            neg += part
        else:
            pos += part
    return neg, pos


def columns(n: int, rng: np.random.Generator) -> np.ndarray:
    """Gaussian, skewed, heavy-tailed, tied, bimodal and all-positive columns, float64 for the caller to cast."""
    return np.stack([
        rng.standard_normal(n),
        rng.exponential(size=n) - 0.7,
        rng.standard_t(2, size=n),
        rng.integers(-2, 3, size=n).astype(np.float64),  # ties
        np.concatenate([rng.normal(-2, 0.5, n // 2), rng.normal(3, 1, n - n // 2)]),
        rng.lognormal(size=n),  # no negative value: w_dist_neg must be 0
    ], axis=1)


@pytest.mark.parametrize("n", [7, 50, 200])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_exact_matches_numerical_integration(n: int, dtype: type) -> None:
    x = columns(n, np.random.default_rng(n)).astype(dtype)
    got = block_stats(x, threads=1)
    for j in range(x.shape[1]):
        neg, pos = quad_w1(x[:, j])
        assert got["w_dist"][j] == pytest.approx(neg + pos, abs=1e-6)
        assert got["w_dist_neg"][j] == pytest.approx(neg, abs=1e-6)
        assert got["w_dist_pos"][j] == pytest.approx(pos, abs=1e-6)
    np.testing.assert_allclose(got["w_dist_neg"] + got["w_dist_pos"], got["w_dist"], rtol=1e-14)
    assert got["w_dist_neg"][-1] == 0.0


def test_exact_far_better_than_rounding() -> None:
    """The closed form agrees with quad far below the 1e-6 tolerance (catches a dropped crossing term)."""
    x = np.random.default_rng(5).standard_normal((120, 1))
    neg, pos = quad_w1(x[:, 0])
    assert abs(block_stats(x)["w_dist"][0] - (neg + pos)) < 1e-9


def test_crossings_all_found_and_phi_only_there(monkeypatch: pytest.MonkeyPatch) -> None:
    """Phi is evaluated only for the crossing intervals, and every crossing interval is corrected."""
    n, k = 4096, 6
    x = np.random.default_rng(1).standard_normal((n, k)).astype(np.float32)
    evaluated: list[int] = []

    def counting_ndtr(v: np.ndarray) -> np.ndarray:
        evaluated.append(np.size(v))
        return ndtr(v)

    monkeypatch.setattr(wmod, "ndtr", counting_ndtr)
    got = block_stats(x, threads=1)
    z = np.sort((x - x.mean(0, dtype=np.float64)) / x.std(0, dtype=np.float64), axis=0)
    t = normal_tables(n)
    crossing = ((z > t.q[:-1, None]) & (z < t.q[1:, None])).sum()
    assert 0 < sum(evaluated) <= crossing + k  # a crossing exactly on a grid point may be counted on both sides
    assert sum(evaluated) < 0.1 * n * k
    # brute force over every interval with the split formula where it applies
    a = np.arange(n)[:, None] / n
    b = a + 1 / n
    inside = (z > t.q[:-1, None]) & (z < t.q[1:, None])
    plain = np.abs(z / n - t.interval_mean[:, None])
    pdf = np.exp(-z * z / 2) / np.sqrt(2 * np.pi)
    split = z * (2 * ndtr(z) - a - b) - t.phi[:-1, None] - t.phi[1:, None] + 2 * pdf
    np.testing.assert_allclose(got["w_dist"], np.where(inside, split, plain).sum(0), rtol=1e-10)


def test_kernel_on_rows_matches_block_stats() -> None:
    x = columns(300, np.random.default_rng(2)).astype(np.float32)
    rows = np.sort(x.T, axis=1)
    mean = rows.astype(np.float64).mean(1)
    inv_std = 1 / rows.astype(np.float64).std(1)
    n_neg = (rows < 0).sum(1)
    buf = rows.astype(np.float64) - mean[:, None]
    neg, pos = w1_exact_rows(buf, rows, mean, inv_std, n_neg, normal_tables(300))
    got = block_stats(x)
    np.testing.assert_allclose(neg, got["w_dist_neg"], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(pos, got["w_dist_pos"], rtol=1e-12, atol=1e-15)


def test_gaussian_small_skewed_and_bimodal_large() -> None:
    rng = np.random.default_rng(3)
    n = 4096
    gauss = rng.standard_normal((n, 50))
    bimodal = np.concatenate([rng.normal(-2, 1, n // 2), rng.normal(2, 1, n // 2)])
    skewed = rng.exponential(size=n)
    x = np.column_stack([gauss, bimodal, skewed]).astype(np.float32)
    w = block_stats(x)["w_dist"]
    assert w[:50].max() < 2.5 / np.sqrt(n)
    assert 0.5 / np.sqrt(n) < np.median(w[:50])
    assert w[50] > 0.15
    assert w[51] > 0.25


def test_sample_mode_matches_scipy() -> None:
    n = 1000
    x = columns(n, np.random.default_rng(4)).astype(np.float32)
    got = block_stats(x, reference="sample", sampler=NormalSampler(seed=7, layer=3))
    y = np.random.default_rng([7, 3]).standard_normal((x.shape[1], n))
    x64 = x.astype(np.float64)
    for j in range(x.shape[1]):
        z = (x64[:, j] - x64[:, j].mean()) / x64[:, j].std()
        assert got["w_dist"][j] == pytest.approx(wasserstein_distance(z, y[j]), abs=1e-6)
        zs, ys = np.sort(z), np.sort(y[j])
        neg = np.abs(zs - ys)[np.sort(x64[:, j]) < 0].sum() / n
        assert got["w_dist_neg"][j] == pytest.approx(neg, abs=1e-9)
    np.testing.assert_allclose(got["w_dist_neg"] + got["w_dist_pos"], got["w_dist"], rtol=1e-14)


def test_sampler_blocks_equal_one_draw() -> None:
    s = NormalSampler(11, 2)
    parts = np.concatenate([s.draw(3, 64), s.draw(5, 64), s.draw(1, 64)])
    assert s.drawn == 9
    np.testing.assert_array_equal(parts, NormalSampler(11, 2).draw(9, 64))
    assert not np.array_equal(NormalSampler(11, 3).draw(1, 64), NormalSampler(11, 2).draw(1, 64))


def test_sample_mode_independent_of_blocking() -> None:
    x = columns(500, np.random.default_rng(6)).astype(np.float32)
    whole = block_stats(x, reference="sample", sampler=NormalSampler(1, 0))["w_dist"]
    s = NormalSampler(1, 0)
    split = np.concatenate([block_stats(x[:, :2], reference="sample", sampler=s)["w_dist"],
                            block_stats(x[:, 2:], reference="sample", sampler=s)["w_dist"]])
    np.testing.assert_array_equal(whole, split)


def test_constant_column_is_nan_without_warnings() -> None:
    x = np.random.default_rng(8).standard_normal((64, 4)).astype(np.float32)
    x[:, 1] = 0.1
    x[:, 2] = 0.0
    for ref, sampler in (("exact", None), ("sample", NormalSampler(0, 0))):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            got = block_stats(x, reference=ref, sampler=sampler)
        for name in ("w_dist", "w_dist_neg", "w_dist_pos"):
            assert np.isnan(got[name][[1, 2]]).all()
            assert np.isfinite(got[name][[0, 3]]).all()


def test_threads_and_block_sizes_give_identical_results() -> None:
    x = columns(3000, np.random.default_rng(9)).astype(np.float32)
    x = np.tile(x, (1, 5))
    one = block_stats(x, threads=1)
    two = block_stats(x, threads=2)
    for name in one:
        np.testing.assert_array_equal(one[name], two[name])


def test_tables_endpoints() -> None:
    t = normal_tables(10)
    assert t.q[0] == -np.inf and t.q[-1] == np.inf
    assert t.phi[0] == 0 and t.phi[-1] == 0
    assert t.interval_mean.sum() == pytest.approx(0, abs=1e-15)  # the integral of Q over (0, 1)
    assert normal_tables(10) is t


def test_errors() -> None:
    x = np.zeros((10, 2), np.float32)
    with pytest.raises(BadArgument, match="NormalSampler"):
        block_stats(x, reference="sample")
    with pytest.raises(BadArgument, match="reference"):
        block_stats(x, reference="midpoint")  # type: ignore[arg-type]
    bad = np.ones((10, 2), np.float32)
    bad[3, 1] = np.nan
    with pytest.raises(BadArgument, match="NaN"):
        block_stats(bad)
