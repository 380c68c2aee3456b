"""Train a tiny GPT-NeoX from scratch on the bundled WikiText-2 text and save its checkpoints as ``step<N>/``.

The offline stand-in for Pythia's training checkpoints (``negdb analyze training`` end to end, docs/TRAINING.md):

- tokenizer: byte-level BPE trained by the ``tokenizers`` library on the training text (``<|endoftext|>`` = id 0,
  also BOS/EOS), vocabulary :attr:`TrainConfig.vocab`;
- data: the bundled WikiText-2 validation split as ``negdb ingest`` reads it (``load_corpus("wikitext-2")``, 60
  detokenized articles); the last :attr:`TrainConfig.heldout_docs` articles are held out for the evaluation loss,
  the others are tokenized, joined with EOS and cut into windows of :attr:`TrainConfig.seq_len` tokens;
- model: GPT-NeoX (GELU MLP) of :attr:`TrainConfig.layers` layers, width :attr:`TrainConfig.hidden` and
  :attr:`TrainConfig.d_mlp` MLP neurons, AdamW with linear warm-up and cosine decay, batches drawn with
  ``numpy.random.default_rng(seed)``, weights from ``torch.manual_seed(seed)``;
- output: ``OUT/step<N>/`` (config, safetensors weights, tokenizer files) for each step in
  :attr:`TrainConfig.save_at`, and ``OUT/train_log.json`` (config, training and held-out losses per saved step).

Run as ``python -m tests.train_tiny OUT_DIR [--steps N]``; then ``negdb ingest --model OUT_DIR --checkpoints all``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

EOS = "<|endoftext|>"


@dataclass(frozen=True)
class TrainConfig:
    """What to train (every field is recorded in ``train_log.json``)."""

    steps: int = 300
    save_at: tuple[int, ...] = (0, 100, 200, 300)
    seed: int = 0
    vocab: int = 1024
    layers: int = 2
    hidden: int = 64
    d_mlp: int = 256
    heads: int = 4
    seq_len: int = 64
    context: int = 256
    batch: int = 16
    lr: float = 3e-3
    warmup: int = 20
    weight_decay: float = 0.01
    heldout_docs: int = 3
    threads: int = 1


@dataclass
class TrainLog:
    """What :func:`train` did: the loss of every step and, per saved step, the held-out loss."""

    config: dict[str, Any]
    train_loss: list[float] = field(default_factory=list)
    heldout_loss: dict[int, float] = field(default_factory=dict)
    unigram_entropy: float = float("nan")
    n_train_tokens: int = 0
    n_heldout_tokens: int = 0
    seconds: float = 0.0

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "heldout_loss": {str(k): v for k, v in self.heldout_loss.items()}},
                          indent=1)


def train_tokenizer(texts: list[str], vocab: int) -> Any:
    """A byte-level BPE tokenizer trained on ``texts`` (EOS/BOS ``<|endoftext|>`` = id 0), as transformers wraps it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=[EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=EOS, eos_token=EOS)


def _windows(tokenizer: Any, docs: list[str], seq_len: int) -> np.ndarray:
    """The documents tokenized, each followed by EOS, concatenated and cut into ``(n, seq_len)`` windows."""
    ids: list[int] = []
    for enc in tokenizer(docs, add_special_tokens=False)["input_ids"]:
        ids.extend(enc)
        ids.append(tokenizer.eos_token_id)
    n = len(ids) // seq_len
    return np.asarray(ids[: n * seq_len], dtype=np.int64).reshape(n, seq_len)


def _model(cfg: TrainConfig, vocab_size: int) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM, GPTNeoXConfig

    config = GPTNeoXConfig(vocab_size=vocab_size, hidden_size=cfg.hidden, num_hidden_layers=cfg.layers,
                           num_attention_heads=cfg.heads, intermediate_size=cfg.d_mlp, hidden_act="gelu",
                           max_position_embeddings=cfg.context, bos_token_id=0, eos_token_id=0,
                           tie_word_embeddings=False)
    torch.manual_seed(cfg.seed)
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32)


