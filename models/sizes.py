"""How big a model is before it is loaded: parameters, widths, layers and the bytes of one checkpoint's weights.

:func:`size_of` answers offline: from the alias table for Pythia (public numbers, :data:`PYTHIA_ARCH`), else
from a ``config.json`` and the weight files of a local folder, a ``step<N>/`` run or a cached hub revision.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
                "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}


@dataclass(frozen=True)
class ModelSize:
    """Shapes and sizes of one checkpoint.

    Attributes:
        n_params: parameters (embeddings included; ``None`` when unknown).
        n_layers, d_model, d_mlp: transformer layers, residual width, MLP neurons per layer.
        weight_bytes: bytes of one checkpoint's weight files as stored (``None`` when unknown).
    """

    n_params: int | None
    n_layers: int
    d_model: int
    d_mlp: int
    weight_bytes: int | None = None

    @property
    def neurons(self) -> int:
        return self.n_layers * self.d_mlp


@dataclass(frozen=True)
class PythiaArch:
    """Public architecture of one Pythia size (Biderman et al. 2023, Table 1; the hub configs)."""

    n_layers: int
    d_model: int
    vocab: int
    n_params: int  # total parameters as published (embeddings and unembeddings included)
    max_positions: int = 2048

    @property
    def d_mlp(self) -> int:
        return 4 * self.d_model

    def formula_params(self) -> int:
        """Parameters of a GPT-NeoX of this shape: untied in/out embeddings, 12 d^2 + 13 d per layer, final norm."""
        d = self.d_model
        return 2 * self.vocab * d + self.n_layers * (12 * d * d + 13 * d) + 2 * d

    @property
    def weight_bytes(self) -> int:
        """One checkpoint on the hub: float16 weights plus the boolean causal-mask buffer (positions^2) that the
        checkpoints carry in every layer (pythia-70m: 140.9 MB + 25.2 MB = the hub's 166 MB)."""
        return 2 * self.n_params + self.n_layers * self.max_positions ** 2

    def size(self) -> ModelSize:
        return ModelSize(self.n_params, self.n_layers, self.d_model, self.d_mlp, self.weight_bytes)


PYTHIA_ARCH: dict[str, PythiaArch] = {
    "14m": PythiaArch(6, 128, 50304, 14_067_712),
    "31m": PythiaArch(6, 256, 50304, 30_494_720),
    "70m": PythiaArch(6, 512, 50304, 70_426_624),
    "160m": PythiaArch(12, 768, 50304, 162_322_944),
    "410m": PythiaArch(24, 1024, 50304, 405_334_016),
    "1b": PythiaArch(16, 2048, 50304, 1_011_781_632),
    "1.4b": PythiaArch(24, 2048, 50304, 1_414_647_808),
    "2.8b": PythiaArch(32, 2560, 50304, 2_775_208_960),
    "6.9b": PythiaArch(32, 4096, 50432, 6_857_302_016),
    "12b": PythiaArch(36, 5120, 50688, 11_846_072_320),
}
"""Pythia size -> architecture (the deduplicated models have the same shapes)."""


def weight_files(folder: Path) -> list[Path]:
    """The weight files of a model folder (safetensors preferred, as transformers loads them), sorted by name."""
    if not folder.is_dir():
        return []
    files = sorted(p for p in folder.iterdir() if p.suffix in WEIGHT_SUFFIXES and not p.name.startswith("."))
    safetensors = [p for p in files if p.suffix == ".safetensors"]
    return safetensors or [p for p in files if p.suffix in (".bin", ".pt", ".pth")]


def safetensors_params(path: Path) -> int:
    """Parameters in a safetensors file, read from its JSON header only."""
    with path.open("rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(n))
    total = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        count = 1
        for dim in entry["shape"]:
            count *= dim
        total += count
    return total


def _dims(config: Any) -> tuple[int, int, int]:
    from negdb.models.families import d_mlp, d_model, family_for, n_layers

    return n_layers(config), d_model(config), d_mlp(config, family_for(config))


def size_from_folder(folder: Path) -> ModelSize | None:
    """Size of a model folder from its ``config.json`` and weight files (``None`` without a config); a config or
    safetensors header that cannot be read is a :class:`~negdb.errors.ModelLoadError` naming the folder."""
    if not (folder / "config.json").is_file():
        return None
    from transformers import AutoConfig

    from negdb.errors import ModelLoadError, one_line

    try:
        config = AutoConfig.from_pretrained(str(folder))
        layers, width, mlp = _dims(config)
        files = weight_files(folder)
        n_bytes = sum(p.stat().st_size for p in files) if files else None
        st = [p for p in files if p.suffix == ".safetensors"]
        params = sum(safetensors_params(p) for p in st) if st else None
    except (OSError, ValueError, KeyError, TypeError, struct.error, UnicodeDecodeError) as err:
        raise ModelLoadError(f"cannot read the model in {folder}: {one_line(err)}") from None
    return ModelSize(params, layers, width, mlp, n_bytes)
