"""One-neuron reports on a real store: histogram, Gaussian expectation and contexts equal independent references."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
import zarr

import negdb
from negdb.errors import BadArgument, ModelLoadError, NotFound
from negdb.query import neuron as nq
from tests.ingest_helpers import assert_one_error, cli, ingest_into
from tests.tiny_models import save_tiny, tiny_tokenizer

SEQ = 32  # TINY's --seq-len


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A store of a tiny model whose layers 0 and 1 keep their activations (layer 2: statistics only)."""
    folder = save_tiny(tmp_path_factory.mktemp("m") / "neox", "gpt_neox", seed=5)
    return ingest_into(tmp_path_factory, folder, "--activations", "layers=0,1"), str(folder.resolve())


@pytest.fixture()
def cat(env):
    with negdb.connect(str(env[0])) as c:
        yield c


def _stored(cat, store: Path, layer: int) -> tuple[np.ndarray, zarr.Group]:
    path = cat.sql("SELECT array_path FROM activations WHERE layer = ?", [layer])["array_path"][0]
    arr = zarr.open_array(str(store / path), mode="r")[:]
    return arr, zarr.open_group(str((store / path).parent.parent), mode="r")


def _row(cat, layer: int, neuron: int) -> dict:
    return cat.sql("SELECT * FROM neuron_stats WHERE layer = ? AND neuron = ?", [layer, neuron]).row(0, named=True)


@pytest.mark.parametrize(("layer", "index", "bins"), [(0, 3, 40), (1, 17, 13), (1, 63, 1)])
def test_histogram_and_gaussian(cat, env, layer, index, bins) -> None:
    store, model = env
    rep = nq.report(cat, model, None, layer, index, bins=bins, contexts=0)
    x = _stored(cat, store, layer)[0][:, index].astype(np.float64)
    counts, edges = np.histogram(x, bins=bins)
    h = rep.histogram
    assert h is not None
    np.testing.assert_array_equal(h.counts, counts)
    np.testing.assert_array_equal(h.edges, edges)
    assert h.counts.sum() == h.n == len(x) == 512
    row = _row(cat, layer, index)
    assert rep.stats["w_dist"] == row["w_dist"] and rep.stats["neuron"] == index
    phi = scipy.stats.norm(loc=row["mean"], scale=row["std"]).cdf
    ref = np.array([512 * (phi(b) - phi(a)) for a, b in zip(edges[:-1], edges[1:])])
    np.testing.assert_allclose(h.expected, ref, rtol=1e-9, atol=1e-9)
    assert rep.contexts == {"most_negative": [], "most_positive": [], "near_zero": []}


def _reference_text(tok, ids: np.ndarray, pos: np.ndarray, row: int, width: int) -> str:
    """Context by positions: ``width`` tokens either side, clipped to the window [row-pos, row-pos+SEQ)."""
    lo = row - min(width, int(pos[row]))
    hi = row + min(width, SEQ - 1 - int(pos[row])) + 1

    def dec(a: np.ndarray) -> str:
        return tok.decode([int(i) for i in a], skip_special_tokens=False, clean_up_tokenization_spaces=False)

    return (("..." if pos[lo] > 0 else "") + dec(ids[lo:row]) + "[[" + dec(ids[row:row + 1]) + "]]"
            + dec(ids[row + 1:hi]) + ("..." if pos[hi - 1] < SEQ - 1 else ""))


@pytest.mark.parametrize("width", [0, 3, 8, 40])
def test_contexts(cat, env, width) -> None:
    store, model = env
    layer, index, k = 1, 9, 4
    rep = nq.report(cat, model, "final", layer, index, contexts=k, window=width)
    arr, group = _stored(cat, store, layer)
    x = arr[:, index].astype(np.float64)
    ids, win, pos = group["token_ids"][:], group["window"][:], group["position"][:]
    tok = tiny_tokenizer()
    row = _row(cat, layer, index)
    ctx = rep.contexts
    assert ctx is not None and [len(v) for v in ctx.values()] == [k, k, k]
    neg, top, zero = ctx["most_negative"], ctx["most_positive"], ctx["near_zero"]
    assert neg[0].value == row["min"] == x.min()
    assert top[0].value == row["max"] == x.max()
    assert abs(zero[0].value) == np.abs(x).min()
    assert [c.value for c in neg] == sorted(x)[:k]
    assert [c.value for c in top] == sorted(x, reverse=True)[:k]
    for c in (*neg, *top, *zero):
        assert x[c.row] == c.value
        assert c.token_id == ids[c.row] and c.window == win[c.row] and c.position == pos[c.row]
        assert c.token == tok.decode([int(ids[c.row])])
        assert f"[[{c.token}]]" in c.text
        assert c.text == _reference_text(tok, ids, pos, c.row, width)
    d = rep.to_dict()
    json.dumps(d, allow_nan=False)
    assert d["contexts"]["most_negative"][0]["value"] == x.min()


def test_activations(cat, env) -> None:
    store, model = env
    arr = _stored(cat, store, 0)[0]
    col = nq.activations(cat, model, None, 0, 5)
    assert col.dtype == np.float16
    np.testing.assert_array_equal(col, arr[:, 5])
    np.testing.assert_array_equal(nq.activations(cat, model, "final", 0), arr)
    with pytest.raises(NotFound, match="--activations all"):
        nq.activations(cat, model, None, 2, 0)
    with pytest.raises(NotFound, match="layer 3 out of range"):
        nq.activations(cat, model, None, 3)
    with pytest.raises(NotFound, match="neuron 64 out of range"):
        nq.activations(cat, model, None, 0, 64)


