"""Load one checkpoint as an eval-mode, gradient-free causal LM with its tokenizer and family.

Hub checkpoints are read from the local Hugging Face cache first (no network); GGUF files are dequantised once
into ``negdb.config.cache_dir()/models/<name>/`` and loaded from there afterwards.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from negdb.config import cache_dir as negdb_cache_dir
from negdb.errors import BadArgument, ModelLoadError, UnknownModel, one_line
from negdb.models.checkpoints import Checkpoint
from negdb.models.families import (
    Family,
    d_model,
    family_for,
    get_layers,
    out_features,
    preact_module,
)
from negdb.models.registry import ModelSource

log = logging.getLogger(__name__)

_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_META = "negdb-gguf.json"
_GGUF_CACHE_VERSION = 1


@dataclass
class LoadedModel:
    """A loaded checkpoint and what negdb needs to know about it.

    Attributes:
        model: the causal LM (eval mode, ``requires_grad_(False)``).
        tokenizer: its tokenizer; ``pad_token`` set to ``eos_token`` when it had none (see ``pad_from_eos``).
        family: the adapter-table entry.
        config: ``model.config``.
        commit: resolved hub commit hash for hub checkpoints, else ``None``.
        n_layers, d_mlp, d_model: layer count, MLP width (neurons per layer), residual width.
        device: where the model lives.
        source, checkpoint: what was loaded.
        bos: the BOS policy in force (``"none"`` or ``"bos"``: source override, else the family default).
        bos_token_id: the token to prepend under ``bos == "bos"`` (else ``None``).
        pad_from_eos: whether the pad token was set to the eos token by negdb.
    """

    model: nn.Module
    tokenizer: Any
    family: Family
    config: Any
    commit: str | None
    n_layers: int
    d_mlp: int
    d_model: int
    device: torch.device
    source: ModelSource | None = None
    checkpoint: Checkpoint | None = None
    bos: str = "none"
    bos_token_id: int | None = None
    pad_from_eos: bool = False


def resolve_device(device: str | torch.device = "cpu") -> torch.device:
    """``"auto"`` means CUDA when available, else CPU."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as err:
        raise BadArgument(f"--device {device}: not a device; use cpu, cuda, cuda:N, mps or auto") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise BadArgument(f"--device {device}: no CUDA device is available here; use cpu or auto")
    return dev


def device_kind(device: torch.device) -> str:
    """What a device is, for timings: ``cuda: NVIDIA H100 80GB HBM3`` or ``cpu: <model name> x<cores>``."""
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    name = ""
    try:
        with open("/proc/cpuinfo") as fh:
            name = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), "")
    except OSError:
        pass
    import platform

    return f"{device.type}: {name or platform.processor() or platform.machine()} x{os.cpu_count()}"


def _offline() -> bool:
    from huggingface_hub import constants

    flags = (os.environ.get("HF_HUB_OFFLINE"), os.environ.get("TRANSFORMERS_OFFLINE"))
    return bool(constants.HF_HUB_OFFLINE) or any(f and f.strip().upper() in ("1", "ON", "YES", "TRUE") for f in flags)


def _pretrained(location: str, dtype: torch.dtype, device: torch.device, **kw: Any) -> nn.Module:
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # negdb draws its own progress bars

    if device.type != "cpu":
        kw["device_map"] = str(device)
    return AutoModelForCausalLM.from_pretrained(location, dtype=dtype, **kw)


def _tokenizer(location: str, **kw: Any) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(location, **kw)


def hub_commit(repo_id: str, revision: str, model: nn.Module | None = None) -> str | None:
    """The commit hash a hub revision resolves to in the local cache (``None`` if it cannot be told)."""
    if _COMMIT.match(revision):
        return revision
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, "config.json", revision=revision)
    if isinstance(found, str):
        parts = Path(found).parts
        if "snapshots" in parts:
            idx = parts.index("snapshots")
            if idx + 1 < len(parts) and _COMMIT.match(parts[idx + 1]):
                return parts[idx + 1]
    commit = getattr(getattr(model, "config", None), "_commit_hash", None)
    return commit if isinstance(commit, str) and _COMMIT.match(commit) else None


def _not_cached(repo_id: str, revision: str, err: BaseException | None) -> UnknownModel:
    why = f" ({type(err).__name__})" if err is not None else ""
    return UnknownModel(
        f"{repo_id} at revision {revision} is not in the local Hugging Face cache and the hub is unreachable{why}: "
        "download it elsewhere and pass its folder with --model /path/to/folder, "
        "or point HF_HOME at a cache that holds it"
    )


def _config(location: str, **kw: Any) -> Any:
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(location, **kw)


