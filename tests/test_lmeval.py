"""lm-evaluation-harness under a negdb intervention: the adapter, ``negdb lm-eval`` and its stored results.

Offline: local YAML tasks (``--include-path``) over the bundled BLiMP items and tiny models. The reference for
the adapter is negdb's own BLiMP scoring on the same items under the same intervention.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("lm_eval")

import negdb  # noqa: E402
from negdb.ablate.interventions import apply, make_intervention  # noqa: E402
from negdb.evals import registry  # noqa: E402
from negdb.evals.run import ScoringRule, score_items  # noqa: E402
from tests.ingest_helpers import TINY, cli  # noqa: E402
from tests.tiny_models import save_tiny  # noqa: E402

pytestmark = pytest.mark.timeout(600)

PARADIGMS = ("anaphor_gender_agreement", "determiner_noun_agreement_1", "regular_plural_subject_verb_agreement_1")
N_ITEMS = 12


def blimp_items(paradigm: str, n: int = N_ITEMS) -> list[registry.Item]:
    """negdb's first ``n`` BLiMP items of one paradigm (file order)."""
    return [it for it in registry.load_items("blimp") if it.group == paradigm][:n]


def write_blimp_tasks(folder: Path, paradigms=PARADIGMS, n: int = N_ITEMS) -> list[str]:
    """lm-eval YAML tasks over the same bundled items: lm-eval's own BLiMP template, local JSON data."""
    from negdb.ablate.lmeval import blimp_tasks

    return blimp_tasks(folder, list(paradigms), n)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    from negdb.models.checkpoints import select
    from negdb.models.loading import load
    from negdb.models.registry import resolve

    tmp = tmp_path_factory.mktemp("lmeval")
    folder = save_tiny(tmp / "neox", "gpt_neox", seed=5)
    source = resolve(str(folder))
    return folder, load(source, select(source, "final")[0], dtype=torch.float32)


@pytest.fixture(scope="module")
def tasks_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    folder = tmp_path_factory.mktemp("tasks")
    return folder, write_blimp_tasks(folder)


