"""What an ingest will do: parsed options, the statistics spec, and the disk it needs."""

from __future__ import annotations

import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from negdb.errors import BadArgument, NotEnoughDisk
from negdb.store.layout import short_hash
from negdb.values import as_int, layer_list

STORE_DTYPES = ("float16", "float32")
_RANGE = re.compile(r"^(-?\d+)(?:-(-?\d+))?$")
W_REFERENCES = ("exact", "sample")
COMPRESSIONS = ("zstd", "none")
DTYPES = ("float32", "bfloat16", "float16")
STATS_BACKENDS = ("auto", "numpy", "torch")


def _choice(value: Any, allowed: tuple[str, ...], what: str) -> str:
    if value not in allowed:
        raise BadArgument(f"{what} must be one of {', '.join(allowed)}, got {value!r}")
    return str(value)


@dataclass(frozen=True)
class IngestSpec:
    """``negdb ingest`` as one value: what is ingested and how the statistics are computed (every field here can
    change a stored number; how fast it runs is :class:`Resources`).

    Attributes:
        model: an alias, hub id, local folder, folder of ``step<N>/`` checkpoints, or ``.gguf`` file.
        checkpoints: a list of revisions (``["step1000", "step2000"]``), or one of ``all``, ``final``,
            ``every:K``, ``first:N``.
        dataset, text_field: the corpus (``wikitext-2``, ``wikitext-2:test``, a ``.txt``/``.jsonl`` file,
            ``hf:NAME[:CONFIG][:SPLIT]``) and the ``.jsonl`` field holding the text.
        tokens, seq_len, prepend_bos: the token slice (``prepend_bos``: the tokenizer's BOS before each window;
            ``--bos`` of ``negdb ingest``).
        layers: layers that get statistics (``None``: all; negative indices count from the end).
        activations: ingested layers that keep their activations: ``"auto"`` (all layers of the last checkpoint
            of the run and none of the others: a multi-checkpoint run keeps statistics for every checkpoint but
            activations for the final one only; :func:`negdb.ingest.runplan.activations_for`), ``"all"``,
            ``"none"`` or a list of layers (these apply to every checkpoint).
        w_reference: ``exact`` (analytic N(0,1) quantiles) or ``sample`` (the authors' seeded sample).
        seed: seed of the md token pairs and of the W1 sample (recorded as ``md_seed``/``w_seed`` in
            ``stat_specs``).
        md_pairs: token pairs for mapping difficulty (at most tokens/2).
        dtype, store_dtype: the forward pass's dtype and that of the stored pre-activations.
    """

    model: str
    checkpoints: Any = "final"
    dataset: str = "wikitext-2"
    text_field: str = "text"
    tokens: int = 16384
    seq_len: int = 512
    prepend_bos: bool = False
    layers: tuple[int, ...] | None = None
    activations: Any = "auto"
    w_reference: str = "exact"
    seed: int = 0
    md_pairs: int = 50_000
    dtype: str = "float32"
    store_dtype: str = "float16"

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model.strip():
            raise BadArgument("model is required: an alias, hub id, folder or .gguf file")
        ck = self.checkpoints
        if not isinstance(ck, str):
            ck = tuple(str(c) for c in ck) if isinstance(ck, (list, tuple)) else None
            if not ck:
                raise BadArgument(f"checkpoints must be a list of revisions or all|final|every:K|first:N, got "
                                  f"{self.checkpoints!r}")
            object.__setattr__(self, "checkpoints", ck)
        object.__setattr__(self, "tokens", as_int(self.tokens, "tokens", minimum=1))
        object.__setattr__(self, "seq_len", as_int(self.seq_len, "seq_len", minimum=2))
        if not isinstance(self.prepend_bos, bool):
            raise BadArgument(f"prepend_bos must be True or False, got {self.prepend_bos!r}")
        object.__setattr__(self, "layers", layer_list(self.layers))
        act = self.activations
        if not (isinstance(act, str) and act in ("auto", "all", "none")):
            kept = layer_list(act, "activations")
            if kept is None:
                raise BadArgument("activations must be 'auto', 'all', 'none' or a list of layers")
            object.__setattr__(self, "activations", kept)
        _choice(self.w_reference, W_REFERENCES, "w_reference")
        object.__setattr__(self, "seed", as_int(self.seed, "seed", minimum=0))
        object.__setattr__(self, "md_pairs", as_int(self.md_pairs, "md_pairs", minimum=1))
        _choice(self.dtype, DTYPES, "dtype")
        _choice(self.store_dtype, STORE_DTYPES, "store_dtype")
        if self.dtype != "float32" and self.activations != "none":
            raise BadArgument(f"dtype {self.dtype}: activations are stored only from a float32 forward pass (the "
                              "store keys them by model, checkpoint and token slice); use activations 'none' "
                              "(--activations none); statistics of this dtype are kept apart by their spec")

    @property
    def checkpoint_spec(self) -> str:
        """``checkpoints`` in the form :func:`negdb.models.checkpoints.select` takes."""
        return self.checkpoints if isinstance(self.checkpoints, str) else ",".join(self.checkpoints)

    @property
    def layer_text(self) -> str:
        """``layers`` in the form :func:`parse_layers` resolves against the model (``all``, ``0,1,-1``)."""
        return "all" if self.layers is None else ",".join(map(str, self.layers))

    @property
    def activations_text(self) -> str:
        a = self.activations
        return a if isinstance(a, str) else "layers=" + ",".join(map(str, a))

    def record(self) -> dict[str, Any]:
        """JSON-able fields (the ``runs`` record)."""
        return {**asdict(self), "checkpoints": self.checkpoint_spec, "layers": self.layer_text,
                "activations": self.activations_text}


