"""Resume state of one ingest job, kept in its work folder and replaced atomically."""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

from negdb.store.segments import atomic_write_bytes


@dataclass
class JobState:
    """How far a job got: forward batches written and layers whose statistics are done."""

    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    started_at: str = ""
    resumes: int = 0
    layers: list[int] = field(default_factory=list)  # forward-pass layers of this job
    stats_layers: list[int] = field(default_factory=list)  # of those, the layers that still need statistics
    keep: list[int] = field(default_factory=list)  # of those, the layers whose activations are to be stored
    batches_done: int = 0
    stats_done: list[int] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    @classmethod
    def load(cls, work: Path) -> "JobState | None":
        path = work / "state.json"
        if not path.exists():
            return None
        return cls(**json.loads(path.read_text()))

    def save(self, work: Path) -> None:
        atomic_write_bytes(work / "state.json", json.dumps(asdict(self)).encode())