@pytest.fixture(scope="module")
def store(tiny, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model ingested, with its top 10% per layer saved as ``w10``."""
    folder, _ = tiny
    store = tmp_path_factory.mktemp("lmeval-store") / "store"
    assert cli(store, "ingest", "--model", str(folder), *TINY).exit_code == 0
    assert cli(store, "select", "--model", str(folder), "--top", "10%", "--save", "w10").exit_code == 0
    return store


def _lm_eval_samples(lm, intervention, folder: Path, names: list[str]) -> dict[str, list[dict]]:
    import lm_eval
    from lm_eval.tasks import TaskManager

    from negdb.ablate.lmeval_model import NegdbLM

    model = NegdbLM(lm=lm, intervention=intervention, batch_size=4)
    res = lm_eval.simple_evaluate(model=model, tasks=names, task_manager=TaskManager(include_path=str(folder)),
                                  log_samples=True, verbosity="ERROR", bootstrap_iters=0)
    return res["samples"]


@pytest.mark.parametrize("mode", ["none", "neg"])
def test_blimp_through_lm_eval_makes_negdb_decisions(tiny, tasks_dir, mode: str) -> None:
    """Per item, lm-eval with the adapter decides as negdb's own BLiMP scoring does (same items, same hooks)."""
    _, lm = tiny
    folder, names = tasks_dir
    rng = np.random.default_rng(0)
    iv = None if mode == "none" else make_intervention(mode, {li: rng.choice(lm.d_mlp, 16, replace=False).tolist()
                                                               for li in range(lm.n_layers)})
    samples = _lm_eval_samples(lm, iv, folder, names)
    agree = total = 0
    for p, name in zip(PARADIGMS, names):
        items = blimp_items(p)
        with apply(lm, iv) if iv is not None else torch.no_grad():
            ours = score_items(lm, items, ScoringRule("lm-eval"))
        theirs = sorted(samples[name], key=lambda s: s["doc_id"])
        assert [s["doc"]["pairID"] for s in theirs] == [it.id for it in items]
        for row, s in zip(ours, theirs):
            lls = [r[0][0] for r in s["resps"]]
            assert lls == pytest.approx(row["logprobs"], rel=1e-4, abs=1e-3)
            agree += int(bool(s["acc"]) == row["correct"])
            total += 1
    assert agree == total == len(PARADIGMS) * N_ITEMS


def test_the_intervention_changes_forward_passes_and_generations(tiny) -> None:
    from negdb.ablate.lmeval_model import NegdbLM

    _, lm = tiny
    iv = make_intervention("both", {li: list(range(lm.d_mlp)) for li in range(lm.n_layers)})
    plain, ablated = NegdbLM(lm=lm, batch_size=1), NegdbLM(lm=lm, intervention=iv, batch_size=1)
    ids = torch.tensor([[1, 5, 9, 14, 3, 7]])
    with torch.no_grad():
        base_logits = lm.model(ids).logits
        with apply(lm, iv):
            manual = lm.model(ids).logits
        assert torch.equal(plain._model_call(ids), base_logits)
        assert torch.equal(ablated._model_call(ids), manual)
        assert not torch.allclose(manual, base_logits)
        gen = dict(max_length=ids.shape[1] + 6, stop=["\n\n\n"], do_sample=False)
        base_gen = plain._model_generate(ids, **gen)
        abl_gen = ablated._model_generate(ids, **gen)
        with apply(lm, iv):
            manual_gen = lm.model.generate(ids, max_length=ids.shape[1] + 6, do_sample=False,
                                           pad_token_id=lm.tokenizer.pad_token_id or 0)
    assert torch.equal(abl_gen[:, :manual_gen.shape[1]], manual_gen[:, :abl_gen.shape[1]])
    assert not torch.equal(abl_gen, base_gen)
    # no hook is left behind
    assert torch.equal(lm.model(ids).logits, base_logits)


def test_lm_eval_model_by_name_reads_the_store(tiny, tasks_dir, store: Path) -> None:
    """``simple_evaluate(model="negdb", model_args="store=...,model=...,set=...")`` builds the intervention."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    import negdb.ablate.lmeval_model  # noqa: F401  (registers "negdb")

    folder, _ = tiny
    tdir, names = tasks_dir
    res = lm_eval.simple_evaluate(model="negdb", model_args=f"store={store},model={folder},set=w10,mode=neg",
                                  tasks=names[:1], task_manager=TaskManager(include_path=str(tdir)),
                                  limit=4, verbosity="ERROR", bootstrap_iters=0)
    assert res["results"][names[0]]["acc,none"] is not None


def test_negdb_lm_eval_stores_results_joinable_with_neurons(tiny, tasks_dir, store: Path) -> None:
    folder, _ = tiny
    tdir, names = tasks_dir
    args = ["lm-eval", "--model", str(folder), "--set", "w10", "--mode", "neg", "--tasks", ",".join(names[:2]),
            "--include-path", str(tdir), "--limit", "6", "--batch-size", "4", "--format", "json"]
    res = cli(store, *args)
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert {r["task"] for r in out["rows"]} == set(names[:2]) and out["mode"] == "neg"
    for r in out["rows"]:
        assert r["delta"] == pytest.approx(r["ablated"] - r["baseline"])
    with negdb.connect(store) as cat:
        rows = cat.sql("SELECT r.benchmark, r.mode, r.n_items, count(m.neuron) AS members "
                       "FROM eval_results r JOIN neuron_set_members m USING (set_id) "
                       "WHERE r.benchmark LIKE 'lm-eval:%' GROUP BY ALL ORDER BY 1").to_dicts()
        assert [r["benchmark"] for r in rows] == [f"lm-eval:{n}" for n in sorted(names[:2])]
        n_members = cat.sql("SELECT n_members FROM neuron_sets WHERE name = 'w10'")["n_members"][0]
        assert all(r["mode"] == "neg" and r["n_items"] == 6 and r["members"] == n_members for r in rows)
        # the neurons of the set, with their statistics, next to the task's accuracy
        joined = cat.sql("SELECT r.primary_value, avg(n.w_dist) AS w FROM eval_results r "
                         "JOIN neuron_set_members m USING (set_id) JOIN neurons n ON n.model_id = r.model_id "
                         "AND n.revision = r.revision AND n.layer = m.layer AND n.neuron = m.neuron "
                         "GROUP BY ALL")
        assert joined.height == 2
        base = cat.sql("SELECT count(*) AS n FROM eval_results WHERE mode = 'none' AND benchmark LIKE 'lm-eval:%'")
        assert base["n"][0] == 2
        items = cat.sql("SELECT correct, logprobs FROM eval_items WHERE benchmark LIKE 'lm-eval:%'")
        assert items.height == 4 * 6 and all(len(lp) == 2 for lp in items["logprobs"])
    caches = sorted(p.name for p in (store / "cache" / "lm-eval").iterdir())
    assert len(caches) == 2  # one response cache per intervention: the baseline's and the ablation's
    from negdb.ablate.lmeval import LmEvalOptions, intervention_id
    from negdb.ablate.lmeval_target import Selection, resolve_target
    from negdb.query.setspec import SetSpec

    opts = LmEvalOptions(tasks=",".join(names[:2]))
    ablated, _ = resolve_target(store, Selection(model=str(folder), neurons=SetSpec(model=str(folder),
                                                                                   set_name="w10")))
    baseline, _ = resolve_target(store, Selection(model=str(folder)))
    assert caches == sorted(f"{intervention_id(t, opts)}_rank0.db" for t in (ablated, baseline))
    # a repeat reads everything back: no model is loaded
    again = cli(store, *args[:-2], "--format", "table")
    assert again.exit_code == 0 and "0 task result(s) computed, 4 read" in again.stderr


def test_bad_arguments_are_one_line_errors(tiny, store: Path) -> None:
    from negdb.errors import BadArgument
    from tests.ingest_helpers import assert_one_error

    folder, _ = tiny
    assert_one_error(cli(store, "lm-eval", "--model", str(folder), "--top", "1%", "--tasks", "no_such_task_xyz"),
                     BadArgument)
    assert_one_error(cli(store, "lm-eval", "--model", str(folder), "--top", "1%", "--set", "x", "--tasks", "a"),
                     BadArgument)
    assert_one_error(cli(store, "lm-eval", "--model", str(folder), "--mode", "zap", "--tasks", "a"), BadArgument)
