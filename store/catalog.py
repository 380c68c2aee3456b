"""The DuckDB catalog: SQL views over a snapshot of the store's Parquet segments.

Writers never open a DuckDB file (a DuckDB database file admits one writing process and blocks
readers meanwhile). They publish immutable Parquet segments atomically instead, and each
``Catalog`` is an in-memory DuckDB connection whose views read the segments that existed when it
was opened (or last refreshed). So readers never block writers, writers never block each other,
and no reader sees a partial result.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pyarrow as pa

from negdb.store.layout import StoreLayout
from negdb.store.segments import list_segments
from negdb.store.tables import Table, all_tables

NEURONS_VIEW = """
CREATE OR REPLACE VIEW neurons AS
SELECT s.model_id, s.revision, c.step, c.tokens_seen, l.dataset, s.slice_id, s.spec_id,
       p.w_reference, s.* EXCLUDE (model_id, revision, slice_id, spec_id)
FROM neuron_stats s
LEFT JOIN checkpoints c USING (model_id, revision)
LEFT JOIN slices l USING (slice_id)
LEFT JOIN stat_specs p USING (spec_id)
"""


def _sql_list(paths: list[Path]) -> str:
    return "[" + ", ".join("'" + str(p).replace("'", "''") + "'" for p in paths) + "]"


class Catalog:
    """Read access to a store's catalog through DuckDB (a consistent snapshot)."""

    def __init__(self, root: Path | str) -> None:
        self.layout = StoreLayout(Path(root))
        self.con = duckdb.connect(":memory:")
        self.refresh()

    def refresh(self) -> None:
        """Re-read the list of published segments (a new snapshot)."""
        for table in all_tables():
            self._view(table)
        self.con.execute(NEURONS_VIEW)

    def _view(self, table: Table) -> None:
        segments = list_segments(self.layout.table_dir(table.name))
        if segments:
            self.con.execute(
                f"CREATE OR REPLACE VIEW {table.name} AS SELECT * FROM "
                f"read_parquet({_sql_list(segments)}, union_by_name = true)"
            )
        else:
            self.con.execute(f"DROP VIEW IF EXISTS {table.name}")
            self.con.register(f"_empty_{table.name}", table.schema.empty_table())
            self.con.execute(f"CREATE OR REPLACE VIEW {table.name} AS SELECT * FROM _empty_{table.name}")

    def sql(self, query: str, params: list[Any] | None = None) -> pl.DataFrame:
        """Run a query and return a polars DataFrame."""
        return pl.from_arrow(self.arrow(query, params))  # type: ignore[return-value]

    def arrow(self, query: str, params: list[Any] | None = None) -> pa.Table:
        """Run a query and return an Arrow table."""
        return self.con.sql(query, params=params or None).to_arrow_table()

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> "Catalog":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
