"""Pre-activation capture on a tiny model of every model type in the family table."""

from __future__ import annotations

import pytest
import torch

from negdb.errors import BadArgument
from negdb.models.capture import run_batch
from negdb.models.families import FAMILIES, act_module, get_layers, preact_module
from negdb.models.loading import from_model
from tiny_models import TINY_CONFIGS, tiny_input_ids, tiny_model, tiny_tokenizer

B, T = 2, 8


def test_every_family_and_model_type_has_a_tiny_model():
    covered = set(TINY_CONFIGS)
    for fam in FAMILIES:
        missing = set(fam.model_types) - covered
        assert not missing, f"family {fam.name}: no tiny model for {missing}"


class _Recorder:
    """Forward hooks that record module inputs/outputs and count calls."""

    def __init__(self) -> None:
        self.inputs: dict[str, torch.Tensor] = {}
        self.calls: dict[str, int] = {}
        self.handles: list = []

    def watch(self, name: str, module: torch.nn.Module) -> None:
        def hook(_m, args, _out):
            self.calls[name] = self.calls.get(name, 0) + 1
            if args and isinstance(args[0], torch.Tensor):
                self.inputs[name] = args[0].detach().clone()

        self.handles.append(module.register_forward_hook(hook))

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


@pytest.mark.parametrize("model_type", sorted(TINY_CONFIGS))
def test_preact_is_exactly_what_the_activation_receives(model_type):
    lm = from_model(tiny_model(model_type), tiny_tokenizer())
    assert lm.n_layers == 3
    model, fam = lm.model, lm.family
    ids = tiny_input_ids(B, T)

    # Reference: a plain full forward pass recording what every activation module receives.
    ref = _Recorder()
    for i in range(lm.n_layers):
        ref.watch(f"act{i}", act_module(model, fam, i))
        ref.watch(f"pre{i}", preact_module(model, fam, i))
    with torch.inference_mode():
        model(input_ids=ids)
    ref.remove()

    rec = _Recorder()
    for i in range(lm.n_layers):
        rec.watch(f"act{i}", act_module(model, fam, i))
        rec.watch(f"layer{i}", get_layers(model, fam)[i])
    rec.watch("lm_head", model.get_output_embeddings())
    rows = torch.tensor([0, 5, T, 2 * T - 1])
    try:
        cap = run_batch(lm, ids, [1, 0], input_rows=rows, out_dtype=torch.float32)
    finally:
        rec.remove()

    assert sorted(cap.preacts) == [0, 1] and sorted(cap.inputs) == [0, 1]
    # Within the same pass: layer 0's activation received exactly the captured tensor.
    assert torch.equal(cap.preacts[0], rec.inputs["act0"].reshape(B * T, lm.d_mlp))
    for i in (0, 1):
        x = cap.preacts[i]
        assert x.shape == (B * T, lm.d_mlp) and x.dtype == torch.float32 and x.device.type == "cpu"
        assert torch.equal(x, ref.inputs[f"act{i}"].reshape(B * T, lm.d_mlp))
        h = ref.inputs[f"pre{i}"].reshape(B * T, lm.d_model)
        assert cap.inputs[i].shape == (len(rows), lm.d_model) and cap.inputs[i].dtype == torch.float32
        assert torch.equal(cap.inputs[i], h[rows])
    assert torch.equal(cap.input_rows, rows)
    # Stopped right after layer 1's pre-activation: its activation, layer 2 and the LM head never ran.
    assert rec.calls.get("act0") == 1 and rec.calls.get("layer0") == 1
    assert rec.calls.get("act1") is None and rec.calls.get("layer1") is None  # layer 1 was cut mid-way
    assert rec.calls.get("layer2") is None and rec.calls.get("act2") is None
    assert rec.calls.get("lm_head") is None
    # All of negdb's hooks are gone.
    for i in range(lm.n_layers):
        assert not preact_module(model, fam, i)._forward_hooks


@pytest.mark.parametrize("model_type", ["gpt_neox", "opt", "llama"])
def test_capture_matches_a_full_forward_pass(model_type):
    lm = from_model(tiny_model(model_type, seed=3))
    last = lm.n_layers - 1
    rec = _Recorder()
    rec.watch("act", act_module(lm.model, lm.family, last))
    ids = tiny_input_ids(B, T, seed=1)
    with torch.inference_mode():
        lm.model(input_ids=ids)
    rec.remove()
    cap = run_batch(lm, ids, [last])  # default float16, no input rows
    assert cap.inputs == {} and cap.input_rows is None
    assert cap.preacts[last].dtype == torch.float16
    assert torch.equal(cap.preacts[last], rec.inputs["act"].reshape(B * T, lm.d_mlp).to(torch.float16))


def test_captured_tensors_are_ordinary_tensors():
    lm = from_model(tiny_model("llama"))
    cap = run_batch(lm, tiny_input_ids(), [0], input_rows=torch.tensor([1]))
    for t in (*cap.preacts.values(), *cap.inputs.values()):
        assert not t.is_inference()
        t.mul_(2)  # in-place use outside inference mode must be allowed


def test_bad_arguments_are_negdb_errors():
    lm = from_model(tiny_model("gpt2"))
    ids = tiny_input_ids()
    with pytest.raises(BadArgument, match="out of range"):
        run_batch(lm, ids, [3])
    with pytest.raises(BadArgument, match="no layers"):
        run_batch(lm, ids, [])
    with pytest.raises(BadArgument, match="input_rows"):
        run_batch(lm, ids, [0], input_rows=torch.tensor([B * T]))
    with pytest.raises(BadArgument, match="batch, seq"):
        run_batch(lm, ids[0], [0])
    assert not preact_module(lm.model, lm.family, 0)._forward_hooks
