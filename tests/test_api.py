"""The typed Python API at ``negdb``: the quickstart end to end on a tiny model, ``negdb.intervene`` on live
models against an independent reference, the intervention registry, and the API agreeing with the CLI."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

import negdb
from negdb.ablate import conditions
from negdb.ablate.interventions import INTERVENTIONS, Intervention, register_intervention
from negdb.evals import registry
from negdb.models.families import act_module
from tests.ablate_helpers import short_wikitext_loader
from tests.ingest_helpers import cli
from tests.tiny_models import save_tiny, tiny_input_ids, tiny_model

pytestmark = pytest.mark.timeout(600)

ROOT = Path(__file__).resolve().parents[1]
QUICK = ["--tokens", "512", "--seq-len", "32", "--md-pairs", "100", "--top", "0.05", "--limit", "1",
         "--ppl-tokens", "128", "--window", "64"]


def _quickstart():
    spec = importlib.util.spec_from_file_location("quickstart", ROOT / "examples" / "quickstart.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _counting(computed: list[str]):
    real = conditions.evaluate

    def ev(layout, target, bench, rule, **kw):
        from negdb.ablate.evaluate import make_key
        from negdb.store.results import lookup

        if lookup(layout, make_key(target, bench, rule, kw.get("limit"), kw.get("seed", 0)).result_id) is None:
            computed.append(bench)
        return real(layout, target, bench, rule, **kw)

    return ev


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """The quickstart run twice on a tiny model: the first computes, the second reads back."""
    model = save_tiny(tmp_path_factory.mktemp("m") / "neox", "gpt_neox", seed=0)
    store = tmp_path_factory.mktemp("qs") / "store"
    args = ["--model", str(model), "--store", str(store), *QUICK]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(registry, "load_items", short_wikitext_loader(registry.load_items))
        first = _quickstart().main(args)
        computed: list[str] = []
        mp.setattr(conditions, "evaluate", _counting(computed))
        second = _quickstart().main(args)
    return {"model": str(model), "store": store, "first": first, "second": second, "again": computed}


def test_quickstart_runs_end_to_end(quick):
    first, second = quick["first"], quick["second"]
    frame = first["experiment"].frame()
    assert frame.columns == ["condition", "benchmark", "metric", "value", "baseline", "delta", "ci_lo", "ci_hi",
                             "n", "seeds"]
    assert set(frame["condition"]) == {"ablation", "random"} and set(frame["benchmark"]) == {"wikitext2", "blimp"}
    for r in frame.to_dicts():
        assert r["ci_lo"] <= r["delta"] <= r["ci_hi"]
        assert r["value"] == pytest.approx(r["baseline"] + r["delta"])
    assert first["experiment"].computed > 0 and first["changed"] > 0 and first["restored"]
    # the second run read everything back and recorded nothing new
    assert quick["again"] == [] and second["experiment"].computed == 0
    assert second["experiment"].ablation_id == first["experiment"].ablation_id
    assert second["experiment"].frame().equals(frame)


def test_the_cli_finds_the_api_s_experiment(quick):
    res = quick["first"]["experiment"]
    computed: list[str] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(registry, "load_items", short_wikitext_loader(registry.load_items))
        mp.setattr(conditions, "evaluate", _counting(computed))
        out = cli(quick["store"], "ablate", "--model", quick["model"], "--top", "5%", "--evals", "ppl,blimp",
                  "--controls", "random", "--seeds", "1", "--limit", "1", "--ppl-tokens", "128", "--window", "64",
                  "--device", "cpu", "--batch-tokens", "512", "--format", "json", "--quiet")
    assert out.exit_code == 0, out.output
    assert computed == []
    rows = {(r["condition"], r["benchmark"], r["metric"]): r["delta"] for r in json.loads(out.stdout)["rows"]}
    want = {(r["condition"], r["benchmark"], r["metric"]): r["delta"] for r in res.frame().to_dicts()}
    assert rows == pytest.approx(want)
    # one experiment: another device and batch size are the same experiment
    assert negdb.open(quick["store"]).ablations()["ablation_id"].to_list() == [res.ablation_id]


def test_database_reads_what_it_stored(quick):
    db = negdb.open(quick["store"])
    res, w = quick["first"]["experiment"], quick["first"]["selection"]
    assert db.comparison(res.ablation_id).frame().equals(res.frame())
    assert res.main.name in db.sets and db.sets[res.main.name].set_id == w.content_hash
    assert len(db.results()) == db.sql("SELECT count(*) AS n FROM eval_results")["n"][0]
    saved = db.sets.save(w, "qs-top")
    assert saved.set_id == w.content_hash and db.sets["qs-top"].n_members == w.n_members
    by_name = db.ablate("qs-top", evals=["ppl", "blimp"], controls=["random"], seeds=1, limit=1, ppl_tokens=128,
                        scoring=negdb.Scoring(window=64))
    assert by_name.computed == 0 and by_name.frame().equals(res.frame())
    with pytest.raises(negdb.NegdbError, match="not allowed"):  # user SQL is checked as `negdb sql` checks it
        db.sql("DELETE FROM neurons")
    with pytest.raises(negdb.BadArgument):
        db.select(quick["model"], top="1%")  # strings are parsed by the CLI only
    with pytest.raises(negdb.NotFound):
        db.sets["no-such-set"]


def test_a_plain_mapping_is_a_selection(quick):
    db = negdb.open(quick["store"])
    sel = db.selection(quick["model"], {1: [5, 3, 3], 0: [7]})
    assert sel.members.rows() == [(0, 7), (1, 3), (1, 5)] and sel.counts == {0: 1, 1: 2}
    with pytest.raises(negdb.BadArgument):
        db.selection(quick["model"], {0: [64]})  # the tiny model has 64 neurons per layer


# ------------------------------------------------------------------------------------------ intervene


def _logits(model, ids):
    with torch.inference_mode():
        return model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False).logits.clone()


def _n_hooks(model) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def _reference(monkeypatch, model, neurons, f):
    """Patch each layer's activation to apply ``f`` to the selected columns of its input (the pre-activation)."""
    from negdb.models.families import family_for

    fam = family_for(model.config)
    for li, cols in neurons.items():
        mod = act_module(model, fam, li)
        orig, idx = mod.forward, torch.tensor(cols)

        def fwd(x, _orig=orig, _idx=idx):
            x2 = x.clone()
            x2[..., _idx] = f(x[..., _idx])
            return _orig(x2)

        monkeypatch.setattr(mod, "forward", fwd)


