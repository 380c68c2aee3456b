"""Run records: one Parquet segment per run, replaced atomically on each change of state."""

from __future__ import annotations

import json
import os
import platform
import socket
import sys
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib import metadata

from negdb.store.layout import StoreLayout
from negdb.store.segments import write_segment
from negdb.store.tables import RUNS

_PACKAGES = ("negdb", "torch", "transformers", "numpy", "scipy", "zarr", "duckdb", "pyarrow", "polars",
             "tokenizers", "gguf", "accelerate")


def library_versions() -> dict[str, str]:
    """Versions of Python and of the libraries whose behaviour the numbers depend on."""
    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class RunRecord:
    """The latest state of one run."""

    run_id: str
    kind: str
    model_id: str
    revision: str
    slice_id: str
    spec_id: str
    layers: list[int]
    config: dict
    status: str = "running"
    resumes: int = 0
    started_at: datetime = field(default_factory=now)
    timings: dict[str, float] = field(default_factory=dict)
    message: str | None = None

    def row(self) -> dict:
        data = asdict(self)
        data.update(
            config_json=json.dumps(self.config, sort_keys=True, default=str),
            versions_json=json.dumps(library_versions(), sort_keys=True),
            timings_json=json.dumps({k: round(v, 3) for k, v in self.timings.items()}),
            host=socket.gethostname(), pid=os.getpid(), updated_at=now(),
        )
        return data

    def save(self, layout: StoreLayout, status: str | None = None, message: str | None = None) -> None:
        """Publish this state (atomic replace of the run's segment)."""
        if status is not None:
            self.status = status
        if message is not None:
            self.message = message
        write_segment(layout.table_dir("runs") / f"{self.run_id}.parquet", RUNS.from_rows([self.row()]),
                      exclusive=False)