@dataclass(frozen=True)
class Resources:
    """How an ingest runs (never part of a key): device, forward batch, memory budget, codec of stored arrays,
    the statistics kernel (``stats_backend``: ``auto`` = torch on the model's GPU, numpy on CPUs; the values agree
    to rounding), whether a checkpoint's statistics run while the next one streams (``overlap``; the same
    values), and whether hub checkpoints this run downloads stay in the Hugging Face cache (``keep_weights``;
    default: each is removed once ingested, checkpoints cached before the run are never removed)."""

    device: str = "auto"
    batch_tokens: int | None = None
    mem_budget_mb: int = 1024
    compression: str = "zstd"
    stats_backend: str = "auto"
    overlap: bool = True
    keep_weights: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "batch_tokens", as_int(self.batch_tokens, "batch_tokens", minimum=1,
                                                        optional=True))
        object.__setattr__(self, "mem_budget_mb", as_int(self.mem_budget_mb, "mem_budget_mb", minimum=64))
        _choice(self.compression, COMPRESSIONS, "compression")
        _choice(self.stats_backend, STATS_BACKENDS, "stats_backend")
        if not isinstance(self.overlap, bool):
            raise BadArgument(f"overlap must be True or False, got {self.overlap!r}")
        if not isinstance(self.keep_weights, bool):
            raise BadArgument(f"keep_weights must be True or False, got {self.keep_weights!r}")


def parse_layers(spec: str, n_layers: int) -> list[int]:
    """``all`` or a comma list of indices and ranges (``0-3,7``; negative indices count from the end)."""
    if spec.strip() == "all":
        return list(range(n_layers))
    out: set[int] = set()
    for part in spec.split(","):
        match = _RANGE.match(part.strip())
        if not match:
            raise BadArgument(f"bad layer list '{spec}': use 'all' or e.g. '0-3,7'")
        lo, hi = int(match[1]), int(match[2] or match[1])
        lo, hi = (lo + n_layers if lo < 0 else lo), (hi + n_layers if hi < 0 else hi)
        if lo > hi:
            raise BadArgument(f"bad layer range '{part.strip()}': write the lower layer first")
        out.update(range(lo, hi + 1))
    bad = sorted(i for i in out if not 0 <= i < n_layers)
    if bad or not out:
        raise BadArgument(f"layers {bad or spec} out of range: the model has layers 0-{n_layers - 1}")
    return sorted(out)