def hub_reachable(timeout: float = 2.0) -> bool:
    """Whether the hub endpoint accepts a TCP connection (avoids huggingface_hub's ~25 s of retries offline)."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    try:
        with socket.create_connection((url.hostname or "", url.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def _hub_config(repo_id: str, revision: str) -> tuple[Any, bool]:
    """The checkpoint's config from the local cache, else (unless offline) the hub; ``(config, from_cache)``."""
    try:
        return _config(repo_id, revision=revision, local_files_only=True), True
    except OSError as err:
        if _offline() or not hub_reachable():
            raise _not_cached(repo_id, revision, err) from err
        try:
            return _config(repo_id, revision=revision), False
        except Exception as err2:  # noqa: BLE001 - any failure here means "cannot get it"
            raise _not_cached(repo_id, revision, err2) from err2


def _load_hub(
    repo_id: str, revision: str, dtype: torch.dtype, device: torch.device
) -> tuple[nn.Module, Any, str | None]:
    config, local = _hub_config(repo_id, revision)
    family_for(config)  # refuse an unsupported architecture before reading its weights
    try:
        model = _pretrained(repo_id, dtype, device, config=config, revision=revision, local_files_only=local)
    except OSError as err:
        raise _not_cached(repo_id, revision, err) from err
    tokenizer = None
    for rev in dict.fromkeys((revision, "main")):
        try:
            tokenizer = _tokenizer(repo_id, revision=rev, local_files_only=local)
            break
        except (OSError, ValueError):
            continue
    if tokenizer is None:
        raise ModelLoadError(f"{repo_id} at revision {revision} has no tokenizer in the local Hugging Face cache")
    return model, tokenizer, hub_commit(repo_id, revision, model)


def _gguf_cache_folder(source: ModelSource, root: Path) -> Path:
    gguf = Path(source.location)
    if source.model_id == str(gguf):  # a user-given file: key the folder by its absolute path
        digest = hashlib.sha256(str(gguf).encode()).hexdigest()[:12]
        return root / "models" / f"gguf-{gguf.stem}-{digest}"
    return root / "models" / source.model_id


def _gguf_stamp(gguf: Path) -> dict[str, Any]:
    st = gguf.stat()
    return {
        "version": _GGUF_CACHE_VERSION,
        "gguf": str(gguf),
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
    }


def _gguf_fresh(folder: Path, stamp: dict[str, Any]) -> bool:
    """The cache holds this GGUF: same path, size and mtime, or (another install of it) same size and sha256."""
    try:
        meta = json.loads((folder / _META).read_text())
    except (OSError, ValueError):
        return False
    if not (folder / "config.json").is_file():
        return False
    if all(meta.get(k) == v for k, v in stamp.items()):
        return True
    same_kind = meta.get("version") == stamp["version"] and meta.get("size") == stamp["size"]
    return same_kind and meta.get("sha256") == _sha256(Path(stamp["gguf"]))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _remove_stale_partials(folder: Path, max_age_s: float = 3600.0) -> None:
    """Remove leftovers of killed conversions (``.<name>.*.partial``) older than ``max_age_s``."""
    now = time.time()
    for p in folder.parent.glob(f".{folder.name}.*.partial"):
        try:
            if now - p.stat().st_mtime > max_age_s:
                shutil.rmtree(p, ignore_errors=True)
        except OSError:
            continue


