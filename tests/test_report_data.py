"""``negdb.report.data``'s pure functions on hand-built frames and a hand-built store (no model, no ingest)."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from negdb.report import data
from negdb.store.catalog import Catalog
from negdb.store.layout import StoreLayout
from negdb.store.segments import write_segment
from negdb.store.tables import ABLATIONS


def test_layer_summary_threshold_is_the_kth_largest():
    rng = np.random.default_rng(5)
    rows = []
    for layer, n in ((0, 150), (1, 250), (2, 350), (3, 20)):
        for i, v in enumerate(rng.gamma(2.0, 0.1, n)):
            rows.append({"layer": layer, "neuron": i, "w_dist": float(v)})
    rows.append({"layer": 3, "neuron": 20, "w_dist": float("nan")})  # not a value, but a neuron
    got = {r["layer"]: r for r in data.layer_summary(pl.DataFrame(rows)).iter_rows(named=True)}
    for layer, n, k in ((0, 150, 2), (1, 250, 2), (2, 350, 4), (3, 21, 1)):  # round half to even, at least 1
        vals = sorted((r["w_dist"] for r in rows if r["layer"] == layer and not math.isnan(r["w_dist"])),
                      reverse=True)
        assert got[layer]["n"] == n and got[layer]["k_top"] == k
        assert got[layer]["threshold"] == vals[k - 1]
        assert got[layer]["max"] == vals[0]
        assert got[layer]["mean"] == pytest.approx(sum(vals) / len(vals))


def test_dissociation_axes_prefer_the_summary_rows():
    def row(b: str, m: str, c: str, d: float) -> dict:
        return {"benchmark": b, "metric": m, "condition": c, "value": 0.0, "baseline": 0.0, "delta": d,
                "lo": d - 1, "hi": d + 1, "n": 1, "seeds": 1}

    full = pl.DataFrame([row("blimp", "acc_sum", "ablation", 1), row("tse", "acc_mean", "ablation", 2),
                         row("grammar", "mean", "ablation", 3), row("copa", "acc", "ablation", 4),
                         row("piqa", "acc", "ablation", 5), row("suite", "mean", "ablation", 6),
                         row("blimp", "acc_sum", "random", 7)])
    pts = data.dissociation(full)
    assert pts.select("condition", "x_row", "x", "y_row", "y").rows() == [("ablation", "grammar mean", 3, "suite mean",
                                                                            6)]
    assert pts["x_lo"][0] == 2 and pts["y_hi"][0] == 7
    one = pl.DataFrame([row("tse", "acc_mean", "random", 1), row("piqa", "acc_norm", "random", 9),
                        row("piqa", "acc", "random", 2)])
    assert data.dissociation(one).select("x_row", "x", "y_row", "y").rows() == [("tse acc_mean", 1, "piqa acc", 2)]
    assert data.dissociation(pl.DataFrame([row("blimp", "acc_sum", "ablation", 1),
                                           row("wikitext2", "ppl", "ablation", 2)])).height == 0


def test_latest_ablation_prefers_the_fullest_comparison(tmp_path: Path) -> None:
    """A later perplexity-only ablation (as `analyze pos` records) does not hide an earlier full comparison."""
    layout = StoreLayout(tmp_path / "s").init()
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    for aid, n, minutes in (("full", 4, 0), ("pplonly", 1, 5), ("full2", 4, 3)):
        rows = [{"ablation_id": aid, "condition": c, "model_id": "m", "revision": "final",
                 "result_ids": [f"{aid}-{c}-{i}" for i in range(n)], "created_at": t0 + timedelta(minutes=minutes)}
                for c in ("baseline", "ablation")]
        write_segment(layout.table_dir("ablations") / f"{aid}.parquet", ABLATIONS.from_rows(rows))
    with Catalog(layout.root) as cat:
        assert data.latest_ablation(cat, "m") == "full2"  # the newest of the two with 4 benchmarks
        assert data.latest_ablation(cat, "other") is None