def parse_activations(spec: str, layers: list[int], n_layers: int) -> list[int]:
    """Which of the ingested layers keep their activations: ``all``, ``none`` or ``layers=0,5`` (``auto`` is
    resolved per checkpoint first: :func:`negdb.ingest.runplan.activations_for`)."""
    spec = spec.strip()
    if spec in ("all", "auto"):
        return list(layers)
    if spec == "none":
        return []
    if spec.startswith("layers="):
        keep = parse_layers(spec.removeprefix("layers="), n_layers)
        missing = sorted(set(keep) - set(layers))
        if missing:
            raise BadArgument(f"--activations names layers {missing} that --layers does not ingest")
        return keep
    raise BadArgument(f"bad --activations '{spec}': use auto, all, none or layers=0,5")


@dataclass(frozen=True)
class StatSpec:
    """How statistics are computed; its hash keys the rows of neuron_stats."""

    w_reference: str
    w_seed: int | None
    md_pairs: int
    md_seed: int
    value_dtype: str
    forward_dtype: str = "float32"

    @property
    def spec_id(self) -> str:
        fields = asdict(self)
        if self.forward_dtype == "float32":  # the default keeps the spec_id of stores written before the field
            del fields["forward_dtype"]
        return short_hash("stat-spec-v1", fields)

    def row(self) -> dict:
        return {"spec_id": self.spec_id, **asdict(self)}


def stat_spec(opts: IngestSpec, n_tokens: int) -> StatSpec:
    return StatSpec(
        w_reference=opts.w_reference,
        w_seed=opts.seed if opts.w_reference == "sample" else None,
        md_pairs=min(opts.md_pairs, n_tokens // 2),
        md_seed=opts.seed,
        value_dtype=opts.store_dtype,
        forward_dtype=opts.dtype,
    )


def batch_windows(res: Resources, seq_len: int, *, d_mlp: int, n_layers: int, n_windows: int) -> int:
    """Windows per forward batch: what ``--batch-tokens`` asks, else what fits a quarter of the memory budget."""
    if res.batch_tokens:
        wanted = max(1, res.batch_tokens // seq_len)
    else:
        per_window = seq_len * d_mlp * n_layers * 2  # captured float16 bytes
        wanted = max(1, (res.mem_budget_mb * 2**20 // 4) // per_window)
        wanted = min(wanted, max(1, 8192 // seq_len))
    return min(wanted, n_windows)


def estimate_bytes(*, n_tokens: int, d_mlp: int, n_layers: int, d_model: int, md_rows: int,
                   store_dtype: str) -> int:
    """The uncompressed bytes of one checkpoint's arrays for ``n_layers`` layers (an upper bound of what the
    compressed arrays take on disk): the pre-activations (``store_dtype``), the MLP inputs of the ``md_rows`` tokens
    of the md pairs (float16, ``md_rows = 2 x pairs``), the int32 token, window and position vectors, and the md
    pairs themselves (int64)."""
    item = 2 if store_dtype == "float16" else 4
    return (n_tokens * d_mlp * n_layers * item + md_rows * d_model * n_layers * 2 + n_tokens * 3 * 4
            + (md_rows // 2) * 2 * 8)


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TB"


def check_disk(path: Path, needed: int) -> None:
    """Refuse to start when the store's file system has less free space than ``needed``."""
    probe = path
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < needed:
        raise NotEnoughDisk(
            f"not enough disk space: this ingest needs up to {human_bytes(needed)} but {probe} has "
            f"{human_bytes(free)} free; use fewer --tokens or --layers, --activations none, or another --store"
        )
