"""negdb.stats.mapping: token pairs, input distances, mapping difficulty and percentile ranks."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy.stats import percentileofscore

from negdb.errors import BadArgument
from negdb.stats.compute import block_stats
from negdb.stats.mapping import draw_pairs, input_distances, mapping_difficulty, percentile_rank


def md_loop(x_a: np.ndarray, x_b: np.ndarray, d_in: np.ndarray) -> np.ndarray:
    """The authors' per-neuron loop, written out plainly (pairs with d_in == 0 left out)."""
    keep = d_in > 0
    out = []
    for j in range(x_a.shape[1]):
        d_out = np.abs(x_a[keep, j].astype(np.float64) - x_b[keep, j].astype(np.float64))
        med = np.median(d_out)
        out.append(np.mean(d_out / med / d_in[keep]) if med > 0 else np.nan)
    return np.array(out)


def test_draw_pairs_disjoint_and_seeded() -> None:
    a, b = draw_pairs(1000, 300, seed=5)
    assert a.shape == b.shape == (300,) and a.dtype == np.int64
    assert len(np.unique(np.concatenate([a, b]))) == 600
    assert 0 <= min(a.min(), b.min()) and max(a.max(), b.max()) < 1000
    a2, b2 = draw_pairs(1000, 300, seed=5)
    np.testing.assert_array_equal(a, a2)
    np.testing.assert_array_equal(b, b2)
    assert not np.array_equal(a, draw_pairs(1000, 300, seed=6)[0])
    a3, b3 = draw_pairs(10, 5, seed=0)  # 2P == n uses every token
    assert sorted(np.concatenate([a3, b3]).tolist()) == list(range(10))


def test_draw_pairs_errors() -> None:
    with pytest.raises(BadArgument, match="at most 5 pairs"):
        draw_pairs(11, 6, seed=0)
    with pytest.raises(BadArgument, match="at least one"):
        draw_pairs(10, 0, seed=0)


def test_input_distances() -> None:
    rng = np.random.default_rng(1)
    h_a, h_b = rng.standard_normal((40, 8)).astype(np.float32), rng.standard_normal((40, 8)).astype(np.float32)
    d = input_distances(h_a, h_b)
    ref = np.array([np.sqrt(np.sum((h_a[k].astype(float) - h_b[k]) ** 2)) for k in range(40)])
    np.testing.assert_allclose(d, ref / ref.max(), rtol=1e-12)
    assert d.max() == 1.0
    np.testing.assert_array_equal(input_distances(h_a, h_a), np.zeros(40))
    with pytest.raises(BadArgument):
        input_distances(h_a, h_b[:3])


@pytest.mark.parametrize("p", [201, 400])
@pytest.mark.parametrize("threads", [1, 2])
def test_md_matches_loop(p: int, threads: int) -> None:
    rng = np.random.default_rng(p)
    k = 37
    x_a = rng.standard_normal((p, k)).astype(np.float32) * rng.exponential(size=k).astype(np.float32)
    x_b = rng.standard_normal((p, k)).astype(np.float32) * rng.exponential(size=k).astype(np.float32)
    x_b[:, 4] = x_a[:, 4]  # zero median: NaN
    x_a[: p // 2 + 3, 5] = x_b[: p // 2 + 3, 5]  # more than half the differences zero: NaN too
    d_in = rng.random(p)
    d_in[[3, 10]] = 0.0  # identical inputs: left out
    d_in /= d_in.max()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = mapping_difficulty(x_a, x_b, d_in, threads=threads)
    ref = md_loop(x_a, x_b, d_in)
    assert np.isnan(got[4]) and np.isnan(got[5])
    np.testing.assert_allclose(got, ref, rtol=1e-12, equal_nan=True)


def test_md_float16_and_no_pairs_left() -> None:
    rng = np.random.default_rng(2)
    x_a = rng.standard_normal((100, 3)).astype(np.float16)
    x_b = rng.standard_normal((100, 3)).astype(np.float16)
    d_in = rng.random(100)
    np.testing.assert_allclose(mapping_difficulty(x_a, x_b, d_in), md_loop(x_a, x_b, d_in), rtol=1e-12)
    assert np.isnan(mapping_difficulty(x_a, x_b, np.zeros(100))).all()
    with pytest.raises(BadArgument):
        mapping_difficulty(x_a, x_b[:10], d_in)


def test_md_scale_invariance() -> None:
    """md does not change when a neuron is rescaled (the median normalises d_out)."""
    rng = np.random.default_rng(3)
    x_a, x_b = rng.standard_normal((300, 2)), rng.standard_normal((300, 2))
    d_in = rng.random(300)
    md = mapping_difficulty(x_a, x_b, d_in)
    np.testing.assert_allclose(mapping_difficulty(7 * x_a, 7 * x_b, d_in), md, rtol=1e-12)


def test_percentile_rank_matches_scipy() -> None:
    rng = np.random.default_rng(4)
    v = rng.integers(0, 20, size=200).astype(np.float64)  # many ties
    v[[5, 50, 77]] = np.nan
    got = percentile_rank(v)
    finite = v[~np.isnan(v)]
    for value, pct in zip(v, got):
        if np.isnan(value):
            assert np.isnan(pct)
        else:
            assert pct == pytest.approx(percentileofscore(finite, value, kind="mean"), abs=1e-10)
    assert np.isnan(percentile_rank(np.array([np.nan]))).all()
    np.testing.assert_allclose(percentile_rank(np.array([1.0, 2.0])), [25.0, 75.0])


@pytest.mark.parametrize("threads", [1, 2])
def test_md_inside_block_stats(threads: int) -> None:
    """block_stats(pairs=...) reorders tokens (a, b, rest) before the sort: same md, same other columns."""
    rng = np.random.default_rng(5)
    n, k = 1001, 23
    x = (rng.standard_normal((n, k)) * rng.exponential(size=k)).astype(np.float32)
    x[:, 2] = 1.0  # constant: zero median
    a, b = draw_pairs(n, 333, seed=1)
    d_in = input_distances(rng.standard_normal((333, 5)), rng.standard_normal((333, 5)))
    d_in[7] = 0.0
    got = block_stats(x, pairs=(a, b), d_in=d_in, threads=threads)
    ref = md_loop(x[a], x[b], d_in)
    np.testing.assert_allclose(got["md"], ref, rtol=1e-12, equal_nan=True)
    assert np.isnan(got["md"][2])
    plain = block_stats(x, threads=threads)
    for name in plain:
        np.testing.assert_array_equal(got[name], plain[name])


def test_md_inside_block_stats_shared_tokens_and_errors() -> None:
    rng = np.random.default_rng(6)
    x = rng.standard_normal((50, 4)).astype(np.float32)
    a = np.array([0, 1, 2, 3, 4])
    b = np.array([1, 2, 3, 4, 0])  # every token in two pairs: no (a, b, rest) order exists
    d_in = rng.random(5)
    got = block_stats(x, pairs=(a, b), d_in=d_in)
    np.testing.assert_allclose(got["md"], md_loop(x[a], x[b], d_in), rtol=1e-12)
    assert np.isnan(block_stats(x, pairs=(a, b), d_in=np.zeros(5))["md"]).all()
    with pytest.raises(BadArgument, match="d_in"):
        block_stats(x, pairs=(a, b))
    with pytest.raises(BadArgument, match="lie in"):
        block_stats(x, pairs=(a, b + 50), d_in=d_in)
