"""Training checkpoints of a model source and the ``--checkpoints`` spec that selects among them.

Spec grammar (one of):

- ``all``: every known checkpoint, in training order;
- ``final``: the fully trained model (Pythia ``step143000``, the largest ``step<N>/`` folder, a hub id's ``main``);
- ``step1000,step2000``: explicit revisions (any revision name for a hub id whose checkpoints are unknown);
- ``every:K``: every K-th known checkpoint (positions 0, K, 2K, ...) *plus the final one*, so that a thinned
  sweep always ends at the trained model;
- ``first:N``: the first N known checkpoints.

A model folder or GGUF file has the single checkpoint ``final``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from negdb.errors import BadArgument, UnknownModel
from negdb.models.registry import ModelSource

FINAL = "final"
_STEP = re.compile(r"^step(\d+)$")
_REVISION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]*$")
_SPEC_HELP = "all, final, a comma-separated list like step1000,step2000, every:K or first:N"


@dataclass(frozen=True)
class Checkpoint:
    """One loadable checkpoint.

    Attributes:
        revision: hub revision (``"step1000"``, ``"main"``), ``"step<N>"`` folder name, or ``"final"``.
        step: training step where known.
        tokens_seen: training tokens seen (``step * tokens_per_step``) where known.
        location: what :func:`negdb.models.loading.load` reads: hub repo id, model folder or GGUF file.
    """

    revision: str
    step: int | None
    tokens_seen: int | None
    location: str


def step_of(revision: str) -> int | None:
    """The N of ``step<N>``, else ``None``."""
    m = _STEP.match(revision)
    return int(m.group(1)) if m else None


def _make(source: ModelSource, revision: str) -> Checkpoint:
    step = step_of(revision)
    tokens = step * source.tokens_per_step if step is not None and source.tokens_per_step else None
    location = source.location
    if source.kind == "steps":
        location = str(Path(source.location) / revision)
    return Checkpoint(revision=revision, step=step, tokens_seen=tokens, location=location)


def available(source: ModelSource) -> list[str] | None:
    """The source's revisions in training order, or ``None`` when unknown (an arbitrary hub id)."""
    if source.kind in ("local", "gguf"):
        return [FINAL]
    if source.checkpoints is not None:
        return list(source.checkpoints)
    return None


def final_revision(source: ModelSource) -> str:
    """The revision of the fully trained model."""
    if source.kind in ("local", "gguf"):
        return FINAL
    if source.final is not None:
        return source.final
    revs = available(source)
    if revs:
        return revs[-1]
    return "main"


def _positive(spec: str, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise BadArgument(f"bad checkpoint spec '{spec}': the number after ':' must be a positive integer")
    return value


def _show(revs: list[str]) -> str:
    return ", ".join(revs) if len(revs) <= 6 else f"{', '.join(revs[:3])}, ..., {', '.join(revs[-2:])}"


def select(source: ModelSource, spec: str = FINAL) -> list[Checkpoint]:
    """The checkpoints of ``source`` named by ``spec`` (see the module docstring), in training order."""
    text = (spec or "").strip()
    if not text:
        raise BadArgument(f"empty checkpoint spec: use {_SPEC_HELP}")
    revs = available(source)
    lowered = text.lower()

    if lowered == FINAL:
        return [_make(source, final_revision(source))]

    if lowered == "all" or lowered.startswith(("every:", "first:")):
        if revs is None:
            raise BadArgument(
                f"the checkpoints of {source.model_id} are unknown: use final or explicit revisions like step1000,main"
            )
        if lowered == "all":
            chosen = revs
        elif lowered.startswith("every:"):
            k = _positive(text, text.split(":", 1)[1])
            chosen = revs[::k]
            if chosen[-1] != revs[-1]:
                chosen = [*chosen, revs[-1]]
        else:
            chosen = revs[: _positive(text, text.split(":", 1)[1])]
        return [_make(source, r) for r in chosen]

    if ":" in text:
        raise BadArgument(f"bad checkpoint spec '{text}': use {_SPEC_HELP}")
    names = [p.strip() for p in text.split(",")]
    if any(not n for n in names):
        raise BadArgument(f"bad checkpoint spec '{text}': empty entry in the list; use {_SPEC_HELP}")
    if revs is None:
        bad = [n for n in names if not _REVISION.match(n)]
        if bad:
            raise BadArgument(f"bad revision '{bad[0]}' in checkpoint spec '{text}'")
        return [_make(source, n) for n in dict.fromkeys(names)]

    final = final_revision(source)
    wanted = []
    for n in names:
        rev = final if n.lower() in (FINAL, "main") else n
        if rev not in revs:
            raise UnknownModel(f"{source.model_id} has no checkpoint '{n}': it has {_show(revs)} ({len(revs)} in all)")
        wanted.append(rev)
    order = {r: i for i, r in enumerate(revs)}
    return [_make(source, r) for r in sorted(set(wanted), key=order.__getitem__)]
