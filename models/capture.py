"""Pre-activation capture: one truncated forward pass that records MLP pre-activations and inputs.

Forward hooks on each requested layer's pre-activation module (see :mod:`negdb.models.families`) record its
output (the pre-activation) and, for selected token rows, its input (the MLP input ``h``). The hook of the last
requested layer stops the forward pass by raising a private exception, so no later layer, final norm or LM head
runs: a capture costs at most one forward pass without the LM head.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from negdb.errors import BadArgument, ModelLoadError
from negdb.models.families import preact_module
from negdb.models.loading import LoadedModel


@dataclass
class Captured:
    """What :func:`run_batch` recorded.

    Attributes:
        preacts: layer -> ``(batch*seq, d_mlp)`` pre-activations on CPU in ``out_dtype`` (rows are tokens in
            row-major order: row ``b * seq + t``).
        inputs: layer -> ``(len(input_rows), d_model)`` float32 MLP inputs on CPU for the requested rows.
        input_rows: the flat token rows the ``inputs`` belong to (``None`` if none were requested).
        device_preacts: with ``keep_on_device``, layer -> the same ``out_dtype`` values still on the model's
            device (the very tensors the CPU copies were made from).
    """

    preacts: dict[int, torch.Tensor] = field(default_factory=dict)
    device_preacts: dict[int, torch.Tensor] = field(default_factory=dict)
    inputs: dict[int, torch.Tensor] = field(default_factory=dict)
    input_rows: torch.Tensor | None = None


class _StopForward(Exception):
    """Raised by the last hook to end the forward pass early."""


def _check_layers(layers: Sequence[int], n_layers: int) -> list[int]:
    wanted = sorted({int(i) for i in layers})
    if not wanted:
        raise BadArgument("no layers requested")
    bad = [i for i in wanted if not 0 <= i < n_layers]
    if bad:
        raise BadArgument(f"layer {bad[0]} out of range: the model has {n_layers} layers (0..{n_layers - 1})")
    return wanted


def run_batch(
    lm: LoadedModel,
    input_ids: torch.Tensor,
    layers: Sequence[int],
    input_rows: torch.Tensor | None = None,
    out_dtype: torch.dtype = torch.float16,
    keep_on_device: bool = False,
) -> Captured:
    """Run one forward pass over ``input_ids`` ``(B, T)`` and capture the requested layers.

    Args:
        lm: a loaded model.
        input_ids: token ids, shape ``(B, T)``; every position is attended (attention mask of ones).
        layers: layer indices to capture (any order; duplicates ignored).
        input_rows: flat token indices ``b * T + t`` whose MLP input ``h`` to record, or ``None``.
        out_dtype: dtype of the returned pre-activations (float16 by default; float32 is exact).
        keep_on_device: also return the ``out_dtype`` pre-activations on the model's device
            (``Captured.device_preacts``): on a GPU, statistics can then be computed there from exactly the
            values that are stored, without a round trip through the CPU.

    Returns:
        A :class:`Captured` with CPU tensors that are ordinary (not inference-mode) tensors.
    """
    if input_ids.dim() != 2:
        raise BadArgument(f"input_ids must be (batch, seq), got shape {tuple(input_ids.shape)}")
    wanted = _check_layers(layers, lm.n_layers)
    last = wanted[-1]
    device = lm.device
    ids = input_ids.to(device=device, dtype=torch.long)
    n_rows = ids.shape[0] * ids.shape[1]
    rows_dev: torch.Tensor | None = None
    if input_rows is not None:
        rows = torch.as_tensor(input_rows, dtype=torch.long).reshape(-1)
        if rows.numel() and (int(rows.min()) < 0 or int(rows.max()) >= n_rows):
            raise BadArgument(f"input_rows must lie in 0..{n_rows - 1}")
        rows_dev = rows.to(device)
    on_cpu = device.type == "cpu"
    out = Captured(input_rows=None if input_rows is None else rows_dev.cpu())  # type: ignore[union-attr]
    d_mlp, d_in = lm.d_mlp, lm.d_model

    def make_hook(layer: int) -> Any:
        stop = layer == last

        def hook(_mod: Any, args: tuple[Any, ...], output: torch.Tensor) -> None:
            # Leave inference mode so the stored tensors are ordinary ones callers may modify in place.
            with torch.inference_mode(False):
                x = output.reshape(n_rows, d_mlp)
                if on_cpu:
                    out.preacts[layer] = torch.empty((n_rows, d_mlp), dtype=out_dtype).copy_(x)
                    if keep_on_device:
                        out.device_preacts[layer] = out.preacts[layer]
                else:
                    xd = x.to(dtype=out_dtype)  # rounded once, on the device: the stored values
                    out.preacts[layer] = xd.to("cpu", non_blocking=True)
                    if keep_on_device:
                        out.device_preacts[layer] = xd
                if rows_dev is not None:
                    h = args[0].reshape(n_rows, d_in).index_select(0, rows_dev)
                    out.inputs[layer] = h.to(device="cpu", dtype=torch.float32, non_blocking=not on_cpu)
            if stop:
                raise _StopForward

        return hook

    handles = []
    try:
        for i in wanted:
            handles.append(preact_module(lm.model, lm.family, i).register_forward_hook(make_hook(i)))
        with torch.inference_mode():
            try:
                lm.model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False)
            except _StopForward:
                pass
    finally:
        for h in handles:
            h.remove()
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # the non-blocking copies to the CPU must have landed
    missing = [i for i in wanted if i not in out.preacts]
    if missing:
        raise ModelLoadError(f"layer {missing[0]}'s pre-activation module never ran: the family table does not match")
    return out
