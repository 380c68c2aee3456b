"""Run records: one Parquet segment per run, replaced atomically on each change of state."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import socket
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from negdb.errors import NegdbError
from negdb.store.layout import StoreLayout
from negdb.store.segments import disk_errors, write_segment
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

    def path(self, layout: StoreLayout) -> Path:
        return layout.table_dir("runs") / f"{self.run_id}.parquet"

    def save(self, layout: StoreLayout, status: str | None = None, message: str | None = None) -> None:
        """Publish this state (atomic replace of the run's segment)."""
        if status is not None:
            self.status = status
        if message is not None:
            self.message = message
        write_segment(self.path(layout), RUNS.from_rows([self.row()]), exclusive=False)

    def _reserve(self, layout: StoreLayout) -> Path:
        return self.path(layout).with_name(f".{self.run_id}.failed.reserve")  # hidden: never read as a segment

    @contextlib.contextmanager
    def reserve_failure(self, layout: StoreLayout) -> Iterator[None]:
        """Keep a written 'failed' record of this run aside while the block runs, for :meth:`save_quietly`.

        A run stopped by a full disk could otherwise not record that it stopped, and would stay 'running'.
        """
        reserve = self._reserve(layout)
        row = {**self.row(), "status": "failed",
               "message": "stopped with no room left to record why (the disk was full); run the same command "
                          "again to resume"}
        import pyarrow.parquet as pq

        with disk_errors(reserve):
            pq.write_table(RUNS.from_rows([row]), reserve)
        try:
            yield
        finally:
            reserve.unlink(missing_ok=True)

    def save_quietly(self, layout: StoreLayout, status: str, message: str) -> None:
        """:meth:`save`, falling back to the reserved 'failed' record (a rename needs no free space) when the
        record cannot be written; never raises (the caller is already handling an error)."""
        try:
            self.save(layout, status, message)
        except (NegdbError, OSError):
            with contextlib.suppress(OSError):
                os.replace(self._reserve(layout), self.path(layout))
