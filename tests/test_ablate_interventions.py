"""negdb.ablate.interventions against independent references with known answers.

The references never call negdb's hooks: they monkeypatch the activation module's ``forward`` to apply the
definition in docs/DEFINITIONS.md ("Interventions") to the columns of the input it receives, or compute a whole
1-layer MLP by hand from its weights in float64.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import pytest
import torch

from negdb.ablate import MODES, apply, cumulative, layer_groups, make_intervention, restrict
from negdb.errors import NegdbError
from negdb.models.capture import run_batch
from negdb.models.families import act_module, preact_module
from negdb.models.loading import from_model
from tiny_models import TINY_CONFIGS, tiny_input_ids, tiny_model

# One model type per family, plus the types the brief names (gemma3_text for gemma, olmo2 for olmo).
FAMILY_TYPES = ("gpt_neox", "gpt2", "opt", "llama", "gemma3_text", "olmo2")
PREACT = {"neg", "pos", "both", "mean"}
IDS = tiny_input_ids(batch=2, seq=8, seed=1)

# Interventions that are the identity on a ReLU model (OPT): relu(max(x,0)) = relu(x), relu never < 0, and
# posrelu of relu is relu.
IDENTITY_ON_RELU = {"neg", "posrelu", "signflip"}


@lru_cache(maxsize=None)
def _lm(model_type: str, seed: int = 0, n_layers: int | None = None):
    over = {} if n_layers is None else {"num_hidden_layers": n_layers}
    return from_model(tiny_model(model_type, seed=seed, **over))


def _neuron_set(lm, layers=(0, 2), frac: float = 0.3, seed: int = 0) -> dict[int, list[int]]:
    rng = np.random.default_rng(seed)
    k = max(1, int(frac * lm.d_mlp))
    return {li: sorted(rng.choice(lm.d_mlp, size=k, replace=False).tolist()) for li in layers}


def _means(lm, layers, seed: int = 0) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(100 + seed)
    return {li: rng.normal(0.0, 1.5, size=lm.d_mlp) for li in layers}


def _logits(lm, ids=IDS) -> torch.Tensor:
    with torch.inference_mode():
        return lm.model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False).logits.clone()


def _n_hooks(model) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


# ---- independent reference: the definitions, applied inside a patched activation forward ----

def _ref_pre(mode: str, x: torch.Tensor, mean: torch.Tensor | None) -> torch.Tensor:
    """x' for the pre-activation modes (x: the selected columns)."""
    if mode == "neg":
        return torch.where(x < 0, torch.zeros_like(x), x)
    if mode == "pos":
        return torch.where(x > 0, torch.zeros_like(x), x)
    if mode == "both":
        return torch.zeros_like(x)
    if mode == "mean":
        return torch.ones_like(x) * mean
    raise AssertionError(mode)


