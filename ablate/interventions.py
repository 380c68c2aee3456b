"""Sign-specific interventions on the MLP pre-activations of a neuron set (docs/DEFINITIONS.md, "Interventions").

An :class:`Intervention` names a mode and, per layer, the neurons it acts on. :func:`apply` registers forward
hooks found through the family table (:mod:`negdb.models.families`) for exactly the layers of the set and removes
them when the ``with`` block ends, also on an exception.

Modes, for the set's neurons only (every other neuron and every other layer is left untouched):

- ``neg``: x' = max(x, 0); ``pos``: x' = min(x, 0); ``both``: x' = 0; ``mean``: x' = the neuron's stored mean.
  These replace the *output* of the pre-activation module (``Family.preact``; for gated MLPs the gate projection,
  so the up projection is untouched), before the nonlinearity.
- ``posrelu``: f(x) = x for x > 0, act(x) otherwise; ``signflip``: f(x) = |act(x)| where act(x) < 0, act(x)
  otherwise. These replace the *output* of the activation module (``Family.act``), computed from the input it
  receives.

The hooks never modify a tensor in place (a capture hook of :mod:`negdb.models.capture` may hold the module's
output): they return a new tensor. They work on any leading shape, ``(batch, seq, d_mlp)`` or OPT's
``(batch*seq, d_mlp)``, since they index only the last dimension. Index tensors are cached per device.
"""

from __future__ import annotations

import contextlib
import operator
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
import torch
from torch import nn

from negdb.errors import NegdbError
from negdb.models.families import act_module, preact_module
from negdb.models.loading import LoadedModel

PREACT_MODES: tuple[str, ...] = ("neg", "pos", "both", "mean")
"""Modes that replace the pre-activation x before the nonlinearity (hook on ``Family.preact``)."""
ACT_MODES: tuple[str, ...] = ("posrelu", "signflip")
"""Modes that replace the activation's output (hook on ``Family.act``)."""
MODES: tuple[str, ...] = PREACT_MODES + ACT_MODES
"""Every intervention mode."""


def _as_index(value: Any, what: str) -> int:
    if isinstance(value, (bool, np.bool_)):
        raise NegdbError(f"{what} must be an integer, got {value!r}")
    try:
        i = operator.index(value)
    except TypeError:
        raise NegdbError(f"{what} must be an integer, got {value!r}") from None
    if i < 0:
        raise NegdbError(f"{what} must be non-negative, got {i}")
    return int(i)


