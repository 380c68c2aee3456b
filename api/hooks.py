"""``negdb.intervene``: a registered intervention on a live model, as a ``with`` block (module ``negdb.hooks``).

::

    import negdb
    with negdb.intervene(hf_model, {3: [12, 40], 7: [824]}, mode="neg"):
        logits = hf_model(input_ids).logits        # negative pre-activations of those neurons zeroed
    # the hooks are gone: hf_model computes exactly what it computed before

``model`` is any Hugging Face causal LM of a family negdb knows (``negdb models``; found from
``model.config.model_type``) or a :class:`negdb.models.loading.LoadedModel`; ``neurons`` a ``Selection`` or
``NeuronSet`` (:mod:`negdb.query.sets`, e.g. ``db.select(...)``), a plain ``{layer: [neuron, ...]}`` mapping, or a
ready :class:`negdb.ablate.interventions.Intervention` (then ``mode`` is not used). ``mode`` is any registered
intervention (``neg``, ``pos``, ``both``, ``mean`` with ``means=``, ``posrelu``, ``signflip``, and whatever
:func:`negdb.ablate.interventions.register_intervention` added).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

from negdb.errors import BadArgument


def neuron_map(neurons: Any) -> dict[int, list[int]]:
    """``{layer: [neurons]}`` of a ``Selection``/``NeuronSet`` (its ``members`` frame) or of a mapping."""
    members = getattr(neurons, "members", None)
    if members is not None and hasattr(members, "select"):
        out: dict[int, list[int]] = {}
        for layer, neuron in members.select("layer", "neuron").iter_rows():
            out.setdefault(int(layer), []).append(int(neuron))
        return out
    if isinstance(neurons, Mapping):
        return {k: list(v) for k, v in neurons.items()}
    raise BadArgument(f"neurons must be a Selection, a NeuronSet or a mapping layer -> neuron indices, got "
                      f"{type(neurons).__name__}")


def as_loaded(model: Any) -> Any:
    """A :class:`~negdb.models.loading.LoadedModel` of ``model`` (a live HF causal LM, or one already)."""
    from torch import nn

    from negdb.models.loading import LoadedModel, from_model

    if isinstance(model, LoadedModel):
        return model
    if isinstance(model, nn.Module) and hasattr(model, "config"):
        return from_model(model)
    raise BadArgument(f"model must be a Hugging Face causal LM or a negdb LoadedModel, got {type(model).__name__}")


@contextlib.contextmanager
def intervene(model: Any, neurons: Any, mode: str = "neg", *,
              means: Mapping[int, Any] | None = None) -> Iterator[Any]:
    """Run the ``with`` block with intervention ``mode`` on ``neurons`` hooked into ``model``; yields the
    :class:`~negdb.ablate.interventions.Intervention`. Hooks are removed on exit, also when the block raises."""
    from negdb.ablate.interventions import Intervention, apply, make_intervention

    lm = as_loaded(model)
    iv = neurons if isinstance(neurons, Intervention) else make_intervention(mode, neuron_map(neurons), means)
    with apply(lm, iv) as applied:
        yield applied


def load(model: str, checkpoint: str | None = None, *, device: str = "auto") -> Any:
    """A model as negdb loads it (a :class:`~negdb.models.loading.LoadedModel`: ``.model`` is the Hugging Face
    causal LM, ``.tokenizer`` its tokenizer), float32: an alias, hub id (from the local cache), folder, or GGUF
    file; ``checkpoint``: a revision (default: the final one)."""
    import torch

    from negdb.models.checkpoints import select
    from negdb.models.loading import load as load_model
    from negdb.models.registry import resolve

    source = resolve(model)
    found = select(source, checkpoint or "final")
    return load_model(source, found[0], device=device, dtype=torch.float32)
