"""Checkpoint lists and the checkpoint spec."""

from __future__ import annotations

from pathlib import Path

import pytest

from negdb.errors import BadArgument, UnknownModel
from negdb.models.checkpoints import select
from negdb.models.registry import ModelSource, resolve

TPS = 2_097_152


@pytest.fixture(scope="module")
def pythia():
    return resolve("pythia-70m")


def revs(cks):
    return [c.revision for c in cks]


def test_pythia_all(pythia):
    cks = select(pythia, "all")
    assert len(cks) == 154
    assert revs(cks)[:12] == ["step0", *(f"step{2**i}" for i in range(10)), "step1000"]
    assert revs(cks)[-1] == "step143000"
    assert all(c.tokens_seen == c.step * TPS for c in cks)
    assert cks[0].tokens_seen == 0 and cks[-1].tokens_seen == 299_892_736_000
    assert {c.location for c in cks} == {"EleutherAI/pythia-70m"}
    assert [c.step for c in cks] == sorted(c.step for c in cks)


def test_pythia_final_list_every_first(pythia):
    assert revs(select(pythia, "final")) == ["step143000"]
    assert revs(select(pythia, " FINAL ")) == ["step143000"]
    assert revs(select(pythia, "step2000,step1000, step2000")) == ["step1000", "step2000"]
    assert revs(select(pythia, "main")) == ["step143000"]
    assert revs(select(pythia, "first:3")) == ["step0", "step1", "step2"]
    assert len(select(pythia, "first:1000")) == 154
    every = revs(select(pythia, "every:50"))
    assert every == ["step0", "step40000", "step90000", "step140000", "step143000"]  # final always included
    assert revs(select(pythia, "every:1")) == revs(select(pythia, "all"))
    assert revs(select(pythia, "every:153")) == ["step0", "step143000"]


@pytest.mark.parametrize(
    "spec", ["", "  ", "every:0", "every:x", "first:-1", "first:", "bogus:3", "step999", "step1000,,step2000", "latest"]
)
def test_bad_specs(pythia, spec):
    # a malformed spec is a bad argument; a well-formed revision the model does not have is an unknown model
    with pytest.raises(UnknownModel if spec in ("step999", "latest") else BadArgument) as err:
        select(pythia, spec)
    assert "\n" not in str(err.value)


def test_unknown_revision_message(pythia):
    with pytest.raises(UnknownModel, match=r"has no checkpoint 'step999': it has step0, step1, step2, \.\.\."):
        select(pythia, "step999")


def test_arbitrary_hub():
    src = resolve("someorg/model")
    (final,) = select(src, "final")
    assert (final.revision, final.step, final.tokens_seen, final.location) == ("main", None, None, "someorg/model")
    assert revs(select(src, "v1.0,step10,main")) == ["v1.0", "step10", "main"]
    assert select(src, "step10")[0].step == 10
    for spec in ("all", "every:2", "first:1"):
        with pytest.raises(BadArgument, match="unknown: use final"):
            select(src, spec)
    with pytest.raises(BadArgument, match="bad revision"):
        select(src, "has space")


def test_steps_source(tmp_path):
    src = ModelSource(model_id=str(tmp_path), kind="steps", location=str(tmp_path),
                      checkpoints=("step0", "step10", "step1000"))
    assert revs(select(src, "all")) == ["step0", "step10", "step1000"]
    (final,) = select(src, "final")
    assert final.revision == "step1000" and final.step == 1000 and final.tokens_seen is None
    assert Path(final.location) == tmp_path / "step1000"
    with pytest.raises(UnknownModel, match="step0, step10, step1000"):
        select(src, "step5")


@pytest.mark.parametrize("kind", ["local", "gguf"])
def test_single_checkpoint_sources(kind):
    src = ModelSource(model_id="/m", kind=kind, location="/m")
    for spec in ("final", "all", "first:3", "every:2", "main"):
        (ck,) = select(src, spec)
        assert (ck.revision, ck.step, ck.tokens_seen, ck.location) == ("final", None, None, "/m")
    with pytest.raises(UnknownModel, match="has no checkpoint 'step1000'"):
        select(src, "step1000")
