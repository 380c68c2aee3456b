"""What a catalog needs from segments it has not seen, fetched many at once: footers, or whole small segments.

A large table's view needs of each segment only its Parquet footer: the schema (segments of one schema are read as
one group) and, for ``neuron_stats``, the key statistics of each row group. :func:`footer_facts` fetches the
footers of many segments at once (an object store: ranged GETs of each object's tail, concurrently through the
fsspec filesystem's ``cat_ranges``; a folder: the files' tails) and parses them with pyarrow.
:func:`fetch_whole` fetches small segments whole, concurrently, into a local folder, for DuckDB to read there.
A segment that is not Parquet raises :class:`~negdb.errors.StoreDamaged` naming it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from negdb.errors import StoreDamaged, one_line
from negdb.store.integrity import NEURON_LAYER_KEYS

TAIL = 64 * 1024
"""Bytes fetched from the end of each segment in the first round (most footers fit; larger ones get a second)."""


def _damaged(name: str, why: str) -> StoreDamaged:
    return StoreDamaged(f"the catalog segment {name} is damaged ({why}): run `negdb repair` to quarantine it "
                        "(`negdb check` shows what is lost)")


def parse_footer(tail: bytes, name: str) -> tuple[str, tuple]:
    """(schema fingerprint, key statistics) from the last bytes of a Parquet file holding its whole footer.

    The key statistics are (row group, key column, min, max) of ``neuron_stats``' key columns, as text (the form
    :func:`negdb.store.integrity.repeated_layers` compares)."""
    if len(tail) < 12 or tail[-4:] != b"PAR1":
        raise _damaged(name, "Parquet magic bytes not found in footer")
    n = int.from_bytes(tail[-8:-4], "little")
    if n + 8 > len(tail):
        raise _damaged(name, f"its footer of {n} bytes is longer than the file")
    try:
        meta = pq.read_metadata(pa.BufferReader(b"PAR1" + tail[-8 - n:]))
        schema = str(meta.schema).split("\n", 1)[1]  # the first line names the Python object
        keys = []
        for rg in range(meta.num_row_groups):
            group = meta.row_group(rg)
            for j in range(group.num_columns):
                col = group.column(j)
                if col.path_in_schema in NEURON_LAYER_KEYS and col.statistics is not None \
                        and col.statistics.has_min_max:
                    keys.append((rg, col.path_in_schema, str(col.statistics.min), str(col.statistics.max)))
    except (OSError, ValueError, pa.ArrowException) as err:
        raise _damaged(name, one_line(err)) from err
    return hashlib.sha256(schema.encode()).hexdigest()[:16], tuple(keys)


def footer_facts(fs: Any, segments: list[tuple[str, str, int]]) -> dict[str, tuple[str, tuple]]:
    """name -> (schema fingerprint, key statistics) of each of ``segments`` (path for ``fs``, name, size).

    ``fs``: an fsspec filesystem (its paths without protocol), or None for local files."""
    tails = _tails(fs, [(p, s, min(s, TAIL)) for p, _, s in segments])
    again = []
    for (p, name, size), tail in zip(segments, tails):
        if len(tail) >= 8 and tail[-4:] == b"PAR1":
            need = int.from_bytes(tail[-8:-4], "little") + 8
            if len(tail) < need <= size:
                again.append((p, size, need))
    if again:  # footers longer than the first round fetched
        longer = dict(zip((p for p, _, _ in again), _tails(fs, again)))
        tails = [longer.get(p, t) for (p, _, _), t in zip(segments, tails)]
    return {name: parse_footer(tail, name) for (_, name, _), tail in zip(segments, tails)}


def _tails(fs: Any, wanted: list[tuple[str, int, int]]) -> list[bytes]:
    """The last ``n`` bytes of each (path, size, n)."""
    if not wanted:
        return []
    if fs is None:
        out = []
        for p, size, n in wanted:
            with open(p, "rb") as fh:
                fh.seek(size - n)
                out.append(fh.read(n))
        return out
    return list(fs.cat_ranges([p for p, _, _ in wanted], [s - n for _, s, n in wanted], [s for _, s, _ in wanted]))


def fetch_whole(fs: Any, segments: list[tuple[str, str]], folder: Path) -> list[Path]:
    """Fetch ``segments`` (path for ``fs``, name) whole and at once into ``folder`` (as ``folder/<name>``); their
    local paths, in order."""
    got = fs.cat([p for p, _ in segments], on_error="raise") if segments else {}
    out = []
    for p, name in segments:
        data = got.get(p)
        if data is None:
            data = got[fs._strip_protocol(p)]
        local = folder / name
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_bytes(data)
        out.append(local)
    return out
