"""Tiny random causal LMs and an offline tokenizer for tests (shared helpers; import them freely).

- :func:`tiny_tokenizer`: a byte-level BPE tokenizer trained in code on a few sentences (vocab ~300).
- :func:`tiny_model`: a seeded 2-3 layer model of any type in :data:`TINY_CONFIGS` (every negdb family is covered).
- :func:`save_tiny`, :func:`save_step_run`, :func:`make_hub_cache`: folders on disk, including a hand-built
  Hugging Face hub cache so the real ``from_pretrained(repo, revision=..., local_files_only=True)`` path runs offline.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

VOCAB = 320  # model vocab; the tokenizer uses fewer ids
EOS = "<|endoftext|>"
SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "Hello world, this is negdb, a neuron statistics database.",
    "Wasserstein neurons have heavy negative tails before the nonlinearity.",
    "Small models are cheap to build and quick to run in tests.",
)


def _configs() -> dict[str, Callable[[], Any]]:
    import transformers as t

    small = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                 max_position_embeddings=128, bos_token_id=0, eos_token_id=0)
    gated = dict(small, intermediate_size=48, num_key_value_heads=2)
    return {
        "gpt_neox": lambda: t.GPTNeoXConfig(**small, intermediate_size=64, hidden_act="gelu"),
        "gpt2": lambda: t.GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=3, n_head=4, n_positions=128,
                                     bos_token_id=0, eos_token_id=0),
        "opt": lambda: t.OPTConfig(**small, ffn_dim=64, word_embed_proj_dim=32, pad_token_id=1,
                                   activation_function="relu"),
        "llama": lambda: t.LlamaConfig(**gated, hidden_act="silu"),
        "mistral": lambda: t.MistralConfig(**gated, hidden_act="silu", sliding_window=None),
        "qwen2": lambda: t.Qwen2Config(**gated, hidden_act="silu"),
        "qwen3": lambda: t.Qwen3Config(**gated, head_dim=8, hidden_act="silu"),
        "gemma": lambda: t.GemmaConfig(**gated, head_dim=8),
        "gemma2": lambda: t.Gemma2Config(**gated, head_dim=8, sliding_window=16, query_pre_attn_scalar=8),
        "gemma3_text": lambda: t.Gemma3TextConfig(**gated, head_dim=8, sliding_window=16, query_pre_attn_scalar=8),
        "olmo": lambda: t.OlmoConfig(**gated, hidden_act="silu", pad_token_id=1),
        "olmo2": lambda: t.Olmo2Config(**gated, hidden_act="silu", pad_token_id=1),
        "olmo3": lambda: t.Olmo3Config(**gated, hidden_act="silu", pad_token_id=1, sliding_window=16),
        "smollm3": lambda: t.SmolLM3Config(**gated, hidden_act="silu", pad_token_id=1),
    }


TINY_CONFIGS: dict[str, Callable[[], Any]] = _configs()
"""model_type -> zero-argument config builder."""


def tiny_config(model_type: str = "gpt_neox", **overrides: Any) -> Any:
    """A tiny config of ``model_type`` with attribute overrides."""
    cfg = TINY_CONFIGS[model_type]()
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return cfg


def tiny_model(model_type: str = "gpt_neox", seed: int = 0, **overrides: Any) -> Any:
    """A seeded random float32 causal LM of ``model_type`` in eval mode."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(model_type, **overrides), dtype=torch.float32)
    return model.eval()


@lru_cache(maxsize=1)
def _tokenizer_json() -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(SENTENCES) * 2, trainer=trainer)
    return tok.to_str()


def tiny_tokenizer(pad: bool = False) -> Any:
    """An offline byte-level BPE tokenizer (ids < 300, EOS/BOS ``<|endoftext|>`` = 0, no pad unless ``pad``)."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    kw = {"pad_token": EOS} if pad else {}
    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_tokenizer_json()), bos_token=EOS, eos_token=EOS, **kw
    )


def tiny_input_ids(batch: int = 2, seq: int = 8, seed: int = 0) -> torch.Tensor:
    """Random token ids ``(batch, seq)`` within the tiny vocab."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, 300, (batch, seq), generator=g)


def save_tiny(folder: str | Path, model_type: str = "gpt_neox", seed: int = 0) -> Path:
    """Save a tiny model and the tiny tokenizer with ``save_pretrained``; return the folder."""
    folder = Path(folder)
    tiny_model(model_type, seed=seed).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder


def save_step_run(
    tmp: str | Path, steps: Iterable[int] = (0, 1000), model_type: str = "gpt_neox", name: str = "run"
) -> Path:
    """Write ``<tmp>/<name>/step<N>/`` model folders with different weights (seed = N); return the run folder."""
    run = Path(tmp) / name
    for step in steps:
        save_tiny(run / f"step{step}", model_type, seed=step)
    return run


def fake_commit(repo: str, revision: str) -> str:
    """A deterministic 40-hex commit id for ``repo`` at ``revision``."""
    return hashlib.sha1(f"{repo}@{revision}".encode()).hexdigest()


def make_hub_cache(
    tmp: str | Path,
    repo: str = "EleutherAI/pythia-70m",
    revisions: Iterable[str] = ("step0", "step1000"),
    model_type: str = "gpt_neox",
) -> tuple[Path, dict[str, str]]:
    """Hand-build a Hugging Face hub cache holding ``repo`` at ``revisions``.

    Layout: ``<tmp>/hub/models--<org>--<name>/refs/<rev>`` holds a fake commit and
    ``snapshots/<commit>/`` the saved files (weights seeded by the revision's position, so each revision
    differs). ``refs/main`` points at the last revision. Point ``huggingface_hub.constants.HF_HUB_CACHE``
    (or ``HF_HUB_CACHE`` before import) at the returned cache folder.

    Returns:
        ``(cache_folder, {revision: commit})``.
    """
    cache = Path(tmp) / "hub"
    repo_dir = cache / f"models--{repo.replace('/', '--')}"
    (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
    commits: dict[str, str] = {}
    revs = list(revisions)
    for i, rev in enumerate(revs):
        commit = fake_commit(repo, rev)
        save_tiny(repo_dir / "snapshots" / commit, model_type, seed=1000 + i)
        (repo_dir / "refs" / rev).write_text(commit)
        commits[rev] = commit
    if revs:
        (repo_dir / "refs" / "main").write_text(commits[revs[-1]])
    return cache, commits
