"""End-to-end ingest on tiny models: what is stored equals independent references."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.stats
import torch
import zarr
from scipy import integrate, special

import negdb
from negdb.models.families import act_module, family_for
from tests.ingest_helpers import TINY, cli, stats_frame, store_files
from tests.tiny_models import save_tiny, tiny_model


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny(tmp_path_factory.mktemp("m") / "neox", "gpt_neox", seed=3)


@pytest.fixture(scope="module")
def ingested(tmp_path_factory: pytest.TempPathFactory, tiny_dir: Path) -> Path:
    store = tmp_path_factory.mktemp("store")
    res = cli(store, "ingest", "--model", str(tiny_dir), *TINY)
    assert res.exit_code == 0, res.output
    return store


def _w1_quad(z: np.ndarray) -> float:
    """W1(z, N(0,1)) by numerical integration of |F^-1(u) - Q(u)| over each quantile interval."""
    z = np.sort(z)
    n = len(z)
    total = 0.0
    for i, c in enumerate(z):
        a, b = i / n, (i + 1) / n
        inner = [u for u in (special.ndtr(c),) if a < u < b]
        total += integrate.quad(lambda u: abs(c - special.ndtri(u)), a, b, points=inner or None,
                                epsabs=1e-13, epsrel=1e-11, limit=200)[0]
    return total


def _reference_preacts(tiny_dir: Path, tokens: np.ndarray) -> dict[int, np.ndarray]:
    """Pre-activations recorded independently: the input of each layer's activation module."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32).eval()
    fam = family_for(model.config)
    seen: dict[int, list[torch.Tensor]] = {}
    hooks = [act_module(model, fam, i).register_forward_hook(
        lambda _m, args, _o, i=i: seen.setdefault(i, []).append(args[0].reshape(-1, args[0].shape[-1])))
        for i in range(model.config.num_hidden_layers)]
    with torch.no_grad():
        model(torch.from_numpy(tokens.astype(np.int64)))
    for h in hooks:
        h.remove()
    return {i: torch.cat(v).numpy() for i, v in seen.items()}


def test_stored_activations_are_what_the_activation_receives(ingested: Path, tiny_dir: Path) -> None:
    with negdb.connect(str(ingested)) as cat:
        acts = cat.sql("SELECT layer, array_path, n_tokens FROM activations ORDER BY layer")
    assert acts["layer"].to_list() == [0, 1, 2]
    group = zarr.open_group(str(ingested / Path(acts["array_path"][0]).parent.parent), mode="r")
    tokens = group["token_ids"][:].reshape(-1, 32)
    ref = _reference_preacts(tiny_dir, tokens)
    for layer, path in zip(acts["layer"], acts["array_path"]):
        stored = zarr.open_array(str(ingested / path), mode="r")[:]
        assert stored.dtype == np.float16 and stored.shape == (512, 64)
        np.testing.assert_array_equal(stored, ref[layer].astype(np.float16))