@dataclass(frozen=True, eq=False)
class Intervention:
    """A mode applied to a set of MLP neurons.

    Attributes:
        mode: one of :data:`MODES`.
        neurons: layer -> neuron indices (normalised on construction to sorted, de-duplicated tuples; layers with
            no neurons are dropped, so an empty mapping means "change nothing").
        means: for ``mode="mean"``: layer -> the layer's per-neuron means, a 1-D array of length ``d_mlp``
            (indexed by neuron, e.g. the stored ``mean`` column of the whole layer); required for every layer of
            the set. Ignored (dropped) for other modes.

    Indices are checked against the model (``d_mlp``, ``n_layers``) by :func:`apply` and :meth:`check`.
    """

    mode: str
    neurons: Mapping[int, Sequence[int]]
    means: Mapping[int, np.ndarray] | None = None
    _cache: dict[Any, torch.Tensor] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise NegdbError(f"unknown intervention mode '{self.mode}': use one of {', '.join(MODES)}")
        if not isinstance(self.neurons, Mapping):
            raise NegdbError("neurons must be a mapping layer -> neuron indices")
        norm: dict[int, tuple[int, ...]] = {}
        for layer, idx in self.neurons.items():
            li = _as_index(layer, "layer")
            if isinstance(idx, (str, bytes)) or not isinstance(idx, Iterable):
                raise NegdbError(f"neurons of layer {li} must be a sequence of indices")
            cols = sorted({_as_index(j, f"neuron index of layer {li}") for j in np.asarray(idx).reshape(-1).tolist()})
            if li in norm:
                raise NegdbError(f"layer {li} is given twice")
            if cols:
                norm[li] = tuple(cols)
        object.__setattr__(self, "neurons", MappingProxyType(dict(sorted(norm.items()))))
        means: dict[int, np.ndarray] | None = None
        if self.mode == "mean":
            if self.means is None:
                raise NegdbError("mode 'mean' needs means: pass means={layer: per-neuron mean array}")
            given = {_as_index(k, "layer of means"): v for k, v in self.means.items()}
            means = {}
            for li, cols in norm.items():
                if li not in given:
                    raise NegdbError(f"mode 'mean' has no means for layer {li}")
                arr = np.array(given[li], dtype=np.float64, copy=True)
                if arr.ndim != 1:
                    raise NegdbError(f"means of layer {li} must be a 1-D array over the layer's neurons")
                if cols[-1] >= arr.shape[0]:
                    raise NegdbError(f"means of layer {li} have {arr.shape[0]} entries, neuron {cols[-1]} has none")
                if not np.isfinite(arr[list(cols)]).all():
                    raise NegdbError(f"means of layer {li} are not finite for some neurons of the set")
                arr.setflags(write=False)
                means[li] = arr
        object.__setattr__(self, "means", None if means is None else MappingProxyType(means))

    @property
    def layers(self) -> tuple[int, ...]:
        """The layers that get a hook (those with at least one neuron), ascending."""
        return tuple(self.neurons)

    @property
    def size(self) -> int:
        """Number of neurons in the set over all layers."""
        return sum(len(c) for c in self.neurons.values())

    def check(self, n_layers: int, d_mlp: int) -> None:
        """``NegdbError`` unless every layer is below ``n_layers``, every index below ``d_mlp`` and means fit."""
        for li, cols in self.neurons.items():
            if li >= n_layers:
                raise NegdbError(f"layer {li} out of range: the model has {n_layers} layers (0..{n_layers - 1})")
            if cols[-1] >= d_mlp:
                raise NegdbError(f"neuron {cols[-1]} of layer {li} out of range: layers have {d_mlp} neurons "
                                 f"(0..{d_mlp - 1})")
            if self.means is not None and self.means[li].shape[0] != d_mlp:
                raise NegdbError(f"means of layer {li} have {self.means[li].shape[0]} entries, the model has "
                                 f"{d_mlp} neurons per layer")

    def _index(self, layer: int, device: torch.device) -> torch.Tensor:
        key = ("idx", layer, device)
        t = self._cache.get(key)
        if t is None:
            with torch.inference_mode(False):
                t = torch.as_tensor(self.neurons[layer], dtype=torch.long).to(device)
            self._cache[key] = t
        return t

    def _mean(self, layer: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        key = ("mean", layer, device, dtype)
        t = self._cache.get(key)
        if t is None:
            assert self.means is not None
            vals = self.means[layer][list(self.neurons[layer])]
            with torch.inference_mode(False):
                t = torch.as_tensor(vals).to(device=device, dtype=dtype)
            self._cache[key] = t
        return t


def restrict(intervention: Intervention, layers: Iterable[int]) -> Intervention:
    """The same intervention on only the set's neurons in ``layers`` (others dropped; unknown layers ignored)."""
    keep = {_as_index(i, "layer") for i in layers}
    neurons = {li: cols for li, cols in intervention.neurons.items() if li in keep}
    means = None
    if intervention.means is not None:
        means = {li: m for li, m in intervention.means.items() if li in neurons}
    return Intervention(intervention.mode, neurons, means)


def layer_groups(n_layers: int, n_groups: int) -> list[list[int]]:
    """Split layers ``0..n_layers-1`` into ``n_groups`` contiguous groups, sizes as equal as possible.

    Larger groups come first: 30 layers into 8 groups have sizes 4, 4, 4, 4, 4, 4, 3, 3.
    """
    n_layers, n_groups = int(n_layers), int(n_groups)
    if n_layers < 1:
        raise NegdbError(f"n_layers must be at least 1, got {n_layers}")
    if not 1 <= n_groups <= n_layers:
        raise NegdbError(f"n_groups must lie in 1..{n_layers} (the number of layers), got {n_groups}")
    base, extra = divmod(n_layers, n_groups)
    groups: list[list[int]] = []
    start = 0
    for g in range(n_groups):
        size = base + (1 if g < extra else 0)
        groups.append(list(range(start, start + size)))
        start += size
    return groups


def cumulative(groups: Sequence[Sequence[int]]) -> list[list[int]]:
    """Running unions of ``groups``: ``[g0, g0 + g1, g0 + g1 + g2, ...]`` (order kept, no duplicates)."""
    out: list[list[int]] = []
    acc: list[int] = []
    seen: set[int] = set()
    for group in groups:
        for i in group:
            if i not in seen:
                seen.add(i)
                acc.append(int(i))
        out.append(list(acc))
    return out


def _preact_hook(iv: Intervention, layer: int) -> Any:
    mode = iv.mode

    def hook(_mod: nn.Module, _args: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor:
        idx = iv._index(layer, output.device)
        if mode == "both":
            src = output.new_zeros(()).expand(*output.shape[:-1], idx.numel())
        elif mode == "mean":
            src = iv._mean(layer, output.device, output.dtype).expand(*output.shape[:-1], idx.numel())
        else:
            sel = output.index_select(-1, idx)
            src = sel.clamp_min(0) if mode == "neg" else sel.clamp_max(0)
        return output.index_copy(output.dim() - 1, idx, src)

    return hook


def _act_hook(iv: Intervention, layer: int) -> Any:
    mode = iv.mode

    def hook(_mod: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor:
        idx = iv._index(layer, output.device)
        a = output.index_select(-1, idx)
        if mode == "posrelu":
            x = args[0].index_select(-1, idx).to(a.dtype)
            src = torch.where(x > 0, x, a)
        else:  # signflip
            src = a.abs()
        return output.index_copy(output.dim() - 1, idx, src)

    return hook


@contextlib.contextmanager
def apply(lm: LoadedModel, intervention: Intervention) -> Iterator[Intervention]:
    """Run the ``with`` block with ``intervention`` hooked into ``lm.model``.

    Only the set's layers get a hook; an empty set registers none. The hooks are removed on exit, also when the
    block raises. Several interventions may be nested (their hooks compose in the order entered).

    Raises:
        NegdbError: a layer or neuron index out of range for the model, means of the wrong length, or an
            activation module that cannot be hooked (shared between layers, in-place, or not a module).
    """
    if not isinstance(intervention, Intervention):
        raise NegdbError(f"expected an Intervention, got {type(intervention).__name__}")
    intervention.check(lm.n_layers, lm.d_mlp)
    on_act = intervention.mode in ACT_MODES
    targets: list[tuple[int, nn.Module]] = []
    if intervention.layers:
        get = act_module if on_act else preact_module
        path = lm.family.act if on_act else lm.family.preact
        modules = {i: get(lm.model, lm.family, i) for i in range(lm.n_layers)}
        for li in intervention.layers:
            mod = modules[li]
            if not isinstance(mod, nn.Module):
                raise NegdbError(f"layer {li}'s '{path}' is not a module, so it cannot be hooked")
            if sum(m is mod for m in modules.values()) > 1:
                raise NegdbError(f"layer {li}'s '{path}' is shared with another layer: a hook on it would "
                                 "change every layer")
            if on_act and getattr(mod, "inplace", False):
                raise NegdbError(f"layer {li}'s '{path}' works in place, so its input cannot be read after it ran")
            targets.append((li, mod))
    handles = []
    try:
        for li, mod in targets:
            hook = _act_hook(intervention, li) if on_act else _preact_hook(intervention, li)
            handles.append(mod.register_forward_hook(hook))
        yield intervention
    finally:
        for h in handles:
            h.remove()