@pytest.mark.parametrize("model_type", ["gpt_neox", "llama"])
def test_intervene_on_a_live_model_matches_the_reference_and_restores_it(model_type, monkeypatch):
    model = tiny_model(model_type, seed=3)
    ids = tiny_input_ids(batch=2, seq=8, seed=2)
    neurons = {0: [1, 5, 9, 20], 2: [0, 3, 33]}
    base = _logits(model, ids)
    with negdb.intervene(model, neurons, mode="neg") as iv:
        assert iv.mode == "neg" and iv.layers == (0, 2) and _n_hooks(model) == 2
        got = _logits(model, ids)
    assert _n_hooks(model) == 0 and torch.equal(_logits(model, ids), base)  # restored exactly
    with monkeypatch.context() as mp:
        _reference(mp, model, neurons, lambda x: torch.where(x < 0, torch.zeros_like(x), x))
        want = _logits(model, ids)
    assert torch.allclose(got, want, atol=1e-5, rtol=0) and not torch.allclose(got, base, atol=1e-4)
    with pytest.raises(RuntimeError, match="boom"):
        with negdb.intervene(model, neurons, mode="both"):
            raise RuntimeError("boom")
    assert _n_hooks(model) == 0 and torch.equal(_logits(model, ids), base)


def test_intervene_takes_a_selection_and_refuses_bad_input(quick):
    lm = negdb.load(quick["model"], device="cpu")
    w = quick["first"]["selection"]
    ids = tiny_input_ids(batch=1, seq=8, seed=4)
    mapping = {}
    for layer, neuron in w.members.iter_rows():
        mapping.setdefault(layer, []).append(neuron)
    with negdb.intervene(lm, w, mode="pos"):
        a = _logits(lm.model, ids)
    with negdb.intervene(lm.model, mapping, mode="pos"):
        b = _logits(lm.model, ids)
    assert torch.equal(a, b)
    for bad in (lambda: negdb.intervene(lm.model, {0: [1]}, mode="zap"),
                lambda: negdb.intervene(lm.model, [1, 2], mode="neg"),
                lambda: negdb.intervene(object(), {0: [1]}),
                lambda: negdb.intervene(lm.model, {0: [64]})):
        with pytest.raises(negdb.BadArgument):
            with bad():
                pass
    assert _n_hooks(lm.model) == 0


# ------------------------------------------------------------------------------------------ the registry


@pytest.fixture
def halve():
    """A mode registered for one test: x' = x / 2 on the set's pre-activations."""

    @register_intervention("halve-test")
    class Halve(Intervention):
        def values(self, layer, out, inp):
            return out * 0.5

    yield Halve
    INTERVENTIONS.pop("halve-test", None)


