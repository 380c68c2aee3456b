"""JSON and Arrow encodings of query results for the HTTP service (JSON never holds NaN or Infinity)."""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import json
import math
import uuid
from typing import Any

import pyarrow as pa
from fastapi.responses import JSONResponse

ARROW_STREAM = "application/vnd.apache.arrow.stream"


def json_safe(value: Any) -> Any:
    """A JSON-safe form of a value: NaN/inf -> null, times -> ISO 8601, bytes -> base64, numpy -> Python."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return json_safe(float(value))
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, uuid.UUID):
        return str(value)
    if hasattr(value, "to_dict") and callable(value.to_dict):
        return json_safe(value.to_dict())
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return json_safe(value.tolist())
    if hasattr(value, "to_dicts"):  # polars frames
        return json_safe(value.to_dicts())
    return str(value)


def _column(col: pa.ChunkedArray) -> list[Any]:
    values = col.to_pylist()
    typ = col.type
    if pa.types.is_integer(typ) or pa.types.is_string(typ) or pa.types.is_large_string(typ) \
            or pa.types.is_boolean(typ) or pa.types.is_null(typ):
        return values
    if pa.types.is_floating(typ):
        return [v if v is None or math.isfinite(v) else None for v in values]
    return [json_safe(v) for v in values]


def table_rows(table: pa.Table) -> list[tuple]:
    """Rows of an Arrow table as JSON-safe tuples (column order)."""
    return list(zip(*(_column(c) for c in table.columns))) if table.num_columns else []


def table_records(table: pa.Table) -> list[dict[str, Any]]:
    names = table.column_names
    return [dict(zip(names, row)) for row in table_rows(table)]


class SafeJSONResponse(JSONResponse):
    """JSON that never contains NaN or Infinity (not JSON) and accepts Arrow/numpy/time values."""

    def render(self, content: Any) -> bytes:
        return json.dumps(json_safe(content), ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()



def arrow_stream(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()