def test_report_without_activations(cat, env) -> None:
    rep = nq.report(cat, env[1], None, 2, 7)
    assert rep.histogram is None and rep.contexts is None
    assert rep.stats["w_dist"] == _row(cat, 2, 7)["w_dist"]
    assert any("--activations all" in n for n in rep.notes)
    d = json.loads(json.dumps(rep.to_dict(), allow_nan=False))
    assert d["histogram"] is None and d["stats"]["layer"] == 2


def test_report_errors(cat, env) -> None:
    for args, msg in (((0, 64), "neuron 64 out of range"), ((5, 0), "layer 5 out of range"),
                      ((0, -1), "neuron -1 out of range")):
        with pytest.raises(NotFound, match=msg):
            nq.report(cat, env[1], None, *args)
    with pytest.raises(NotFound, match="stored models"):
        nq.report(cat, "no-such-model", None, 0, 0)
    with pytest.raises(BadArgument, match="bins"):
        nq.report(cat, env[1], None, 0, 0, bins=0)


def test_to_dict_without_finite_values() -> None:
    h = nq.histogram(np.zeros(10, dtype=np.float16), 0.0, 0.0, bins=4)
    assert h.counts.sum() == 10 and h.expected.sum() == 10
    rep = nq.NeuronReport(keys=nq.Keys("m", "r", "s", "p"), layer=0, neuron=0,
                          stats={"skew": float("nan"), "w_dist": float("inf"), "n": np.int64(3)}, histogram=h)
    d = json.loads(json.dumps(rep.to_dict(), allow_nan=False))
    assert d["stats"] == {"skew": None, "w_dist": None, "n": 3}


def test_load_tokenizer_reuses_the_gguf_cache(tmp_path) -> None:
    from negdb.models import loading
    from negdb.models.checkpoints import select
    from negdb.models.registry import ModelSource

    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"not a real gguf: must never be read")
    source = ModelSource(model_id=str(gguf), kind="gguf", location=str(gguf))
    cache = tmp_path / "cache"
    folder = loading._gguf_cache_folder(source, cache)
    folder.mkdir(parents=True)
    tiny_tokenizer().save_pretrained(folder)
    (folder / "config.json").write_text("{}")
    (folder / loading._META).write_text(json.dumps(loading._gguf_stamp(gguf)))
    tok = loading.load_tokenizer(source, select(source, "final")[0], cache_dir=cache)
    assert tok.decode(tok("The quick brown fox")["input_ids"]) == "The quick brown fox"


def test_load_tokenizer_from_the_hub_cache(tmp_path, monkeypatch) -> None:
    import huggingface_hub

    from negdb.models import loading
    from negdb.models.checkpoints import select
    from negdb.models.registry import resolve
    from tests.tiny_models import make_hub_cache

    cache, _ = make_hub_cache(tmp_path, "EleutherAI/pythia-70m", ["step0"])
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(loading, "_pretrained", lambda *a, **k: pytest.fail("weights were read"))
    source = resolve("pythia-70m")
    tok = loading.load_tokenizer(source, select(source, "step0")[0])
    assert tok.decode(tok("Hello world")["input_ids"]) == "Hello world"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty"))
    with pytest.raises(ModelLoadError, match="no tokenizer"):
        loading.load_tokenizer(source, select(source, "step0")[0])


def test_cli(env) -> None:
    store, model = env
    res = cli(store, "neuron", "--model", model, "--checkpoint", "final", "--layer", "1", "--index", "9",
              "--bins", "12", "--contexts", "3")
    assert res.exit_code == 0, res.output
    out = res.output
    assert "w_dist" in out and "most negative" in out and "most positive" in out and "closest to zero" in out
    hist_rows = [l for l in out.splitlines() if l[:3] in ("- [", "0 [", "  [")]
    assert len(hist_rows) == 12
    assert hist_rows[0].startswith("- [") and "█" in out and "|" in out and "[[" in out
    counts = [int(l.split(")")[-1].split("]")[-1].split()[0]) for l in hist_rows]
    assert sum(counts) == 512
    res = cli(store, "neuron", "--model", model, "--layer", "2", "--index", "0")
    assert res.exit_code == 0 and "--activations all" in res.output and "w_dist" in res.output
    res = cli(store, "neuron", "--model", model, "--layer", "0", "--index", "1", "--json")
    assert res.exit_code == 0
    assert json.loads(res.output)["histogram"]["n"] == 512


@pytest.mark.parametrize(("args", "kind"), [
    (("--model", "no-such-model", "--layer", "0", "--index", "0"), NotFound),
    (("--layer", "3", "--index", "0"), NotFound),
    (("--layer", "0", "--index", "64"), NotFound),
    (("--layer", "0", "--index", "0", "--checkpoint", "step9"), NotFound),
    (("--layer", "0", "--index", "0", "--bins", "0"), BadArgument),
])
def test_cli_bad_input(env, args, kind) -> None:
    store, model = env
    full = args if "--model" in args else ("--model", model, *args)
    assert_one_error(cli(store, "neuron", *full), kind)
