"""Bundled corpora and benchmarks (see data/README.md for sources and licenses)."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def data_path(*parts: str) -> Path:
    """Path of a bundled data file, e.g. ``data_path("wikitext-2", "wiki.test.raw.gz")``."""
    return Path(str(files("negdb.data").joinpath(*parts)))
