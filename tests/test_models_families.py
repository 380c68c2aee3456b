"""The family adapter table: lookup, paths, widths."""

from __future__ import annotations

import pytest
import torch
from transformers import GPT2Config

from negdb.errors import BadArgument, ModelLoadError
from negdb.models import families as F
from tiny_models import TINY_CONFIGS, tiny_config, tiny_model


def test_model_types_are_unique_across_families():
    types = [t for f in F.FAMILIES for t in f.model_types]
    assert len(types) == len(set(types))
    assert len({f.name for f in F.FAMILIES}) == len(F.FAMILIES)


@pytest.mark.parametrize(
    ("model_type", "family", "act"),
    [
        ("gpt_neox", "gpt_neox", "gelu"),
        ("gpt2", "gpt2", "gelu_new"),
        ("opt", "opt", "relu"),
        ("llama", "llama", "silu"),
        ("mistral", "llama", "silu"),
        ("qwen2", "llama", "silu"),
        ("qwen3", "llama", "silu"),
        ("gemma", "gemma", "gelu_pytorch_tanh"),
        ("gemma2", "gemma", "gelu_pytorch_tanh"),
        ("gemma3_text", "gemma", "gelu_pytorch_tanh"),
        ("olmo", "olmo", "silu"),
        ("olmo2", "olmo", "silu"),
    ],
)
def test_family_for_and_activation_name(model_type, family, act):
    cfg = tiny_config(model_type)
    fam = F.family_for(cfg)
    assert fam.name == family
    assert F.act_name(cfg, fam) == act


def test_unknown_model_type_names_the_supported_families():
    class Cfg:
        model_type = "mamba"

    with pytest.raises(ModelLoadError) as err:
        F.family_for(Cfg())
    msg = str(err.value)
    assert "mamba" in msg
    for fam in F.FAMILIES:
        assert fam.name in msg
    assert "\n" not in msg
    with pytest.raises(BadArgument, match="gpt_neox"):
        F.family_by_name("nope")
    assert F.family_by_name("opt").act == "activation_fn"


@pytest.mark.parametrize("model_type", sorted(TINY_CONFIGS))
def test_paths_resolve_and_widths_agree(model_type):
    model = tiny_model(model_type)
    fam = F.family_for(model.config)
    layers = F.get_layers(model, fam)
    assert len(layers) == F.n_layers(model.config) == 3
    pre = F.preact_module(model, fam, 2)
    assert F.out_features(pre) == F.d_mlp(model.config, fam)
    assert isinstance(F.act_module(model, fam, 0), torch.nn.Module)
    assert (F.up_module(model, fam, 0) is not None) == fam.gated
    assert F.d_model(model.config) == 32
    with pytest.raises(BadArgument, match="out of range"):
        F.preact_module(model, fam, 3)


def test_gpt2_default_inner_width_and_missing_path():
    cfg = GPT2Config(n_embd=48, n_inner=None)
    assert F.d_mlp(cfg) == 4 * 48
    assert F.d_mlp(GPT2Config(n_embd=48, n_inner=100)) == 100
    model = tiny_model("gpt_neox")
    with pytest.raises(ModelLoadError, match="no 'mlp.nonexistent'"):
        F.get_path(F.get_layers(model, F.family_for(model.config))[0], "mlp.nonexistent")
