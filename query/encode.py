"""Query results as JSON values: the one encoding of ``negdb sql --format json`` and the HTTP service.

Both answer the same query with the same values (``tests/test_encode.py`` checks it on every DuckDB type):

- integers, strings, booleans as they are; floats as they are, NaN and +-inf as ``null`` (JSON has neither);
- decimals (DuckDB ``DECIMAL``, ``HUGEINT``, ``UHUGEINT`` arrive as Arrow decimal128) exactly: a whole number as an
  integer of any size, a value of at most 15 significant digits as a number, a longer one as its decimal text;
- dates, times and timestamps as ISO 8601 text (``2024-01-31T12:00:00+00:00``); DuckDB's ``infinity`` and
  ``-infinity`` dates and timestamps as those words, and years beyond 9999 as ISO text with the long year;
  a ``TIME WITH TIME ZONE`` keeps its offset (``12:30:00+05:30``: ``Catalog.query`` passes it as text, since
  Arrow's time types carry no offset);
- intervals and durations as ISO 8601 durations (``P1Y2M3DT4H5M6.5S``);
- bytes as base64 text, UUIDs as text, lists, structs and maps as arrays and objects of the same values.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import math
import uuid
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

ARROW_STREAM = "application/vnd.apache.arrow.stream"

# DuckDB's infinite dates (int32 days) and timestamps (int64 in the column's unit), as stored in Arrow
_INFINITE = {32: 2**31 - 1, 64: 2**63 - 1}
# decimals with at most this many significant digits survive a round trip through a float
_FLOAT_DIGITS = 15


def iso_duration(months: int, days: int, nanoseconds: int) -> str:
    """An interval as an ISO 8601 duration (each part keeps its own sign): ``P1Y2M3DT4H5M6.5S``, ``PT0S``."""
    years, months = int(months / 12), months - 12 * int(months / 12)  # truncated towards zero: parts share a sign
    date = "".join(f"{n}{unit}" for n, unit in ((years, "Y"), (months, "M"), (days, "D")) if n)
    sign = "-" if nanoseconds < 0 else ""
    hours, rest = divmod(abs(nanoseconds), 3_600_000_000_000)
    minutes, rest = divmod(rest, 60_000_000_000)
    seconds, frac = divmod(rest, 1_000_000_000)
    sec = f"{seconds}" + (f".{frac:09d}".rstrip("0") if frac else "")
    clock = "".join(f"{sign}{n}{unit}" for n, unit in ((hours, "H"), (minutes, "M")) if n)
    clock += f"{sign}{sec}S" if rest else ""
    if not date and not clock:
        return "PT0S"
    return "P" + date + ("T" + clock if clock else "")


def _decimal(value: decimal.Decimal) -> int | float | str | None:
    if not value.is_finite():
        return None
    if value == value.to_integral_value():
        return int(value)  # exact at any size (HUGEINT)
    digits = len(value.normalize().as_tuple().digits)
    return float(value) if digits <= _FLOAT_DIGITS else str(value)


def json_value(value: Any) -> Any:
    """The JSON form of one Python value (as ``pyarrow`` or DuckDB returns them); see the module's rules."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, decimal.Decimal):
        return _decimal(value)
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return iso_duration(0, value.days, (value.seconds * 1_000_000 + value.microseconds) * 1000)
    if isinstance(value, pa.MonthDayNano):
        return iso_duration(value.months, value.days, value.nanoseconds)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dict):
        return {str(k): json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):  # Arrow maps arrive as lists of (key, value) pairs
        return [json_value(v) for v in value]
    if isinstance(value, np.generic | np.ndarray):
        return json_value(value.tolist())
    if hasattr(value, "to_dicts"):  # polars frames
        return json_value(value.to_dicts())
    if hasattr(value, "to_dict") and callable(value.to_dict):  # negdb's result objects
        return json_value(value.to_dict())
    return str(value)


def ordinary_times(arr: pa.Array | pa.ChunkedArray) -> bool:
    """Whether every value of a date or timestamp column is finite and within Python's years (1-9999), so that
    ``datetime`` (and polars) can hold it: DuckDB's ``infinity`` and far years are not."""
    if isinstance(arr, pa.ChunkedArray):
        return all(ordinary_times(c) for c in arr.chunks)
    bits = 32 if pa.types.is_date32(arr.type) else 64
    raw = arr.cast(pa.int32() if bits == 32 else pa.int64())
    if pc.any(pc.greater_equal(pc.abs(pc.max_element_wise(raw, -_INFINITE[bits])), _INFINITE[bits])).as_py():
        return False
    try:
        arr.to_pylist()
    except (OverflowError, ValueError):
        return False
    return True


