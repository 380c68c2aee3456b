"""Model families: the one adapter table from a Hugging Face causal LM to its MLP pre-activations.

Each :class:`Family` names, as dotted attribute paths, where the decoder layers live and which module inside a
layer produces the pre-activation (its *output*) and which consumes it (the activation module, whose *input* is
the same tensor). Every path was checked against the modelling code of transformers 5.23
(``transformers/models/<type>/modeling_<type>.py``). Adding a family is one entry in :data:`FAMILIES`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from negdb.errors import BadArgument, ModelLoadError

BosPolicy = Literal["none", "bos"]
"""``"none"``: feed the text's tokens as they are; ``"bos"``: prepend the tokenizer's BOS token."""


@dataclass(frozen=True)
class Family:
    """How to find the MLP pre-activation in one family of causal-LM architectures.

    Attributes:
        name: short family name (stored with every ingest).
        model_types: the ``config.model_type`` values that belong to the family.
        layers: dotted path from the causal-LM module to the ``ModuleList`` of decoder layers.
        preact: dotted path inside a layer to the module whose output is the pre-activation
            (the first MLP projection; for gated MLPs the *gate* projection).
        act: dotted path inside a layer to the activation module that receives the pre-activation.
        act_config_keys: config attributes naming the activation, first present one wins.
        gated: whether the MLP is gated (``act(gate(h)) * up(h)``).
        bos: default BOS policy for scoring and ingest (see :data:`BosPolicy`).
        up: dotted path inside a layer to the up projection of a gated MLP (``None`` if not gated).
        d_mlp_keys: config attributes giving the MLP width, first non-``None`` wins
            (falls back to ``4 * hidden_size``, GPT-2's ``n_inner=None`` convention).
    """

    name: str
    model_types: tuple[str, ...]
    layers: str
    preact: str
    act: str
    act_config_keys: tuple[str, ...]
    gated: bool
    bos: BosPolicy
    up: str | None = None
    d_mlp_keys: tuple[str, ...] = ("intermediate_size",)


FAMILIES: tuple[Family, ...] = (
    # Pythia. GELU (exact erf). Tokenizer adds no BOS; Pythia was trained on documents joined by <|endoftext|>.
    Family(
        name="gpt_neox",
        model_types=("gpt_neox",),
        layers="gpt_neox.layers",
        preact="mlp.dense_h_to_4h",
        act="mlp.act",
        act_config_keys=("hidden_act",),
        gated=False,
        bos="none",
    ),
    # GPT-2: c_fc is a Conv1D (weight stored (in, out)); activation gelu_new (tanh approximation).
    Family(
        name="gpt2",
        model_types=("gpt2",),
        layers="transformer.h",
        preact="mlp.c_fc",
        act="mlp.act",
        act_config_keys=("activation_function",),
        gated=False,
        bos="none",
        d_mlp_keys=("n_inner",),
    ),
    # OPT: ReLU, the contrast case. fc1 sits directly in the decoder layer and sees (batch*seq, d_model)
    # rows (the layer flattens before the MLP). OPT tokenizers prepend </s> as BOS and the models expect it.
    Family(
        name="opt",
        model_types=("opt",),
        layers="model.decoder.layers",
        preact="fc1",
        act="activation_fn",
        act_config_keys=("activation_function",),
        gated=False,
        bos="bos",
        d_mlp_keys=("ffn_dim",),
    ),
    # Llama-style gated SiLU MLPs (SmolLM/SmolLM2 are model_type "llama").
    Family(
        name="llama",
        model_types=("llama", "mistral", "qwen2", "qwen3", "smollm3"),
        layers="model.layers",
        preact="mlp.gate_proj",
        act="mlp.act_fn",
        act_config_keys=("hidden_act",),
        gated=True,
        bos="bos",
        up="mlp.up_proj",
    ),
    # Gemma: gated tanh-GELU. Gemma 1 names the activation hidden_act, Gemma 2/3 hidden_activation.
    # Gemma3 "gemma3_text" only (Gemma3ForCausalLM); the multimodal "gemma3" wraps it in language_model.
    Family(
        name="gemma",
        model_types=("gemma", "gemma2", "gemma3_text"),
        layers="model.layers",
        preact="mlp.gate_proj",
        act="mlp.act_fn",
        act_config_keys=("hidden_activation", "hidden_act"),
        gated=True,
        bos="bos",
        up="mlp.up_proj",
    ),
    # OLMo: gated SiLU. OLMo 2/3 normalise *after* the MLP, so the MLP input h is the raw residual stream.
    Family(
        name="olmo",
        model_types=("olmo", "olmo2", "olmo3"),
        layers="model.layers",
        preact="mlp.gate_proj",
        act="mlp.act_fn",
        act_config_keys=("hidden_act",),
        gated=True,
        bos="none",
        up="mlp.up_proj",
    ),
)


def supported_model_types() -> list[str]:
    """All ``config.model_type`` values some family handles, sorted."""
    return sorted(t for f in FAMILIES for t in f.model_types)


def family_by_name(name: str) -> Family:
    """The family called ``name``; ``BadArgument`` listing the names otherwise."""
    for fam in FAMILIES:
        if fam.name == name:
            return fam
    raise BadArgument(f"unknown model family '{name}': use one of {', '.join(f.name for f in FAMILIES)}")


def family_for(config: Any) -> Family:
    """The family of a transformers config, chosen by ``config.model_type``."""
    model_type = getattr(config, "model_type", None)
    for fam in FAMILIES:
        if model_type in fam.model_types:
            return fam
    listed = "; ".join(f"{f.name} ({', '.join(f.model_types)})" for f in FAMILIES)
    raise ModelLoadError(f"unsupported model type '{model_type}': negdb supports the families {listed}")


def get_path(root: nn.Module, path: str) -> Any:
    """Follow a dotted attribute path (``"mlp.gate_proj"``) from ``root``; ``ModelLoadError`` if a part is missing."""
    obj: Any = root
    for part in path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ModelLoadError(
                f"{type(root).__name__} has no '{path}' (missing '{part}'): this transformers version "
                "lays the model out differently from negdb's family table"
            ) from None
    return obj


def get_layers(model: nn.Module, family: Family) -> nn.ModuleList:
    """The decoder-layer ``ModuleList`` of a causal LM."""
    layers = get_path(model, family.layers)
    if not isinstance(layers, nn.ModuleList):
        raise ModelLoadError(f"{family.layers} of {type(model).__name__} is not a ModuleList")
    return layers


def _layer(model: nn.Module, family: Family, i: int) -> nn.Module:
    layers = get_layers(model, family)
    if not -len(layers) <= i < len(layers):
        raise BadArgument(f"layer {i} out of range: the model has {len(layers)} layers (0..{len(layers) - 1})")
    return layers[i]


def preact_module(model: nn.Module, family: Family, i: int) -> nn.Module:
    """Layer ``i``'s module whose output is the pre-activation (its input is the MLP input ``h``)."""
    return get_path(_layer(model, family, i), family.preact)


def act_module(model: nn.Module, family: Family, i: int) -> nn.Module:
    """Layer ``i``'s activation module, which receives the pre-activation as its input."""
    return get_path(_layer(model, family, i), family.act)


def up_module(model: nn.Module, family: Family, i: int) -> nn.Module | None:
    """Layer ``i``'s up projection for gated families, else ``None``."""
    return None if family.up is None else get_path(_layer(model, family, i), family.up)


def act_name(config: Any, family: Family) -> str | None:
    """The activation's name in the config (e.g. ``"silu"``, ``"gelu_new"``)."""
    for key in family.act_config_keys:
        value = getattr(config, key, None)
        if value is not None:
            return str(value)
    return None


def d_model(config: Any) -> int:
    """Width of the residual stream (``hidden_size``; GPT-2 maps it to ``n_embd``)."""
    return int(config.hidden_size)


def d_mlp(config: Any, family: Family | None = None) -> int:
    """Number of MLP neurons per layer (width of the pre-activation)."""
    fam = family or family_for(config)
    for key in fam.d_mlp_keys:
        value = getattr(config, key, None)
        if value is not None:
            return int(value)
    return 4 * d_model(config)


def n_layers(config: Any) -> int:
    """Number of decoder layers (``num_hidden_layers``)."""
    return int(config.num_hidden_layers)


def out_features(module: nn.Module) -> int:
    """Output width of a projection: ``nn.Linear.out_features`` or GPT-2 ``Conv1D.nf``."""
    for attr in ("out_features", "nf"):
        value = getattr(module, attr, None)
        if isinstance(value, int):
            return value
    weight = getattr(module, "weight", None)
    if isinstance(weight, torch.Tensor):
        return int(weight.shape[0])
    raise ModelLoadError(f"cannot tell the output width of {type(module).__name__}")
