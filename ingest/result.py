"""What an ingest did to one checkpoint (``negdb.ingest.ingest`` returns one per checkpoint)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CheckpointResult:
    """What happened to one checkpoint."""

    model_id: str
    revision: str
    status: str  # ingested | resumed | already
    run_id: str | None
    n_tokens: int
    layers: list[int]
    seconds: float
    slice_id: str | None = None
    spec_id: str | None = None
    """The statistics keys of this checkpoint's ingest (with model_id and revision: what neuron sets select from)."""