def _temporal(arr: pa.Array) -> list[Any]:
    """A date or timestamp array as ISO text, with DuckDB's infinities and years past 9999 (which Python's
    ``datetime`` cannot hold) written out rather than failing."""
    if ordinary_times(arr):
        return [None if v is None else v.isoformat() for v in arr.to_pylist()]
    typ = arr.type
    if pa.types.is_date32(typ):
        unit, tz, cap = "D", None, _INFINITE[32]
    elif pa.types.is_date64(typ):
        unit, tz, cap = "ms", None, _INFINITE[64]
    else:
        unit, tz, cap = typ.unit, typ.tz, _INFINITE[64]
    out: list[Any] = []
    for n in arr.cast(pa.int32() if unit == "D" else pa.int64()).to_pylist():
        if n is None:
            out.append(None)
        elif abs(n) == cap:
            out.append("infinity" if n > 0 else "-infinity")
        else:
            out.append(_far_iso(n, unit, tz is not None))
    return out


def _far_iso(n: int, unit: str, utc: bool) -> str:
    """ISO text of a date or timestamp outside Python's years (1-9999), as ``datetime.isoformat`` writes it."""
    text = str(np.datetime_as_string(np.datetime64(n, unit), unit=unit))
    if unit == "D":
        return text
    whole, _, frac = text.partition(".")
    frac = frac.rstrip("0") and frac.ljust(6, "0")
    return whole + (f".{frac}" if frac else "") + ("+00:00" if utc else "")


def _values(arr: pa.Array) -> list[Any]:
    """JSON values of one Arrow array, type by type (nested types recursively, so that an infinite timestamp
    inside a list is as well written as one in a column of its own)."""
    typ = arr.type
    t = pa.types
    if t.is_dictionary(typ):
        return _values(arr.dictionary_decode())
    if t.is_integer(typ) or t.is_string(typ) or t.is_large_string(typ) or t.is_boolean(typ) or t.is_null(typ):
        return arr.to_pylist()
    if t.is_floating(typ):
        return [v if v is None or math.isfinite(v) else None for v in arr.to_pylist()]
    if t.is_timestamp(typ) or t.is_date(typ):
        return _temporal(arr)
    if t.is_map(typ):  # a list of [key, value] pairs (keys need not be strings)
        return [json_value(v) for v in arr.to_pylist()]
    if t.is_list(typ) or t.is_large_list(typ) or t.is_fixed_size_list(typ) or \
            (hasattr(t, "is_list_view") and (t.is_list_view(typ) or t.is_large_list_view(typ))):
        return _split(arr, _values(arr.flatten()))
    if t.is_struct(typ):
        names = [typ.field(i).name for i in range(typ.num_fields)]
        cols = [_values(child) for child in arr.flatten()]
        valid = arr.is_valid().to_pylist()
        return [dict(zip(names, row)) if ok else None for ok, row in zip(valid, zip(*cols) if cols else
                                                                          ([()] * len(arr)))]
    return [json_value(v) for v in arr.to_pylist()]


def _split(arr: pa.Array, flat: list[Any]) -> list[Any]:
    """The flattened values of a list array cut back into its lists (``None`` for a null list)."""
    out: list[Any] = []
    at = 0
    for n in arr.value_lengths().to_pylist() if not pa.types.is_fixed_size_list(arr.type) else \
            [None if not ok else arr.type.list_size for ok in arr.is_valid().to_pylist()]:
        if n is None:
            out.append(None)
        else:
            out.append(flat[at:at + n])
            at += n
    return out


def column_values(col: pa.ChunkedArray | pa.Array) -> list[Any]:
    """The JSON values of one Arrow column, in order."""
    if isinstance(col, pa.Array):
        return _values(col)
    return [v for chunk in col.chunks for v in _values(chunk)]


def unique_names(table: pa.Table) -> pa.Table:
    """The table with repeated column names numbered (``a``, ``a_1``): DuckDB allows ``SELECT 1 AS a, 2 AS a``,
    JSON objects and polars frames do not."""
    names, seen = [], {}
    for name in table.column_names:
        seen[name] = seen.get(name, 0) + 1
        names.append(name if seen[name] == 1 else f"{name}_{seen[name] - 1}")
    return table.rename_columns(names)


def table_rows(table: pa.Table) -> list[tuple]:
    """Rows of an Arrow table as tuples of JSON values (column order)."""
    return list(zip(*(column_values(c) for c in table.columns))) if table.num_columns else []


def table_records(table: pa.Table) -> list[dict[str, Any]]:
    """Rows of an Arrow table as ``{column: JSON value}`` objects (repeated names numbered)."""
    names = unique_names(table).column_names
    return [dict(zip(names, row)) for row in table_rows(table)]


def arrow_stream(table: pa.Table) -> bytes:
    """The table as one Arrow IPC stream (media type :data:`ARROW_STREAM`)."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()
