"""lm-evaluation-harness models under a negdb intervention: ``NegdbLM``, registered with lm-eval as ``negdb``.

``NegdbLM`` is lm-eval's ``HFLM`` with a negdb :class:`~negdb.ablate.interventions.Intervention` hooked into the
model around every forward pass (``_model_call``: log-likelihoods) and every generation (``_model_generate``),
the pattern of lm-eval's own ``hf_steered.py``. So any lm-eval task (multiple choice, log-likelihood, perplexity,
generation) runs on the ablated model. Two ways to build one:

- from Python, with a loaded model and an intervention::

      from negdb.ablate.lmeval_model import NegdbLM
      lm = NegdbLM(lm=loaded, intervention=make_intervention("neg", {3: [17, 42]}), batch_size=8)
      lm_eval.simple_evaluate(model=lm, tasks=["blimp_anaphor_gender_agreement"])

- by name, as lm-eval builds models from ``model_args`` (after ``import negdb.ablate.lmeval_model``)::

      lm_eval.simple_evaluate(model="negdb", model_args="store=negdb-store,model=smollm2-135m,set=wass1,mode=neg",
                              tasks=[...])

  ``model_args`` keys: ``store``, ``model``, ``checkpoint``, one of ``set`` / ``where`` / ``top`` (with ``by``,
  ``top`` a fraction such as ``0.01`` or ``1%``, or a count; none: the unablated model), ``mode`` (default
  ``neg``), and any ``HFLM`` argument (``batch_size``, ``max_length``, ...).

``negdb lm-eval`` (:mod:`negdb.ablate.lmeval`) uses this class and stores the results in the catalog.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from lm_eval.api.registry import register_model
from lm_eval.models.huggingface import HFLM

from negdb.ablate.interventions import Intervention, apply
from negdb.errors import BadArgument

_NEGDB_KEYS = ("store", "model", "checkpoint", "set", "where", "top", "by", "mode", "device_negdb")


@register_model("negdb")
class NegdbLM(HFLM):
    """lm-eval's ``HFLM`` with a negdb intervention applied to every forward pass and generation.

    Attributes:
        negdb_model: the :class:`negdb.models.loading.LoadedModel` evaluated.
        intervention: the intervention hooked in (``None``: the unablated model).
        set_id: the neuron set's id when built from a store (``None`` otherwise).
    """

    def __init__(self, pretrained: Any = None, *, lm: Any = None, intervention: Intervention | None = None,
                 **kwargs: Any) -> None:
        negdb_args = {k: kwargs.pop(k) for k in _NEGDB_KEYS if k in kwargs}
        self.set_id: str | None = None
        if lm is None:
            if pretrained is not None:
                raise BadArgument("the negdb model takes store=, model= and set=/where=/top= (not pretrained=): "
                                  "it loads the model negdb ingested")
            lm, intervention, self.set_id = _from_store(negdb_args, kwargs.get("device"))
        elif negdb_args:
            raise BadArgument(f"pass either lm= or store arguments ({', '.join(negdb_args)}), not both")
        if intervention is not None and not isinstance(intervention, Intervention):
            raise BadArgument(f"intervention must be a negdb Intervention, got {type(intervention).__name__}")
        if intervention is not None:
            intervention.check(lm.n_layers, lm.d_mlp)
        self.negdb_model = lm
        self.intervention = intervention
        kwargs.pop("device", None)  # the loaded model's device wins
        kwargs.setdefault("backend", "causal")
        super().__init__(pretrained=lm.model, tokenizer=lm.tokenizer, **kwargs)

    @contextlib.contextmanager
    def _hooked(self) -> Iterator[None]:
        if self.intervention is None:
            yield
            return
        with apply(self.negdb_model, self.intervention):
            yield

    def _model_call(self, *args: Any, **kwargs: Any) -> Any:
        with self._hooked():
            return super()._model_call(*args, **kwargs)

    def _model_generate(self, *args: Any, **kwargs: Any) -> Any:
        with self._hooked():
            return super()._model_generate(*args, **kwargs)


def _from_store(args: dict[str, Any], device: str | None) -> tuple[Any, Intervention | None, str | None]:
    """Load the model and build the intervention that ``model_args`` name (see the module docstring)."""
    from negdb.ablate.lmeval_target import Selection, resolve_target
    from negdb.query.setspec import SetSpec

    model = _str(args.get("model"))
    if model is None:
        raise BadArgument("the negdb model needs model= (and store=, set=/where=/top=, mode=)")
    picked = {k: args.get(k) for k in ("set", "where", "top") if _str(args.get(k)) is not None}
    neurons = None
    if picked:
        top = args.get("top")
        if isinstance(top, str):  # lm-eval passes "1%" as text
            top = float(top.rstrip("%")) / 100 if top.endswith("%") else float(top) if "." in top else int(top)
        neurons = SetSpec(model=model, checkpoint=_str(args.get("checkpoint")), where=_str(args.get("where")),
                          set_name=_str(args.get("set")), top=top, by=str(args.get("by") or "w_dist"))
    sel = Selection(model=model, checkpoint=_str(args.get("checkpoint")), neurons=neurons,
                    mode=str(args.get("mode") or "neg"))
    target, loader = resolve_target(args.get("store"), sel, device=str(args.get("device_negdb") or device or "auto"))
    return loader(), target.intervention, target.set_id


def _str(v: Any) -> str | None:
    return None if v is None or v == "" else str(v)
