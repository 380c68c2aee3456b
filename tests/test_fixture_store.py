"""Stored keys stay stable: a store written by an older negdb (``tests/fixtures/store-v1.tar.gz``, built by
``tests/fixtures/make_store_v1.py`` at commit 03c6b47) is read back by today's code with every result found.

Two checks, neither of which loads a model or computes anything:

- every stored evaluation's ``result_id`` and every saved set's ``set_id`` is recomputed from its stored fields
  with today's key functions;
- every command that wrote the store, run again today (the same CLI flags), finds all of it: it exits 0, writes
  no evaluation, analysis or experiment, prints the same analysis ids, and together the runs look up every
  stored evaluation.
"""

from __future__ import annotations

import json
import os
import shutil
import tarfile
import uuid
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest

from negdb.evals import registry
from tests.ablate_helpers import short_wikitext_loader
from tests.ingest_helpers import cli
from tests.tiny_models import save_step_run, save_tiny

pytestmark = pytest.mark.timeout(600)

FIXTURE = Path(__file__).parent / "fixtures" / "store-v1.tar.gz"
WRITTEN = ("eval_results", "eval_items", "analyses", "ablations", "neuron_sets", "sweep_points", "layer_effects",
           "pos_surprisal", "training_dynamics", "diff_pairs", "neg_share")


def _models(manifest: dict) -> None:
    """The fixture's tiny models at their stored paths (model keys are absolute paths), made once, atomically."""
    root = Path(manifest["models"])
    need = [root / "tiny-neox", *(root / "run" / f"step{s}" for s in manifest["run_steps"])]

    def ready() -> bool:
        return all((p / "model.safetensors").exists() and (p / "tokenizer.json").exists() for p in need)

    if ready():
        return
    tmp = root.with_name(f"{root.name}.{uuid.uuid4().hex}")
    save_tiny(tmp / "tiny-neox", "gpt_neox", seed=0)
    save_step_run(tmp, manifest["run_steps"], name="run")
    if root.exists() and not ready():
        shutil.rmtree(root, ignore_errors=True)  # a half-made copy
    try:
        os.rename(tmp, root)
    except OSError:  # made by another process meanwhile
        shutil.rmtree(tmp, ignore_errors=True)
    assert ready()


@pytest.fixture(scope="module")
def fixture_store(tmp_path_factory):
    dest = tmp_path_factory.mktemp("fixture")
    with tarfile.open(FIXTURE) as tar:
        tar.extractall(dest, filter="data")
    store = dest / "store-v1"
    manifest = json.loads((store / "commands.json").read_text())
    _models(manifest)
    return store, manifest


@pytest.fixture
def no_model(monkeypatch):
    """Loading a model fails the test: everything must come from the store."""
    import negdb.models.loading as loading

    def refuse(*a, **kw):
        raise AssertionError("a model was loaded: a stored result was not found by its key")

    monkeypatch.setattr(loading, "load", refuse)
    monkeypatch.setattr(registry, "load_items", short_wikitext_loader(registry.load_items))


def _table(store: Path, name: str) -> pl.DataFrame:
    files = sorted((store / "tables" / name).glob("*.parquet"))
    return pl.concat([pl.from_arrow(pq.read_table(f)) for f in files], how="diagonal_relaxed")


def _files(store: Path) -> dict[str, set[str]]:
    return {t: {p.name for p in (store / "tables" / t).glob("*.parquet")} for t in WRITTEN}


def test_every_result_id_is_its_recomputed_key(fixture_store):
    from negdb.ablate.evaluate import Target, make_key
    from negdb.evals.run import ScoringRule

    store, _ = fixture_store
    rows = _table(store, "eval_results").to_dicts()
    assert len(rows) > 50
    for r in rows:
        scoring = json.loads(r["scoring_json"])
        ppl = registry.get(r["benchmark"]).kind == "perplexity"
        rule = ScoringRule(scoring["bos_policy"], scoring["window"] if ppl else None)
        assert r["bench_hash"] == registry.spec_hash(r["benchmark"])
        target = Target(r["model_id"], r["revision"], r["commit"], None, r["set_id"])
        key = make_key(target, r["benchmark"], rule, r["item_limit"], r["sample_seed"])
        key = type(key)(**{**key.__dict__, "mode": r["mode"]})
        assert key.result_id == r["result_id"], r


