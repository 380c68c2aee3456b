"""Where negdb keeps things: the store folder and the model cache."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_STORE = "negdb-store"


def store_path(path: str | os.PathLike[str] | None = None) -> Path:
    """Resolve the store folder: the argument, else ``$NEGDB_STORE``, else ``./negdb-store``."""
    if path is not None:
        return Path(path).expanduser()
    env = os.environ.get("NEGDB_STORE")
    return Path(env).expanduser() if env else Path(DEFAULT_STORE)


def cache_dir() -> Path:
    """Folder for converted model weights: ``$NEGDB_CACHE``, else ``~/.cache/negdb``."""
    env = os.environ.get("NEGDB_CACHE")
    base = Path(env) if env else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "negdb"
    return base.expanduser()
