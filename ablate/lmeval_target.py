"""What an lm-eval run evaluates: a checkpoint, and the neurons and intervention (``negdb lm-eval``'s selection).

Shared by :mod:`negdb.ablate.lmeval` (the command) and :mod:`negdb.ablate.lmeval_model` (the adapter lm-eval
builds by name from ``model_args``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from negdb.ablate.evaluate import Target
from negdb.errors import BadArgument, NotFound
from negdb.query.setspec import SetSpec
from negdb.store.catalog import Catalog
from negdb.store.layout import StoreLayout


@dataclass(frozen=True)
class Selection:
    """What to evaluate: a checkpoint of ``model`` and, with ``neurons``, the intervention ``mode`` on them.

    ``neurons`` is a :class:`~negdb.query.setspec.SetSpec` (a saved set, a ``where`` or a ``top`` pick, as for
    ``negdb ablate``; a picked selection is saved as ``save``, default ``auto-<hash>``), or ``None``: the unablated
    checkpoint only.
    """

    model: str
    checkpoint: str | None = None
    neurons: SetSpec | None = None
    mode: str = "neg"
    save: str | None = None

    @property
    def baseline_only(self) -> bool:
        return self.neurons is None

    def validate(self) -> None:
        from negdb.ablate.interventions import get_intervention

        get_intervention(self.mode)
        if self.neurons is not None and self.neurons.model != self.model:
            raise BadArgument(f"the neurons are picked on {self.neurons.model}, not {self.model}")


def resolve_target(store: str | Path | None, sel: Selection, *, device: str = "auto",
                   log: Callable[[str], None] | None = None) -> tuple[Target, Any]:
    """``(Target, loader)`` for ``sel``: the checkpoint under ``sel.mode`` on the picked set (saved), or the
    unablated checkpoint; ``loader()`` loads the model once."""
    from negdb.ablate.conditions import Loader, checkpoint_row, main_set, resolve_revision, stderr
    from negdb.ablate.controls import intervention_for
    from negdb.query import sets as setlib

    sel.validate()
    layout = StoreLayout.at(store)
    if not layout.is_store():
        raise NotFound(f"{layout.location} is not a negdb store: run `negdb ingest --model {sel.model}` first")
    with Catalog(layout.location) as cat:
        if sel.neurons is None:
            keys = setlib.resolve_keys(cat, sel.model, sel.checkpoint)
            ck = checkpoint_row(cat, keys.model_id, keys.revision)
            target = Target(keys.model_id, keys.revision, ck["commit"], None, None)
        else:
            ns = main_set(cat, sel.neurons, sel.save)
            revision = resolve_revision(cat, ns, sel.checkpoint)
            ck = checkpoint_row(cat, ns.keys.model_id, revision)
            target = Target(ns.keys.model_id, revision, ck["commit"], intervention_for(cat, ns, sel.mode), ns.set_id)
    return target, Loader(target.model_id, target.revision, device, log or stderr)
