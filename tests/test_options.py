"""The option groups as the CLI builds them: each flag lands in its typed field, old flag names still work, the
``--seed`` shorthand fills only the seeds not given, and the keys of stored analyses keep their old shape."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

import negdb
from negdb.cli.main import main


@pytest.fixture
def captured(monkeypatch):
    """Run a command with its ``run`` replaced by one that records the spec (nothing is computed)."""
    import negdb.ablate.experiment as experiment
    import negdb.analyze.layers as layers
    import negdb.analyze.pairs as pairs
    import negdb.analyze.pos as pos
    import negdb.analyze.training as training
    import negdb.ingest.pipeline as pipeline
    import negdb.sweep as sweep

    got: dict = {}

    class Stop(Exception):
        pass

    def record(spec, *a, **kw):
        got["spec"], got["kw"] = spec, kw
        raise Stop

    for mod in (experiment, layers, pairs, pos, training, sweep):
        monkeypatch.setattr(mod, "run", record)
    monkeypatch.setattr(pipeline, "ingest", record)

    def invoke(*args: str):
        got.clear()
        res = CliRunner().invoke(main, ["--store", "nowhere", *args])
        assert isinstance(res.exception, Stop), res.output
        return got["spec"], got["kw"]

    return invoke


def test_ablate_flags_become_typed_groups(captured):
    spec, kw = captured("ablate", "--model", "m", "--top", "1%", "--layers", "0-2,5", "--evals", "ppl,blimp",
                        "--controls", "random", "--seeds", "2", "--seed", "7", "--bootstrap-seed", "9",
                        "--limit", "5,suite=200", "--sample-seed", "3", "--bos", "model", "--window", "64",
                        "--device", "cpu", "--batch-tokens", "1024")
    assert spec.neurons == negdb.SetSpec("m", top=0.01, layers=(0, 1, 2, 5))
    assert spec.evals == ("ppl", "blimp") and spec.benchmarks == ("wikitext2", "blimp")
    assert spec.controls == negdb.Controls(kinds=["random"], seeds=2, seed=7)  # --seed fills the control seed
    assert spec.bootstrap == negdb.Bootstrap(1000, 9)  # ... but not the bootstrap seed given its own flag
    assert spec.sampling == negdb.Sampling(limit={"*": 5, "suite": 200}, seed=3)
    assert spec.scoring == negdb.Scoring("model", 64, 1024) and spec.scoring.bos_policy is negdb.BosPolicy.MODEL
    assert kw["device"] == "cpu"
    spec, _ = captured("ablate", "--model", "m", "--set", "s", "--bos-policy", "lm-eval", "--controls", "none",
                       "--control-seed", "4", "--seed", "1")
    assert spec.controls.kinds == () and spec.controls.seed == 4 and spec.bootstrap.seed == 1
    assert spec.neurons.set_name == "s" and spec.scoring.bos_policy is negdb.BosPolicy.LM_EVAL


def test_other_commands(captured):
    spec, _ = captured("sweep", "--model", "m", "--fractions", "1,2%", "--by", "w_dist", "--modes", "neg",
                       "--seeds", "2", "--seed", "5", "--controls", "ppl-matched", "--limit", "3", "--layers", "-2--1")
    assert spec.fractions == (0.01, 0.02) and spec.seeds == (5, 6) and spec.layers == (-2, -1)
    assert spec.run_controls(6) == negdb.Controls(kinds=["ppl-matched"], seeds=1, seed=6)
    assert spec.run_sampling(6).seed == spec.run_bootstrap(6).seed == 6 and spec.sampling.limit.default == 3
    spec, _ = captured("analyze", "pairs", "--model", "m", "--layer", "1", "--index", "2", "--window", "3")
    assert spec.context == 3 and spec.bootstrap == negdb.Bootstrap()
    spec, _ = captured("analyze", "layers", "--model", "m", "--top", "5", "--variants", "cumulative", "--seed", "2")
    assert spec.neurons.top == 5 and spec.variants == ("cumulative",) and spec.bootstrap.seed == 2
    spec, _ = captured("analyze", "pos", "--model", "m", "--where", "w_dist > 1", "--seed", "3")
    assert spec.controls.seeds == 1 and spec.controls.seed == spec.bootstrap.seed == 3
    spec, kw = captured("ingest", "--model", "m", "--checkpoints", "step1,step2", "--bos", "--layers", "0-1",
                        "--activations", "layers=1", "--seed", "4", "--mem-budget", "256")
    assert spec == negdb.IngestSpec("m", checkpoints=("step1", "step2"), prepend_bos=True, layers=[0, 1],
                                    activations=[1], seed=4)
    assert kw["resources"] == negdb.Resources(mem_budget_mb=256)
    spec, _ = captured("ingest", "--model", "m", "--checkpoints", "every:10", "--no-prepend-bos")
    assert spec.checkpoints == "every:10" and spec.prepend_bos is False


def test_training_seeds_are_separate_and_recorded(captured):
    spec, kw = captured("analyze", "training", "--model", "run", "--checkpoints", "all", "--seed", "2",
                        "--eval-bos", "model", "--no-bos", "--bootstrap-seed", "8")
    assert spec.ingest.seed == spec.controls.seed == 2 and spec.bootstrap.seed == 8
    assert spec.scoring.bos_policy is negdb.BosPolicy.MODEL and spec.ingest.prepend_bos is False
    assert spec.ingest.activations == "none" and kw["resources"].device == "auto"
    cfg = spec.config("run", ["step0", "step1"])
    assert (cfg["seed"], cfg["control_seed"], cfg["bootstrap_seed"]) == (2, 2, 8)
    same, _ = captured("analyze", "training", "--model", "run", "--seed", "2")
    legacy = same.config("run", ["step0", "step1"])
    # the three seeds agree: the key has the shape of analyses stored before the seeds were separated
    assert legacy["seed"] == 2 and "control_seed" not in legacy and "bootstrap_seed" not in legacy
    assert legacy["top"] == "1%" and legacy["layers"] == "all" and legacy["evals"] == "ppl,blimp,tse"
    assert legacy["controls"] == "random" and legacy["limit"] is None and legacy["bos"] is False
    none, _ = captured("analyze", "training", "--model", "run", "--evals", "none", "--bootstrap-seed", "4")
    assert none.config("run", ["a", "b"])["evals"] == "none" and "bootstrap_seed" not in none.config("run", [])


@pytest.mark.parametrize("args", [
    ["ablate", "--model", "m", "--top", "abc"],
    ["ablate", "--model", "m", "--top", "1%", "--where", "x > 1"],
    ["ablate", "--model", "m", "--top", "1%", "--layers", "0--1"],
    ["ablate", "--model", "m", "--top", "1%", "--limit", "5,nope=3"],
    ["ablate", "--model", "m", "--top", "1%", "--controls", "random,x"],
    ["ablate", "--model", "m", "--top", "1%", "--seed", "-1"],
    ["sweep", "--model", "m", "--seeds", "0"],
    ["analyze", "layers", "--model", "m", "--top", "1%", "--variants", ""],
    ["ingest", "--model", "m", "--activations", "some"],
])
def test_bad_flags_are_one_line_errors_before_anything_runs(captured, args):
    res = CliRunner().invoke(main, ["--store", "nowhere", *args])
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ")


def _demo_commands() -> list[list[str]]:
    """The negdb commands of `make demo` (Makefile), as argument lists after ``--store``."""
    import shlex
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "Makefile").read_text().replace("\\\n", " ")
    demo = text[text.index("\ndemo:"):text.index("\ntest:")]
    out = []
    for line in demo.splitlines():
        if "$(BIN)/negdb" in line:
            args = shlex.split(line.split("$(BIN)/negdb", 1)[1])
            out.append(args[2:] if args[0] == "--store" else args)
    return out


def test_make_demo_commands_still_parse(captured):
    """`make demo` is unchanged for the user: each of its ingest/ablate/analyze lines builds its typed spec."""
    demo = [c for c in _demo_commands() if c[0] in ("ingest", "ablate", "analyze")]
    assert [c[0] if c[0] != "analyze" else c[1] for c in demo] == ["ingest", "ablate", "pos", "layers", "pairs"]
    specs = [captured(*c)[0] for c in demo]
    assert specs[0].tokens == 16384 and specs[0].model == "smollm2-135m"
    assert specs[1].neurons.top == 0.01 and specs[1].scoring.window == 512 and specs[1].controls.probe_tokens == 8192
    assert specs[2].ppl_tokens == 16384 and specs[2].controls.seeds == 1
    assert specs[3].groups == 4 and specs[3].sampling.limit.default == 5
    assert (specs[4].layer, specs[4].index, specs[4].k) == (10, 222, 10)


@pytest.mark.parametrize(("seconds", "text"), [(0, "0 s"), (119.4, "119 s"), (120, "2 min"), (7199, "120 min"),
                                               (7200, "2.0 h"), (4_654 * 3600, "4,654.0 h")])
def test_duration_text_is_one_format_for_plans_and_estimates(seconds, text):
    from negdb.values import duration_text

    assert duration_text(seconds) == text