def test_statistics_equal_scipy_references(ingested: Path) -> None:
    with negdb.connect(str(ingested)) as cat:
        stats = cat.sql("SELECT * FROM neuron_stats ORDER BY layer, neuron")
        path = cat.sql("SELECT array_path FROM activations WHERE layer = 1")["array_path"][0]
    assert stats.height == 3 * 64
    x_all = zarr.open_array(str(ingested / path), mode="r")[:].astype(np.float64)
    layer1 = stats.filter(stats["layer"] == 1)
    for j in (0, 17, 63):
        x = x_all[:, j]
        row = layer1.row(j, named=True)
        z = (x - x.mean()) / x.std()
        assert row["n"] == 512
        np.testing.assert_allclose(row["mean"], x.mean(), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(row["std"], x.std(), rtol=1e-9)
        np.testing.assert_allclose(row["skew"], scipy.stats.skew(x), rtol=1e-7, atol=1e-9)
        np.testing.assert_allclose(row["kurtosis"], scipy.stats.kurtosis(x), rtol=1e-7, atol=1e-9)
        np.testing.assert_allclose(row["q05"], np.quantile(x, 0.05), rtol=1e-9)
        np.testing.assert_allclose(row["frac_neg"], (x < 0).mean())
        np.testing.assert_allclose(row["w_dist"], _w1_quad(z), atol=1e-6)
        np.testing.assert_allclose(row["w_dist_neg"] + row["w_dist_pos"], row["w_dist"], atol=1e-9)
    order = np.argsort(layer1["w_dist"].to_numpy())
    assert np.all(np.diff(layer1["w_pct"].to_numpy()[order]) >= 0)


def test_mapping_difficulty_equals_a_loop_over_stored_pairs(ingested: Path) -> None:
    with negdb.connect(str(ingested)) as cat:
        path = cat.sql("SELECT array_path FROM activations WHERE layer = 2")["array_path"][0]
        md = cat.sql("SELECT neuron, md FROM neuron_stats WHERE layer = 2 ORDER BY neuron")["md"].to_numpy()
    group = zarr.open_group(str(ingested / Path(path).parent.parent), mode="r")
    key = next(iter(group["md"].group_keys()))
    pairs = group["md"][key]["pairs"][:]
    assert pairs.shape == (100, 2) and len(np.unique(pairs)) == 200  # disjoint pairs
    rows = np.unique(pairs)
    h = group["md"][key]["L002"][:].astype(np.float64)
    x = zarr.open_array(str(ingested / path), mode="r")[:].astype(np.float64)
    pos = {r: i for i, r in enumerate(rows)}
    d_in = np.array([np.linalg.norm(h[pos[a]] - h[pos[b]]) for a, b in pairs])
    d_in /= d_in.max()
    for j in (0, 5, 40):
        diff = np.array([abs(x[a, j] - x[b, j]) for a, b in pairs])
        ref = np.mean((diff / np.median(diff)) / d_in)
        np.testing.assert_allclose(md[j], ref, rtol=1e-4)


def test_catalog_tables_trace_every_statistic(ingested: Path, tiny_dir: Path) -> None:
    with negdb.connect(str(ingested)) as cat:
        runs = cat.sql("SELECT * FROM runs")
        joined = cat.sql("SELECT count(*) AS n FROM neuron_stats s JOIN runs r ON r.run_id = s.run_id "
                         "JOIN slices l ON l.slice_id = s.slice_id JOIN stat_specs p ON p.spec_id = s.spec_id "
                         "JOIN checkpoints c ON c.model_id = s.model_id AND c.revision = s.revision "
                         "JOIN models m ON m.model_id = s.model_id")
        sl = cat.sql("SELECT * FROM slices").row(0, named=True)
    assert runs["status"].to_list() == ["done"]
    assert "torch" in runs["versions_json"][0] and "stream_s" in runs["timings_json"][0]
    assert joined["n"][0] == 3 * 64
    assert sl["n_tokens"] == 512 and sl["seq_len"] == 32 and sl["dataset"] == "wikitext-2:valid"


def test_rerun_is_a_noop(ingested: Path, tiny_dir: Path) -> None:
    before = store_files(ingested)
    res = cli(ingested, "ingest", "--model", str(tiny_dir), *TINY)
    assert res.exit_code == 0 and "already ingested" in res.output
    assert store_files(ingested) == before


def test_layers_added_later_are_not_recomputed(tmp_path: Path, tiny_dir: Path) -> None:
    assert cli(tmp_path, "ingest", "--model", str(tiny_dir), "--layers", "1", *TINY).exit_code == 0
    res = cli(tmp_path, "ingest", "--model", str(tiny_dir), "--activations", "none", *TINY)
    assert res.exit_code == 0, res.output
    with negdb.connect(str(tmp_path)) as cat:
        per_layer = cat.sql("SELECT layer, count(*) AS n, count(DISTINCT run_id) AS runs FROM neuron_stats "
                            "GROUP BY layer ORDER BY layer")
        runs = cat.sql("SELECT layers FROM runs ORDER BY started_at")["layers"].to_list()
        acts = cat.sql("SELECT layer FROM activations")["layer"].to_list()
    assert per_layer["n"].to_list() == [64, 64, 64]
    assert runs == [[1], [0, 2]]
    assert acts == [1]  # the second run kept none
    assert not (tmp_path / "work").exists() or not any((tmp_path / "work").iterdir())


def test_sample_reference_is_seeded_and_stored_beside_exact(tmp_path: Path, tiny_dir: Path) -> None:
    for _ in range(2):
        args = ["--w-reference", "sample", "--seed", "7", "--activations", "none"]
        assert cli(tmp_path, "ingest", "--model", str(tiny_dir), *args, *TINY).exit_code == 0
    assert cli(tmp_path, "ingest", "--model", str(tiny_dir), "--activations", "none", *TINY).exit_code == 0
    df = stats_frame(tmp_path)
    with negdb.connect(str(tmp_path)) as cat:
        specs = cat.sql("SELECT w_reference, w_seed FROM stat_specs ORDER BY w_reference")
    assert specs.rows() == [("exact", None), ("sample", 7)]
    assert df.height == 2 * 3 * 64  # the second sample run was a no-op
    exact, sample = (df.filter(df["spec_id"] == s)["w_dist"].to_numpy() for s in df["spec_id"].unique().sort())
    assert not np.allclose(exact, sample) and np.corrcoef(exact, sample)[0, 1] > 0.9


def test_families_ingest(tmp_path: Path) -> None:
    for model_type in ("gpt2", "opt", "llama", "gemma3_text", "olmo2"):
        folder = tmp_path / model_type
        tiny_model(model_type, seed=1).save_pretrained(folder)
        from tests.tiny_models import tiny_tokenizer

        tiny_tokenizer().save_pretrained(folder)
        res = cli(tmp_path / "store", "ingest", "--model", str(folder), "--activations", "none", *TINY)
        assert res.exit_code == 0, (model_type, res.output)
    with negdb.connect(str(tmp_path / "store")) as cat:
        fams = cat.sql("SELECT family, count(*) AS n FROM neuron_stats JOIN models USING (model_id) "
                       "GROUP BY family ORDER BY family")
    assert fams["family"].to_list() == ["gemma", "gpt2", "llama", "olmo", "opt"]


def test_activations_added_later_without_recomputing_statistics(tmp_path: Path, tiny_dir: Path) -> None:
    assert cli(tmp_path, "ingest", "--model", str(tiny_dir), "--activations", "layers=1", *TINY).exit_code == 0
    before = stats_frame(tmp_path)
    res = cli(tmp_path, "ingest", "--model", str(tiny_dir), "--activations", "all", *TINY)
    assert res.exit_code == 0 and "ingested" in res.output, res.output
    with negdb.connect(str(tmp_path)) as cat:
        acts = cat.sql("SELECT layer, count(*) AS n FROM activations GROUP BY 1 ORDER BY 1")
        runs = cat.sql("SELECT layers, status FROM runs ORDER BY started_at").rows()
        path = cat.sql("SELECT array_path FROM activations WHERE layer = 2")["array_path"][0]
    assert stats_frame(tmp_path).equals(before)  # statistics untouched, no duplicates
    assert acts["layer"].to_list() == [0, 1, 2] and acts["n"].to_list() == [1, 1, 1]
    assert runs == [([0, 1, 2], "done"), ([0, 2], "done")]
    assert zarr.open_array(str(tmp_path / path), mode="r").shape == (512, 64)
    again = cli(tmp_path, "ingest", "--model", str(tiny_dir), "--activations", "all", *TINY)
    assert "already ingested" in again.output