def test_every_set_id_is_its_recomputed_content_hash(fixture_store):
    from negdb.query.sets import Keys, content_hash

    store, _ = fixture_store
    sets = _table(store, "neuron_sets").to_dicts()
    members = _table(store, "neuron_set_members")
    assert len(sets) > 10
    for s in sets:
        m = members.filter(pl.col("set_id") == s["set_id"])
        keys = Keys(s["model_id"], s["revision"], s["slice_id"], s["spec_id"])
        assert content_hash(keys, m) == s["set_id"]


def test_ingest_finds_its_statistics(fixture_store):
    """Ingest loads the model to tokenize the corpus (and always did), then finds every layer stored."""
    store, manifest = fixture_store
    before = _files(store)
    (cmd,) = [c for c in manifest["commands"] if c["args"][0] == "ingest"]
    res = cli(store, *cmd["args"])
    assert res.exit_code == 0, res.output
    assert "already ingested" in res.stderr
    assert _files(store) == before


def test_every_command_finds_everything_stored(fixture_store, no_model):
    store, manifest = fixture_store
    before = _files(store)
    for cmd in manifest["commands"]:
        args = list(cmd["args"])
        if args[0] == "ingest":
            continue
        res = cli(store, *args)
        assert res.exit_code == 0, (args, res.output)
        if "analysis_id" in cmd:
            assert json.loads(res.stdout)["analysis_id"] == cmd["analysis_id"], args
    assert _files(store) == before


def test_the_python_api_finds_everything_stored(fixture_store, no_model):
    """The same work asked for with typed values (no CLI string) finds the same stored ids."""
    import negdb
    from negdb import Bootstrap, Scoring, SetSpec

    store, manifest = fixture_store
    ids = {c["args"][0] if c["args"][0] != "analyze" else c["args"][1]: c for c in manifest["commands"]}
    abl = [c["new_ablations"][0] for c in manifest["commands"] if c["args"][0] == "ablate"]
    model, run = str(Path(manifest["models"]) / "tiny-neox"), str(Path(manifest["models"]) / "run")
    before = _files(store)
    db = negdb.open(store)
    w64, b200 = Scoring(window=64), Bootstrap(200)
    first = db.ablate(SetSpec(model, top=0.1), evals=["blimp", "copa", "ppl"], limit=2, seeds=2, ppl_tokens=256,
                      probe_tokens=256, scoring=w64, bootstrap=b200)
    second = db.ablate(SetSpec(model, set_name="wass10", layers=[0, 1]), mode="both", evals=["tse", "ppl"],
                       limit={"*": 2, "tse": 1}, controls=["random"], seeds=1, control_seed=3, sample_seed=2,
                       ppl_tokens=256, probe_tokens=256, scoring=w64, bootstrap=Bootstrap(200, 3))
    assert [first.ablation_id, second.ablation_id] == abl and first.computed == second.computed == 0
    for exp in (first, second):  # the stored comparison (`negdb results --show`) is the recomputed one
        assert db.comparison(exp.ablation_id).frame().equals(exp.frame())
    sw = db.sweep(model, fractions=[0.1, 0.2], by=["w_dist", "std"], modes=["neg", "pos"], seeds=[1, 2],
                  evals=["copa", "ppl"], limit=2, resolution=0.1, max_fraction=0.4, ppl_tokens=256, probe_tokens=256,
                  scoring=w64, n_boot=200)
    layers = db.analyze.layers(SetSpec(model, top=0.1), groups=3, evals=["ppl", "blimp"], limit=1, ppl_tokens=128,
                               scoring=w64, bootstrap=b200)
    pos = db.analyze.pos(SetSpec(model, top=0.1), seeds=2, ppl_tokens=256, probe_tokens=256, scoring=w64,
                         bootstrap=b200)
    pairs = db.analyze.pairs(model, layer=1, index=5, k=5, context=4, bootstrap=b200)
    training = db.analyze.training(run, checkpoints="all", evals=["ppl", "copa"], limit=1, ppl_tokens=256,
                                   scoring=w64, bootstrap=b200,
                                   ingest={"tokens": 512, "seq_len": 32, "md_pairs": 100})
    assert sw.from_store and layers.from_store and not pos.computed and pairs.reused and training.reused
    got = {"sweep": sw.analysis_id, "layers": layers.analysis_id, "pos": pos.analysis_id,
           "pairs": pairs.analysis_id, "training": training.analysis_id}
    assert got == {k: ids[k]["analysis_id"] for k in got}
    assert _files(store) == before
