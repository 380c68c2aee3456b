"""Sign-specific interventions on the MLP pre-activations of a neuron set (docs/DEFINITIONS.md, "Interventions").

An intervention is a class registered by name (its *mode*) with :func:`register_intervention`, in the spirit
of pyvene's intervention classes and lm-eval's ``@register_model``; an instance holds, per layer, the neurons it
acts on. :func:`make_intervention` builds one by name, :func:`apply` registers forward hooks found through the
family table (:mod:`negdb.models.families`) for exactly the layers of the set and removes them when the ``with``
block ends, also on an exception. A new mode is a subclass with a ``site`` and a :meth:`Intervention.values`
method; nothing else changes (results are keyed by the mode's name).

Built-in modes, for the set's neurons only (every other neuron and every other layer is left untouched):

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
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from types import MappingProxyType
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch
from torch import nn

from negdb.errors import BadArgument, ModelLoadError
from negdb.models.families import act_module, preact_module
from negdb.models.loading import LoadedModel

SITES = ("preact", "act")
"""Where an intervention hooks: the output of ``Family.preact`` or of ``Family.act``."""


def _as_index(value: Any, what: str) -> int:
    if isinstance(value, (bool, np.bool_)):
        raise BadArgument(f"{what} must be an integer, got {value!r}")
    try:
        i = operator.index(value)
    except TypeError:
        raise BadArgument(f"{what} must be an integer, got {value!r}") from None
    if i < 0:
        raise BadArgument(f"{what} must be non-negative, got {i}")
    return int(i)


def _neurons(neurons: Mapping[int, Sequence[int]]) -> Mapping[int, tuple[int, ...]]:
    """``layer -> indices`` normalised: sorted, de-duplicated tuples, empty layers dropped, layers ascending."""
    if not isinstance(neurons, Mapping):
        raise BadArgument("neurons must be a mapping layer -> neuron indices")
    norm: dict[int, tuple[int, ...]] = {}
    for layer, idx in neurons.items():
        li = _as_index(layer, "layer")
        if isinstance(idx, (str, bytes)) or not isinstance(idx, Iterable):
            raise BadArgument(f"neurons of layer {li} must be a sequence of indices")
        cols = sorted({_as_index(j, f"neuron index of layer {li}") for j in np.asarray(idx).reshape(-1).tolist()})
        if li in norm:
            raise BadArgument(f"layer {li} is given twice")
        if cols:
            norm[li] = tuple(cols)
    return MappingProxyType(dict(sorted(norm.items())))


class Intervention:
    """A replacement of some MLP neurons' values at one hook site, registered by name (its ``mode``).

    Subclasses set ``site`` (``"preact"``: the output of ``Family.preact``, before the nonlinearity; ``"act"``:
    the output of ``Family.act``) and implement :meth:`values`; :func:`register_intervention` files them under
    a name, :func:`make_intervention` builds one by name and :func:`apply` hooks it into a model.

    Attributes:
        neurons: layer -> neuron indices (normalised on construction to sorted, de-duplicated tuples; layers with
            no neurons are dropped, so an empty mapping means "change nothing").
        means: per-layer values of the ``mean`` mode (``None`` for every other mode).
    """

    mode: ClassVar[str] = ""
    site: ClassVar[str] = "preact"
    reads_input: ClassVar[bool] = False
    """Whether :meth:`values` needs the hooked module's input (the pre-activation, at the ``act`` site)."""
    means: Mapping[int, np.ndarray] | None = None

    def __init__(self, neurons: Mapping[int, Sequence[int]]) -> None:
        if INTERVENTIONS.get(self.mode) is not type(self):
            raise BadArgument(f"{type(self).__name__} is not registered: decorate it with @register_intervention")
        self.neurons = _neurons(neurons)
        self._cache: dict[Any, torch.Tensor] = {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(mode={self.mode!r}, layers={list(self.layers)}, size={self.size})"

    @property
    def layers(self) -> tuple[int, ...]:
        """The layers that get a hook (those with at least one neuron), ascending."""
        return tuple(self.neurons)

    @property
    def size(self) -> int:
        """Number of neurons in the set over all layers."""
        return sum(len(c) for c in self.neurons.values())

    def values(self, layer: int, out: torch.Tensor, inp: torch.Tensor | None) -> torch.Tensor:
        """The new values of the set's columns of ``layer`` (a new tensor: never change ``out`` in place).

        Args:
            out: the hooked module's output at the set's columns (``(..., k)``).
            inp: its input at those columns (only for classes with ``reads_input``), in ``out``'s dtype.
        """
        raise NotImplementedError

    def restrict(self, layers: Iterable[int]) -> Intervention:
        """The same intervention on only the set's neurons in ``layers`` (others dropped; unknown ones ignored)."""
        keep = {_as_index(i, "layer") for i in layers}
        return type(self)({li: cols for li, cols in self.neurons.items() if li in keep})

    def check(self, n_layers: int, d_mlp: int) -> None:
        """``BadArgument`` unless every layer is below ``n_layers`` and every index below ``d_mlp``."""
        for li, cols in self.neurons.items():
            if li >= n_layers:
                raise BadArgument(f"layer {li} out of range: the model has {n_layers} layers (0..{n_layers - 1})")
            if cols[-1] >= d_mlp:
                raise BadArgument(f"neuron {cols[-1]} of layer {li} out of range: layers have {d_mlp} neurons "
                                  f"(0..{d_mlp - 1})")

    def _index(self, layer: int, device: torch.device) -> torch.Tensor:
        key = ("idx", layer, device)
        t = self._cache.get(key)
        if t is None:
            with torch.inference_mode(False):
                t = torch.as_tensor(self.neurons[layer], dtype=torch.long).to(device)
            self._cache[key] = t
        return t


INTERVENTIONS: dict[str, type[Intervention]] = {}
"""Registered intervention classes by mode name (:func:`register_intervention`)."""

C = TypeVar("C", bound=type[Intervention])


def register_intervention(name: str) -> Callable[[C], C]:
    """Class decorator filing an :class:`Intervention` subclass under ``name`` (its ``mode``)::

        @register_intervention("neg")
        class ZeroNegative(Intervention):
            def values(self, layer, out, inp):
                return out.clamp_min(0)
    """
    if not isinstance(name, str) or not name.strip() or "," in name or name != name.strip():
        raise BadArgument(f"an intervention name must be a non-empty word without commas, got {name!r}")

    def decorate(cls: C) -> C:
        if not (isinstance(cls, type) and issubclass(cls, Intervention)):
            raise BadArgument(f"@register_intervention({name!r}) needs an Intervention subclass, got {cls!r}")
        if cls.site not in SITES:
            raise BadArgument(f"{cls.__name__}.site must be one of {', '.join(SITES)}, got {cls.site!r}")
        known = INTERVENTIONS.get(name)
        if known is not None and known is not cls:
            raise BadArgument(f"intervention {name!r} is already registered ({known.__name__})")
        cls.mode = name
        INTERVENTIONS[name] = cls
        return cls

    return decorate


def modes() -> tuple[str, ...]:
    """Every registered mode name, in registration order."""
    return tuple(INTERVENTIONS)


def get_intervention(mode: str) -> type[Intervention]:
    """The class registered as ``mode`` (``BadArgument`` naming the registered ones)."""
    cls = INTERVENTIONS.get(mode) if isinstance(mode, str) else None
    if cls is None:
        raise BadArgument(f"unknown intervention mode '{mode}': use one of {', '.join(INTERVENTIONS)}")
    return cls


def make_intervention(mode: str, neurons: Mapping[int, Sequence[int]],
                      means: Mapping[int, np.ndarray] | None = None) -> Intervention:
    """The intervention ``mode`` on ``neurons`` (``means``: only for ``mode="mean"``, ignored otherwise)."""
    cls = get_intervention(mode)
    if issubclass(cls, MeanValue):
        return cls(neurons, means)
    return cls(neurons)


@register_intervention("neg")
class ZeroNegative(Intervention):
    """x' = max(x, 0): only the negative pre-activations are zeroed (the paper's ablation)."""

    def values(self, layer: int, out: torch.Tensor, inp: torch.Tensor | None) -> torch.Tensor:
        return out.clamp_min(0)


@register_intervention("pos")
class ZeroPositive(Intervention):
    """x' = min(x, 0): only the positive pre-activations are zeroed."""

    def values(self, layer: int, out: torch.Tensor, inp: torch.Tensor | None) -> torch.Tensor:
        return out.clamp_max(0)


@register_intervention("both")
class ZeroBoth(Intervention):
    """x' = 0."""

    def values(self, layer: int, out: torch.Tensor, inp: torch.Tensor | None) -> torch.Tensor:
        return out.new_zeros(()).expand(out.shape)


@register_intervention("mean")
class MeanValue(Intervention):
    """x' = the neuron's mean. ``means``: layer -> the layer's per-neuron means, a 1-D array of length ``d_mlp``
    (e.g. the stored ``mean`` column of the whole layer), required for every layer of the set."""

    def __init__(self, neurons: Mapping[int, Sequence[int]], means: Mapping[int, np.ndarray] | None) -> None:
        super().__init__(neurons)
        if means is None:
            raise BadArgument("mode 'mean' needs means: pass means={layer: per-neuron mean array}")
        given = {_as_index(k, "layer of means"): v for k, v in means.items()}
        out: dict[int, np.ndarray] = {}
        for li, cols in self.neurons.items():
            if li not in given:
                raise BadArgument(f"mode 'mean' has no means for layer {li}")
            arr = np.array(given[li], dtype=np.float64, copy=True)
            if arr.ndim != 1:
                raise BadArgument(f"means of layer {li} must be a 1-D array over the layer's neurons")
            if cols[-1] >= arr.shape[0]:
                raise BadArgument(f"means of layer {li} have {arr.shape[0]} entries, neuron {cols[-1]} has none")
            if not np.isfinite(arr[list(cols)]).all():
                raise BadArgument(f"means of layer {li} are not finite for some neurons of the set")
            arr.setflags(write=False)
            out[li] = arr
        self.means = MappingProxyType(out)

    def restrict(self, layers: Iterable[int]) -> Intervention:
        keep = {_as_index(i, "layer") for i in layers}
        neurons = {li: cols for li, cols in self.neurons.items() if li in keep}
        assert self.means is not None
        return type(self)(neurons, {li: m for li, m in self.means.items() if li in neurons})

    def check(self, n_layers: int, d_mlp: int) -> None:
        super().check(n_layers, d_mlp)
        assert self.means is not None
        for li in self.neurons:
            if self.means[li].shape[0] != d_mlp:
                raise BadArgument(f"means of layer {li} have {self.means[li].shape[0]} entries, the model has "
                                  f"{d_mlp} neurons per layer")

    def values(self, layer: int, out: torch.Tensor, inp: torch.Tensor | None) -> torch.Tensor:
        key = ("mean", layer, out.device, out.dtype)
        t = self._cache.get(key)
        if t is None:
            assert self.means is not None
            vals = self.means[layer][list(self.neurons[layer])]
            with torch.inference_mode(False):
                t = torch.as_tensor(vals).to(device=out.device, dtype=out.dtype)
            self._cache[key] = t
        return t.expand(out.shape)


@register_intervention("posrelu")
class PositiveRelu(Intervention):
    """f(x) = x for x > 0, act(x) otherwise (replaces the activation's output, computed from its input)."""

    site = "act"
    reads_input = True

    def values(self, layer: int, out: torch.Tensor, inp: torch.Tensor | None) -> torch.Tensor:
        assert inp is not None
        return torch.where(inp > 0, inp, out)


@register_intervention("signflip")
class SignFlip(Intervention):
    """f(x) = |act(x)| where act(x) < 0, act(x) otherwise (replaces the activation's output)."""

    site = "act"

    def values(self, layer: int, out: torch.Tensor, inp: torch.Tensor | None) -> torch.Tensor:
        return out.abs()


PREACT_MODES: tuple[str, ...] = tuple(m for m, c in INTERVENTIONS.items() if c.site == "preact")
"""Built-in modes that replace the pre-activation x before the nonlinearity (hook on ``Family.preact``)."""
ACT_MODES: tuple[str, ...] = tuple(m for m, c in INTERVENTIONS.items() if c.site == "act")
"""Built-in modes that replace the activation's output (hook on ``Family.act``)."""
MODES: tuple[str, ...] = PREACT_MODES + ACT_MODES
"""The built-in modes (:func:`modes` also lists those registered later)."""


def restrict(intervention: Intervention, layers: Iterable[int]) -> Intervention:
    """The same intervention on only the set's neurons in ``layers`` (others dropped; unknown layers ignored)."""
    return intervention.restrict(layers)


def layer_groups(n_layers: int, n_groups: int) -> list[list[int]]:
    """Split layers ``0..n_layers-1`` into ``n_groups`` contiguous groups, sizes as equal as possible.

    Larger groups come first: 30 layers into 8 groups have sizes 4, 4, 4, 4, 4, 4, 3, 3.
    """
    n_layers, n_groups = int(n_layers), int(n_groups)
    if n_layers < 1:
        raise BadArgument(f"n_layers must be at least 1, got {n_layers}")
    if not 1 <= n_groups <= n_layers:
        raise BadArgument(f"n_groups must lie in 1..{n_layers} (the number of layers), got {n_groups}")
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


def _hook(iv: Intervention, layer: int) -> Any:
    def hook(_mod: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor:
        idx = iv._index(layer, output.device)
        out = output.index_select(-1, idx)
        inp = args[0].index_select(-1, idx).to(out.dtype) if iv.reads_input else None
        return output.index_copy(output.dim() - 1, idx, iv.values(layer, out, inp))

    return hook


@contextlib.contextmanager
def apply(lm: LoadedModel, intervention: Intervention) -> Iterator[Intervention]:
    """Run the ``with`` block with ``intervention`` hooked into ``lm.model``.

    Only the set's layers get a hook; an empty set registers none. The hooks are removed on exit, also when the
    block raises. Several interventions may be nested (their hooks compose in the order entered).

    Raises:
        BadArgument: a layer or neuron index out of range for the model, means of the wrong length.
        ModelLoadError: an activation module that cannot be hooked (shared between layers, in-place, or not a module).
    """
    if not isinstance(intervention, Intervention):
        raise BadArgument(f"expected an Intervention, got {type(intervention).__name__}")
    intervention.check(lm.n_layers, lm.d_mlp)
    on_act = intervention.site == "act"
    targets: list[tuple[int, nn.Module]] = []
    if intervention.layers:
        get = act_module if on_act else preact_module
        path = lm.family.act if on_act else lm.family.preact
        modules = {i: get(lm.model, lm.family, i) for i in range(lm.n_layers)}
        for li in intervention.layers:
            mod = modules[li]
            if not isinstance(mod, nn.Module):
                raise ModelLoadError(f"layer {li}'s '{path}' is not a module, so it cannot be hooked")
            if sum(m is mod for m in modules.values()) > 1:
                raise ModelLoadError(f"layer {li}'s '{path}' is shared with another layer: a hook on it would "
                                 "change every layer")
            if on_act and getattr(mod, "inplace", False):
                raise ModelLoadError(f"layer {li}'s '{path}' works in place, so its input cannot be read after it ran")
            targets.append((li, mod))
    handles = []
    try:
        for li, mod in targets:
            handles.append(mod.register_forward_hook(_hook(intervention, li)))
        yield intervention
    finally:
        for h in handles:
            h.remove()