def test_a_registered_class_is_a_mode_everywhere(halve, monkeypatch):
    assert "halve-test" in negdb.modes() and negdb.make_intervention("halve-test", {0: [1]}).mode == "halve-test"
    model = tiny_model("llama", seed=1)
    ids = tiny_input_ids(batch=2, seq=8, seed=5)
    neurons = {1: list(range(0, 48, 3))}
    base = _logits(model, ids)
    with negdb.intervene(model, neurons, mode="halve-test"):
        got = _logits(model, ids)
    with monkeypatch.context() as mp:
        _reference(mp, model, neurons, lambda x: x / 2)
        want = _logits(model, ids)
    assert torch.allclose(got, want, atol=1e-5, rtol=0) and not torch.allclose(got, base, atol=1e-4)
    # the typed specs and the CLI accept it by name
    negdb.AblateSpec(negdb.SetSpec("m", top=1), mode="halve-test")


def test_registry_refuses_what_it_cannot_use(halve):
    with pytest.raises(negdb.BadArgument, match="already registered"):
        @register_intervention("neg")
        class Other(Intervention):
            pass
    with pytest.raises(negdb.BadArgument):
        register_intervention("a,b")
    with pytest.raises(negdb.BadArgument):
        register_intervention("x")(int)
    with pytest.raises(negdb.BadArgument, match="halve-test"):  # the message lists the registered modes
        negdb.make_intervention("nope", {0: [1]})

    class Unregistered(Intervention):
        pass

    with pytest.raises(negdb.BadArgument, match="not registered"):
        Unregistered({0: [1]})
    assert INTERVENTIONS["neg"].__name__ == "ZeroNegative"  # the refused class did not replace it


def test_import_negdb_is_light():
    """``import negdb`` loads neither torch nor the engine (everything public is imported on first use)."""
    import subprocess

    code = "import sys, negdb; print(int('torch' in sys.modules), int('negdb.ablate' in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["0", "0"]
    assert set(negdb.__all__) <= set(dir(negdb)) and callable(negdb.open) and negdb.SetSpec.__name__ == "SetSpec"
    with pytest.raises(AttributeError):
        negdb.no_such_name  # noqa: B018


def test_typed_values_reach_the_same_key_as_the_cli_strings():
    """The CLI's strings and the API's typed values build equal option groups."""
    from negdb.cli import parse

    assert parse.limit("5,suite=200") == negdb.Limits.of({"*": 5, "suite": 200})
    assert parse.layers("0-2,7") == (0, 1, 2, 7) and parse.layers("all") is None
    assert parse.k("1%") == parse.k("0.01") == 0.01 and parse.k("5") == 5
    assert negdb.Controls(kinds=parse.controls("random,ppl-matched")) == negdb.Controls()
    assert negdb.SetSpec("m", top=parse.k("10%"), layers=parse.layers("1-2")) == negdb.SetSpec("m", top=0.1,
                                                                                              layers=[2, 1])
    assert np.isclose(parse.percentages("0.5,1")[0], 0.005)
    with pytest.raises(negdb.BadArgument):
        parse.layers("0--1")  # a range with ends of both signs needs the model's depth: refused


# ------------------------------------------------------------------------------------------ the conditions engine


@pytest.fixture
def identity():
    """A mode that changes nothing, so its ablation cannot raise perplexity."""

    @register_intervention("identity-test")
    class Identity(Intervention):
        def values(self, layer, out, inp):
            return out.clone()

    yield Identity
    INTERVENTIONS.pop("identity-test", None)


def test_no_perplexity_increase_leaves_the_matched_control_out_in_ablate_and_sweep(quick, identity):
    """One documented behaviour (negdb.ablate.conditions): ablate and sweep both go on without the ppl-matched
    condition and say why."""
    db = negdb.open(quick["store"])
    w = quick["first"]["selection"]
    kw = dict(evals=["ppl"], ppl_tokens=128, probe_tokens=128, scoring=negdb.Scoring(window=64))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(registry, "load_items", short_wikitext_loader(registry.load_items))
        exp = db.ablate(w, mode="identity-test", controls=["random", "ppl-matched"], seeds=1, **kw)
        sw = db.sweep(quick["model"], fractions=[0.05], by=["w_dist"], modes=["identity-test", "both"], seeds=[0],
                      controls=["ppl-matched"], evals=["ppl"], ppl_tokens=128, probe_tokens=128, resolution=0.1,
                      max_fraction=0.4, scoring=negdb.Scoring(window=64), n_boot=50)
    assert [c.name for c in exp.conditions] == ["baseline", "ablation", "random"]
    assert exp.match is None and "does not raise perplexity" in exp.skipped
    assert exp.skipped in exp.render("table") and exp.skipped in json.loads(exp.render("json"))["notes"]
    abl = exp.frame().filter(pl.col("condition") == "ablation")
    assert abl["delta"].to_list() == [0.0]  # the identity really is one
    assert sw.summary["ppl_matched_skipped"] == ["w_dist 5% identity-test"]
    conds = {(r["mode"], r["condition"]) for r in sw.points}
    assert ("identity-test", "ppl-matched") not in conds and ("both", "ppl-matched") in conds