def _ref_act(mode: str, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """f(x) for the activation modes (x: selected pre-activations, a = act(x))."""
    if mode == "posrelu":
        return torch.where(x > 0, x, a)
    if mode == "signflip":
        return torch.where(a < 0, -a, a)
    raise AssertionError(mode)


def _patch_reference(monkeypatch, lm, mode: str, neurons, means=None) -> None:
    for li, cols in neurons.items():
        mod = act_module(lm.model, lm.family, li)
        orig = mod.forward
        cols_t = torch.tensor(cols)
        mean = None if means is None else torch.tensor(means[li][cols], dtype=torch.float32)

        def fwd(x, _orig=orig, _cols=cols_t, _mean=mean):
            if mode in PREACT:
                x2 = x.clone()
                x2[..., _cols] = _ref_pre(mode, x[..., _cols], _mean)
                return _orig(x2)
            y = _orig(x).clone()
            y[..., _cols] = _ref_act(mode, x[..., _cols], y[..., _cols])
            return y

        monkeypatch.setattr(mod, "forward", fwd)


def _intervention(lm, mode, neurons):
    means = _means(lm, neurons) if mode == "mean" else None
    return make_intervention(mode, neurons, means), means


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("model_type", FAMILY_TYPES)
def test_logits_match_reference_every_family_and_mode(model_type, mode, monkeypatch):
    lm = _lm(model_type)
    neurons = _neuron_set(lm)  # layers 0 and 2: layer 1 is outside the set
    iv, means = _intervention(lm, mode, neurons)
    base = _logits(lm)
    with apply(lm, iv):
        got = _logits(lm)
    with monkeypatch.context() as mp:
        _patch_reference(mp, lm, mode, neurons, means)
        want = _logits(lm)
    assert torch.allclose(got, want, atol=1e-5, rtol=0), (got - want).abs().max()
    if model_type == "opt" and mode in IDENTITY_ON_RELU:
        assert torch.allclose(got, base, atol=1e-6)
    else:
        assert not torch.allclose(got, base, atol=1e-4), "the intervention changed nothing: the test is vacuous"
    assert torch.equal(_logits(lm), base)  # hooks gone


@pytest.mark.parametrize("mode", ["neg", "signflip"])
@pytest.mark.parametrize("model_type", sorted(set(TINY_CONFIGS) - set(FAMILY_TYPES)))
def test_other_model_types(model_type, mode, monkeypatch):
    lm = _lm(model_type)
    neurons = _neuron_set(lm, layers=(1,))
    with apply(lm, make_intervention(mode, neurons)):
        got = _logits(lm)
    with monkeypatch.context() as mp:
        _patch_reference(mp, lm, mode, neurons)
        want = _logits(lm)
    assert torch.allclose(got, want, atol=1e-5, rtol=0)


# ---- fully by hand: a 1-layer MLP from its weights, float64 ----

def _gelu(x):
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def _silu(x):
    return x / (1.0 + torch.exp(-x))


def _hand_f(mode: str, x: torch.Tensor, cols: list[int], act, mean: np.ndarray | None) -> torch.Tensor:
    """Elementwise by hand: the modified nonlinearity for every column (only ``cols`` differ from act)."""
    g = act(x)
    out = g.clone()
    flat_x, flat_out = x.reshape(-1, x.shape[-1]), out.reshape(-1, x.shape[-1])
    for r in range(flat_x.shape[0]):
        for j in cols:
            v = float(flat_x[r, j])
            if mode == "neg":
                v = v if v > 0 else 0.0
                flat_out[r, j] = act(torch.tensor(v, dtype=torch.float64))
            elif mode == "pos":
                v = v if v < 0 else 0.0
                flat_out[r, j] = act(torch.tensor(v, dtype=torch.float64))
            elif mode == "both":
                flat_out[r, j] = act(torch.tensor(0.0, dtype=torch.float64))
            elif mode == "mean":
                flat_out[r, j] = act(torch.tensor(float(mean[j]), dtype=torch.float64))
            elif mode == "posrelu":
                flat_out[r, j] = v if v > 0 else float(act(torch.tensor(v, dtype=torch.float64)))
            elif mode == "signflip":
                a = float(act(torch.tensor(v, dtype=torch.float64)))
                flat_out[r, j] = -a if a < 0 else a
    return flat_out.reshape(out.shape)


def _mlp_io(lm, iv):
    mlp = lm.model.gpt_neox.layers[0].mlp if lm.family.name == "gpt_neox" else lm.model.model.layers[0].mlp
    seen = {}
    h1 = mlp.register_forward_pre_hook(lambda m, args: seen.__setitem__("h", args[0].detach().clone()))
    h2 = mlp.register_forward_hook(lambda m, args, out: seen.__setitem__("y", out.detach().clone()))
    try:
        with apply(lm, iv):
            _logits(lm)
    finally:
        h1.remove()
        h2.remove()
    return mlp, seen["h"].double(), seen["y"].double()


@pytest.mark.parametrize("mode", MODES)
def test_one_layer_gelu_mlp_by_hand(mode):
    lm = _lm("gpt_neox", seed=3, n_layers=1)
    assert lm.n_layers == 1 and lm.config.hidden_act == "gelu"
    cols = [0, 5, 17, 40, 63]
    means = {0: np.linspace(-2.0, 2.0, lm.d_mlp)}
    iv = make_intervention(mode, {0: cols}, means if mode == "mean" else None)
    mlp, h, y = _mlp_io(lm, iv)
    w_in, b_in = mlp.dense_h_to_4h.weight.double(), mlp.dense_h_to_4h.bias.double()
    w_out, b_out = mlp.dense_4h_to_h.weight.double(), mlp.dense_4h_to_h.bias.double()
    x = h @ w_in.T + b_in
    assert (x[..., cols] < 0).any() and (x[..., cols] > 0).any()
    want = _hand_f(mode, x, cols, _gelu, means[0]) @ w_out.T + b_out
    assert torch.allclose(y, want, atol=1e-5, rtol=0), (y - want).abs().max()


@pytest.mark.parametrize("mode", MODES)
def test_one_layer_gated_silu_mlp_by_hand(mode):
    lm = _lm("llama", seed=4, n_layers=1)
    assert lm.n_layers == 1 and lm.family.gated
    cols = [1, 2, 30, 47]
    means = {0: np.linspace(1.0, -3.0, lm.d_mlp)}
    iv = make_intervention(mode, {0: cols}, means if mode == "mean" else None)
    mlp, h, y = _mlp_io(lm, iv)
    gate, up, down = (mlp.gate_proj.weight.double(), mlp.up_proj.weight.double(), mlp.down_proj.weight.double())
    x = h @ gate.T
    u = h @ up.T  # the up projection is never touched
    want = (_hand_f(mode, x, cols, _silu, means[0]) * u) @ down.T
    assert torch.allclose(y, want, atol=1e-5, rtol=0), (y - want).abs().max()


# ---- neg: what the activation receives ----

@pytest.mark.parametrize("model_type", ["gpt_neox", "opt", "llama"])
def test_neg_touches_only_negative_preacts_of_the_set(model_type):
    lm = _lm(model_type)
    cols = _neuron_set(lm, layers=(0,))[0]
    others = [j for j in range(lm.d_mlp) if j not in cols]
    act = act_module(lm.model, lm.family, 0)
    seen = {}
    h = act.register_forward_hook(lambda m, args, out: seen.__setitem__("x", args[0].detach().clone()))
    try:
        _logits(lm)
        base = seen.pop("x")
        with apply(lm, make_intervention("neg", {0: cols})):
            _logits(lm)
        got = seen.pop("x")
    finally:
        h.remove()
    if model_type == "opt":
        assert base.dim() == 2  # OPT's fc1 sees (batch*seq, d)
    sel = base[..., cols]
    assert (sel < 0).any() and (sel > 0).any()
    assert torch.equal(got[..., others], base[..., others])
    assert torch.equal(got[..., cols][sel >= 0], sel[sel >= 0])
    assert torch.equal(got[..., cols][sel < 0], torch.zeros_like(sel[sel < 0]))


def test_hook_does_not_modify_a_held_output_and_capture_sees_the_intervention():
    lm = _lm("gpt_neox")
    cols = _neuron_set(lm, layers=(0,))[0]
    held = {}
    pre = preact_module(lm.model, lm.family, 0)
    h = pre.register_forward_hook(lambda m, args, out: held.__setitem__("x", out))  # keeps the very tensor
    try:
        with apply(lm, make_intervention("both", {0: cols})):
            _logits(lm)
            cap = run_batch(lm, IDS, [0], out_dtype=torch.float32)
    finally:
        h.remove()
    kept = held["x"].reshape(-1, lm.d_mlp)
    assert (kept[:, cols] != 0).all()  # the earlier hook's tensor was not zeroed in place
    x = cap.preacts[0]
    assert (x[:, cols] == 0).all()  # capture registered after the intervention records x'
    others = [j for j in range(lm.d_mlp) if j not in cols]
    assert torch.allclose(x[:, others], kept[:, others])


# ---- empty sets, hook lifetime ----

@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("neurons", [{}, {0: [], 2: []}], ids=["no-layers", "empty-layers"])
def test_empty_set_changes_nothing_and_registers_no_hook(mode, neurons):
    lm = _lm("llama")
    base = _logits(lm)
    n0 = _n_hooks(lm.model)
    iv = make_intervention(mode, neurons, {} if mode == "mean" else None)
    assert iv.layers == () and iv.size == 0
    with apply(lm, iv):
        assert _n_hooks(lm.model) == n0
        got = _logits(lm)
    assert torch.equal(got, base)


def test_hooks_only_on_set_layers_and_removed_after_exit_and_exception():
    lm = _lm("gpt2")
    n0 = _n_hooks(lm.model)
    base = _logits(lm)
    iv = make_intervention("neg", {0: [1, 2], 2: [3]})
    with apply(lm, iv) as got_iv:
        assert got_iv is iv
        assert len(preact_module(lm.model, lm.family, 0)._forward_hooks) == 1
        assert len(preact_module(lm.model, lm.family, 1)._forward_hooks) == 0
        assert len(preact_module(lm.model, lm.family, 2)._forward_hooks) == 1
        assert _n_hooks(lm.model) == n0 + 2
    assert _n_hooks(lm.model) == n0
    with pytest.raises(RuntimeError, match="boom"):
        with apply(lm, make_intervention("signflip", {1: [0, 4]})):
            assert len(act_module(lm.model, lm.family, 1)._forward_hooks) == 1
            raise RuntimeError("boom")
    assert _n_hooks(lm.model) == n0
    assert torch.equal(_logits(lm), base)


def test_index_tensors_are_cached_per_device():
    lm = _lm("gpt_neox")
    iv = make_intervention("pos", {0: [3, 1, 3], 1: [2]})
    assert iv.neurons[0] == (1, 3)  # sorted, de-duplicated
    with apply(lm, iv):
        _logits(lm)
        first = {k: v for k, v in iv._cache.items()}
        _logits(lm)
    assert len(first) == 2 and all(iv._cache[k] is v for k, v in first.items())


# ---- validation ----

def _one_line_error(fn) -> str:
    with pytest.raises(NegdbError) as info:
        fn()
    msg = str(info.value)
    assert msg and "\n" not in msg
    return msg


def test_validation_errors():
    lm = _lm("gpt_neox")  # 3 layers, d_mlp 64
    assert "unknown intervention mode 'zero'" in _one_line_error(lambda: make_intervention("zero", {0: [1]}))
    assert "non-negative" in _one_line_error(lambda: make_intervention("neg", {0: [-1]}))
    assert "non-negative" in _one_line_error(lambda: make_intervention("neg", {-1: [1]}))
    assert "integer" in _one_line_error(lambda: make_intervention("neg", {0: [1.5]}))
    assert "integer" in _one_line_error(lambda: make_intervention("neg", {0: [True]}))
    assert "sequence" in _one_line_error(lambda: make_intervention("neg", {0: 3}))
    assert "needs means" in _one_line_error(lambda: make_intervention("mean", {0: [1]}))
    assert "no means for layer 2" in _one_line_error(lambda: make_intervention("mean", {0: [1], 2: [1]},
                                                                            {0: np.zeros(64)}))
    assert "not finite" in _one_line_error(lambda: make_intervention("mean", {0: [1]}, {0: np.full(64, np.nan)}))
    big = make_intervention("neg", {0: [64]})
    assert "neuron 64 of layer 0 out of range" in _one_line_error(lambda: apply(lm, big).__enter__())
    far = make_intervention("neg", {3: [0]})
    assert "layer 3 out of range" in _one_line_error(lambda: apply(lm, far).__enter__())
    short = make_intervention("mean", {0: [1]}, {0: np.zeros(10)})
    assert "10 entries" in _one_line_error(lambda: apply(lm, short).__enter__())
    assert _n_hooks(lm.model) == 0
    # means for layers outside the set or for other modes are fine
    make_intervention("mean", {0: [1]}, {0: np.zeros(64), 5: np.zeros(3)})
    assert make_intervention("neg", {0: [1]}, {0: np.zeros(2)}).means is None


def test_torch_and_numpy_indices_are_accepted():
    iv = make_intervention("neg", {np.int64(1): torch.tensor([5, 2]), 0: np.array([7])})
    assert dict(iv.neurons) == {0: (7,), 1: (2, 5)}
    assert iv.layers == (0, 1) and iv.size == 3


# ---- layer groups ----

def test_layer_groups_thirty_into_eight():
    groups = layer_groups(30, 8)
    assert [len(g) for g in groups] == [4, 4, 4, 4, 4, 4, 3, 3]
    flat = [i for g in groups for i in g]
    assert flat == list(range(30))  # contiguous, in order, a partition
    cum = cumulative(groups)
    assert [len(c) for c in cum] == [4, 8, 12, 16, 20, 24, 27, 30]
    assert cum[-1] == list(range(30))
    assert all(set(a) < set(b) for a, b in zip(cum, cum[1:]))


@pytest.mark.parametrize("n_layers,n_groups", [(1, 1), (7, 7), (12, 5), (24, 4), (32, 6)])
def test_layer_groups_partitions(n_layers, n_groups):
    groups = layer_groups(n_layers, n_groups)
    sizes = [len(g) for g in groups]
    assert len(groups) == n_groups and max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)
    assert [i for g in groups for i in g] == list(range(n_layers))


def test_layer_groups_errors():
    _one_line_error(lambda: layer_groups(3, 0))
    _one_line_error(lambda: layer_groups(3, 4))
    _one_line_error(lambda: layer_groups(0, 1))


def test_restrict_equals_building_the_sub_intervention():
    lm = _lm("olmo2")
    neurons = _neuron_set(lm, layers=(0, 1, 2))
    means = _means(lm, neurons)
    iv = make_intervention("mean", neurons, means)
    sub = restrict(iv, [1, 2, 7])
    assert sub.layers == (1, 2) and sub.mode == "mean" and set(sub.means) == {1, 2}
    direct = make_intervention("mean", {1: neurons[1], 2: neurons[2]}, means)
    with apply(lm, sub):
        a = _logits(lm)
    with apply(lm, direct):
        b = _logits(lm)
    assert torch.equal(a, b)
    assert restrict(iv, []).layers == ()
