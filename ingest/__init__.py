"""negdb.ingest: corpora to token slices, and the streaming ingest into the store.

``from negdb.ingest import ingest, IngestSpec, Resources`` is the Python form of ``negdb ingest``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["IngestSpec", "Resources", "ingest"]


def __getattr__(name: str) -> Any:
    if name in __all__:  # lazy: corpus and slice helpers import without torch
        from negdb.ingest import pipeline

        return getattr(pipeline, name)
    raise AttributeError(name)
