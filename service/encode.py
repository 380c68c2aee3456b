"""HTTP answers of query results: JSON (never NaN or Infinity) or an Arrow IPC stream.

The values are encoded by :mod:`negdb.query.encode`, the encoding ``negdb sql --format json`` uses too, so the
CLI and ``POST /sql`` answer a query with the same values.
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa
from fastapi import Request
from fastapi.responses import JSONResponse, Response

from negdb.errors import BadArgument
from negdb.query.encode import ARROW_STREAM, arrow_stream, json_value, table_rows

__all__ = ["ARROW_STREAM", "SafeJSONResponse", "arrow_stream", "error", "tabular", "wants_arrow"]


class SafeJSONResponse(JSONResponse):
    """JSON that never contains NaN or Infinity (not JSON) and accepts Arrow/numpy/time values."""

    def render(self, content: Any) -> bytes:
        return json.dumps(json_value(content), ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


def error(status: int, message: str, **extra: Any) -> SafeJSONResponse:
    """The service's error answer: ``{"error": "one line"}`` with ``status``."""
    return SafeJSONResponse({"error": message, **extra}, status_code=status)


def wants_arrow(request: Request, fmt: str | None) -> bool:
    """Whether to answer with an Arrow stream: ``?format=`` if given, else the ``Accept`` header."""
    if fmt is not None:
        if fmt not in ("json", "arrow"):
            raise BadArgument(f"format={fmt}: use json or arrow")
        return fmt == "arrow"
    return ARROW_STREAM in request.headers.get("accept", "").lower()


def tabular(request: Request, fmt: str | None, table: pa.Table, truncated: bool, elapsed_ms: float) -> Response:
    """A query result as JSON ``{columns, types, rows, row_count, truncated, elapsed_ms}`` or an Arrow stream
    (headers ``X-Negdb-Truncated``, ``X-Negdb-Rows``, ``X-Negdb-Elapsed-Ms``)."""
    if wants_arrow(request, fmt):
        return Response(arrow_stream(table), media_type=ARROW_STREAM, headers={
            "X-Negdb-Truncated": "true" if truncated else "false",
            "X-Negdb-Rows": str(table.num_rows),
            "X-Negdb-Elapsed-Ms": f"{elapsed_ms:.3f}"})
    return SafeJSONResponse({
        "columns": table.column_names, "types": [str(f.type) for f in table.schema],
        "rows": table_rows(table), "row_count": table.num_rows, "truncated": truncated,
        "elapsed_ms": round(elapsed_ms, 3)})