def convert_gguf(source: ModelSource, cache_root: Path | None = None) -> Path:
    """Dequantise a GGUF model to a float32 ``save_pretrained`` folder once; return the folder.

    The folder is written under a temporary name and renamed into place, so a killed conversion never leaves a
    half cache. ``negdb-gguf.json`` records the GGUF's path, size, mtime and sha256; a changed file is converted
    again, while the same file installed elsewhere (another virtual environment) re-uses the cache.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = Path(source.location)
    if not gguf.is_file():
        raise UnknownModel(f"GGUF file {gguf} does not exist")
    root = Path(cache_root) if cache_root is not None else negdb_cache_dir()
    folder = _gguf_cache_folder(source, root)
    stamp = _gguf_stamp(gguf)
    if _gguf_fresh(folder, stamp):
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(folder)
    log.info("converting %s to float32 in %s (once)", gguf.name, folder)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".partial", dir=folder.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the cache is an ordinary shared folder
    try:
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        quantizer = getattr(model, "hf_quantizer", None)
        if quantizer is not None:
            quantizer.remove_quantization_config(model)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / _META).write_text(json.dumps({**stamp, "sha256": _sha256(gguf), "name": gguf.name}, indent=1))
        old = None
        if folder.exists():
            old = folder.with_name(f".{folder.name}.stale-{os.getpid()}")
            folder.rename(old)
        try:
            tmp.rename(folder)
        except OSError:
            if not _gguf_fresh(folder, stamp):  # lost a race to another converter only if its result is good
                raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def load(
    source: ModelSource,
    checkpoint: Checkpoint,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    cache_dir: str | os.PathLike[str] | None = None,
) -> LoadedModel:
    """Load ``checkpoint`` of ``source`` for inference.

    Args:
        source: from :func:`negdb.models.registry.resolve`.
        checkpoint: from :func:`negdb.models.checkpoints.select`.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or ``"auto"`` (CUDA when available).
        dtype: weight dtype (float32 by default; bfloat16 is much slower on CPUs).
        cache_dir: negdb cache root for converted GGUF weights (default ``negdb.config.cache_dir()``).
    """
    dev = resolve_device(device)
    commit: str | None = None
    if source.kind == "hub":
        model, tokenizer, commit = _load_hub(checkpoint.location, checkpoint.revision, dtype, dev)
    else:
        if source.kind == "gguf":
            folder = str(convert_gguf(source, Path(cache_dir) if cache_dir is not None else None))
        else:
            folder = checkpoint.location
        if not Path(folder, "config.json").is_file():
            raise UnknownModel(f"{folder} is not a model folder (no config.json)")
        try:
            config = _config(folder)
        except Exception as err:  # noqa: BLE001 - transformers raises OSError, ValueError, KeyError, ...
            raise ModelLoadError(f"{folder}/config.json cannot be read ({one_line(err)}): pass a folder written by "
                                 "save_pretrained") from err
        family_for(config)  # refuse an unsupported architecture before reading its weights
        try:
            model = _pretrained(folder, dtype, dev, config=config)
        except Exception as err:  # noqa: BLE001 - missing or truncated weights: OSError, SafetensorError, ...
            raise ModelLoadError(f"the weights in {folder} cannot be loaded ({one_line(err)}): the folder needs "
                                 "complete model.safetensors (or pytorch_model.bin) files") from err
        tokenizer = _tokenizer(folder)
    return _finish(model, tokenizer, source, checkpoint, commit, dev)


def load_tokenizer(source: ModelSource, checkpoint: Checkpoint, *,
                   cache_dir: str | os.PathLike[str] | None = None) -> Any:
    """Load only the tokenizer of ``checkpoint`` (no weights), e.g. to decode stored token ids.

    Hub checkpoints read the local Hugging Face cache first (the checkpoint's revision, then ``main``); GGUF
    sources reuse the converted folder in the negdb cache when it is current, else read the tokenizer straight
    from the GGUF file (no conversion); model folders read their own files.
    """
    if source.kind == "hub":
        local = True
        for attempt in range(2):
            for rev in dict.fromkeys((checkpoint.revision, "main")):
                try:
                    return _tokenizer(checkpoint.location, revision=rev, local_files_only=local)
                except (OSError, ValueError):
                    continue
            if attempt or _offline() or not hub_reachable():
                break
            local = False
        raise ModelLoadError(f"no tokenizer of {checkpoint.location} at revision {checkpoint.revision} in the local "
                         "Hugging Face cache and the hub is unreachable: point HF_HOME at a cache that holds it")
    if source.kind == "gguf":
        gguf = Path(source.location)
        root = Path(cache_dir) if cache_dir is not None else negdb_cache_dir()
        folder = _gguf_cache_folder(source, root)
        if gguf.is_file() and _gguf_fresh(folder, _gguf_stamp(gguf)):
            return _tokenizer(str(folder))
        if not gguf.is_file():
            raise UnknownModel(f"GGUF file {gguf} does not exist")
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    folder = Path(checkpoint.location)
    if not folder.is_dir():
        raise UnknownModel(f"{folder} does not exist: the tokenizer of {source.model_id} cannot be loaded")
    try:
        return _tokenizer(str(folder))
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"{folder} has no loadable tokenizer ({type(err).__name__})") from err


def max_context(lm: LoadedModel) -> int:
    """The model's context length in tokens (``max_position_embeddings`` or the like)."""
    cfg = lm.config
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(cfg, key, None)
        if isinstance(value, int) and value > 0:
            return value
    value = getattr(lm.tokenizer, "model_max_length", None)
    if isinstance(value, int) and 0 < value < 10**7:
        return value
    raise BadArgument("cannot tell the model's context length: pass max_length=")


def from_model(model: nn.Module, tokenizer: Any = None, *, commit: str | None = None) -> LoadedModel:
    """Wrap an already built causal LM (e.g. a test model) as a :class:`LoadedModel`."""
    params = list(model.parameters())
    dev = params[0].device if params else torch.device("cpu")
    return _finish(model, tokenizer, None, None, commit, dev)


def _finish(
    model: nn.Module,
    tokenizer: Any,
    source: ModelSource | None,
    checkpoint: Checkpoint | None,
    commit: str | None,
    device: torch.device,
) -> LoadedModel:
    model.eval()
    model.requires_grad_(False)
    config = model.config
    family = family_for(config)
    layers = get_layers(model, family)
    width = out_features(preact_module(model, family, 0))
    pad_from_eos = False
    if tokenizer is not None and tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
        pad_from_eos = True
    bos = (source.bos if source is not None else None) or family.bos
    bos_id = getattr(tokenizer, "bos_token_id", None) if bos == "bos" else None
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        family=family,
        config=config,
        commit=commit,
        n_layers=len(layers),
        d_mlp=width,
        d_model=d_model(config),
        device=device,
        source=source,
        checkpoint=checkpoint,
        bos=bos,
        bos_token_id=bos_id,
        pad_from_eos=pad_from_eos,
    )
