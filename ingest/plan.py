"""What an ingest will do: parsed options, the statistics spec, and the disk it needs."""

from __future__ import annotations

import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from negdb.errors import NegdbError
from negdb.store.layout import short_hash

STORE_DTYPES = ("float16", "float32")
_RANGE = re.compile(r"^(-?\d+)(?:-(-?\d+))?$")
W_REFERENCES = ("exact", "sample")
COMPRESSIONS = ("zstd", "none")


@dataclass(frozen=True)
class IngestOptions:
    """Arguments of ``negdb ingest`` (see the CLI help for each)."""

    model: str
    checkpoints: str = "final"
    dataset: str = "wikitext-2"
    text_field: str = "text"
    tokens: int = 16384
    seq_len: int = 512
    layers: str = "all"
    activations: str = "all"
    w_reference: str = "exact"
    seed: int = 0
    md_pairs: int = 50_000
    device: str = "auto"
    dtype: str = "float32"
    store_dtype: str = "float16"
    compression: str = "zstd"
    batch_tokens: int | None = None
    bos: bool = False
    mem_budget_mb: int = 1024

    def validate(self) -> None:
        if self.tokens <= 0 or self.seq_len <= 1:
            raise NegdbError("--tokens must be positive and --seq-len at least 2")
        if self.w_reference not in W_REFERENCES:
            raise NegdbError(f"--w-reference must be one of {', '.join(W_REFERENCES)}")
        if self.store_dtype not in STORE_DTYPES:
            raise NegdbError(f"--store-dtype must be one of {', '.join(STORE_DTYPES)}")
        if self.compression not in COMPRESSIONS:
            raise NegdbError(f"--compression must be one of {', '.join(COMPRESSIONS)}")
        if self.md_pairs < 1:
            raise NegdbError("--md-pairs must be at least 1")
        if self.mem_budget_mb < 64:
            raise NegdbError("--mem-budget must be at least 64 (MB)")

    def as_dict(self) -> dict:
        return asdict(self)


def parse_layers(spec: str, n_layers: int) -> list[int]:
    """``all`` or a comma list of indices and ranges (``0-3,7``; negative indices count from the end)."""
    if spec.strip() == "all":
        return list(range(n_layers))
    out: set[int] = set()
    for part in spec.split(","):
        match = _RANGE.match(part.strip())
        if not match:
            raise NegdbError(f"bad layer list '{spec}': use 'all' or e.g. '0-3,7'")
        lo, hi = int(match[1]), int(match[2] or match[1])
        lo, hi = (lo + n_layers if lo < 0 else lo), (hi + n_layers if hi < 0 else hi)
        if lo > hi:
            raise NegdbError(f"bad layer range '{part.strip()}': write the lower layer first")
        out.update(range(lo, hi + 1))
    bad = sorted(i for i in out if not 0 <= i < n_layers)
    if bad or not out:
        raise NegdbError(f"layers {bad or spec} out of range: the model has layers 0-{n_layers - 1}")
    return sorted(out)


def parse_activations(spec: str, layers: list[int], n_layers: int) -> list[int]:
    """Which of the ingested layers keep their activations: ``all``, ``none`` or ``layers=0,5``."""
    spec = spec.strip()
    if spec == "all":
        return list(layers)
    if spec == "none":
        return []
    if spec.startswith("layers="):
        keep = parse_layers(spec.removeprefix("layers="), n_layers)
        missing = sorted(set(keep) - set(layers))
        if missing:
            raise NegdbError(f"--activations names layers {missing} that --layers does not ingest")
        return keep
    raise NegdbError(f"bad --activations '{spec}': use all, none or layers=0,5")


@dataclass(frozen=True)
class StatSpec:
    """How statistics are computed; its hash keys the rows of neuron_stats."""

    w_reference: str
    w_seed: int | None
    md_pairs: int
    md_seed: int
    value_dtype: str

    @property
    def spec_id(self) -> str:
        return short_hash("stat-spec-v1", asdict(self))

    def row(self) -> dict:
        return {"spec_id": self.spec_id, **asdict(self)}


def stat_spec(opts: IngestOptions, n_tokens: int) -> StatSpec:
    return StatSpec(
        w_reference=opts.w_reference,
        w_seed=opts.seed if opts.w_reference == "sample" else None,
        md_pairs=min(opts.md_pairs, n_tokens // 2),
        md_seed=opts.seed,
        value_dtype=opts.store_dtype,
    )


def batch_windows(opts: IngestOptions, *, d_mlp: int, n_layers: int, n_windows: int) -> int:
    """Windows per forward batch: what ``--batch-tokens`` asks, else what fits a quarter of the memory budget."""
    if opts.batch_tokens:
        wanted = max(1, opts.batch_tokens // opts.seq_len)
    else:
        per_window = opts.seq_len * d_mlp * n_layers * 2  # captured float16 bytes
        wanted = max(1, (opts.mem_budget_mb * 2**20 // 4) // per_window)
        wanted = min(wanted, max(1, 8192 // opts.seq_len))
    return min(wanted, n_windows)


def estimate_bytes(*, n_tokens: int, d_mlp: int, n_layers: int, d_model: int, md_rows: int,
                   store_dtype: str) -> int:
    """Upper bound of the disk an ingest writes (uncompressed pre-activations plus MLP inputs)."""
    item = 2 if store_dtype == "float16" else 4
    return n_tokens * d_mlp * n_layers * item + md_rows * d_model * n_layers * 2 + n_tokens * 16


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
        raise NegdbError(
            f"not enough disk space: this ingest needs up to {human_bytes(needed)} but {probe} has "
            f"{human_bytes(free)} free; use fewer --tokens or --layers, --activations none, or another --store"
        )