def _loss(model: torch.nn.Module, batch: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(batch)
    return model(input_ids=x, labels=x).loss


@torch.no_grad()
def _heldout(model: torch.nn.Module, windows: np.ndarray, batch: int) -> float:
    """Mean next-token loss over the held-out windows (token-weighted: every window has the same length)."""
    model.eval()
    losses = [float(_loss(model, windows[i:i + batch])) * len(windows[i:i + batch])
              for i in range(0, len(windows), batch)]
    model.train()
    return sum(losses) / len(windows)


def _lr(cfg: TrainConfig, step: int) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to 10% of ``lr`` at ``steps``."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))


def _unigram_entropy(windows: np.ndarray, vocab_size: int) -> float:
    counts = np.bincount(windows.reshape(-1), minlength=vocab_size).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def train(out: str | Path, cfg: TrainConfig = TrainConfig()) -> TrainLog:
    """Train per ``cfg`` and save ``out/step<N>/`` for every N in ``cfg.save_at`` (see the module docstring)."""
    if any(s < 0 or s > cfg.steps for s in cfg.save_at):
        raise ValueError(f"save_at {cfg.save_at} must lie in 0..{cfg.steps}")
    t0 = time.perf_counter()
    out = Path(out)
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)  # one thread: small matrices, and shared cores make more threads slower
    try:
        log = _train(out, cfg)
    finally:
        torch.set_num_threads(threads)
    log.seconds = time.perf_counter() - t0
    (out / "train_log.json").write_text(log.to_json())
    return log


def _train(out: Path, cfg: TrainConfig) -> TrainLog:
    from transformers.utils import logging as hf_logging

    from negdb.ingest.corpus import load_corpus

    hf_logging.disable_progress_bar()

    docs = list(load_corpus("wikitext-2").documents)
    train_docs, held_docs = docs[: -cfg.heldout_docs], docs[-cfg.heldout_docs:]
    tokenizer = train_tokenizer(train_docs, cfg.vocab)
    vocab_size = len(tokenizer)
    data = _windows(tokenizer, train_docs, cfg.seq_len)
    held = _windows(tokenizer, held_docs, cfg.seq_len)
    log = TrainLog(config=asdict(cfg), unigram_entropy=_unigram_entropy(data, vocab_size),
                   n_train_tokens=int(data.size), n_heldout_tokens=int(held.size))
    model = _model(cfg, vocab_size)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.95), weight_decay=cfg.weight_decay)
    rng = np.random.default_rng(cfg.seed)

    def save(step: int) -> None:
        folder = out / f"step{step}"
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        log.heldout_loss[step] = _heldout(model, held, 4 * cfg.batch)

    for step in range(cfg.steps + 1):
        if step in cfg.save_at:
            save(step)
        if step == cfg.steps:
            break
        for group in opt.param_groups:
            group["lr"] = _lr(cfg, step)
        loss = _loss(model, data[rng.integers(0, len(data), size=cfg.batch)])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        log.train_loss.append(loss.item())
    return log


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.train_tiny", description=__doc__.splitlines()[0])
    parser.add_argument("out", help="output folder (gets step<N>/ subfolders)")
    parser.add_argument("--steps", type=int, default=TrainConfig.steps)
    parser.add_argument("--save-every", type=int, default=100, help="also save every this many steps")
    parser.add_argument("--seed", type=int, default=TrainConfig.seed)
    args = parser.parse_args(argv)
    save_at = tuple(sorted({*range(0, args.steps + 1, args.save_every), args.steps}))
    log = train(args.out, TrainConfig(steps=args.steps, save_at=save_at, seed=args.seed))
    for step, loss in log.heldout_loss.items():
        print(f"step{step}: held-out loss {loss:.3f}")
    print(f"unigram entropy {log.unigram_entropy:.3f}; {log.seconds:.1f} s; checkpoints in {args.out}")


if __name__ == "__main__":
    main()
