"""The catalog manifest: what readers learned about each segment, kept in the store for the next reader.

Opening a catalog needs, for every segment, a little of its Parquet footer (its schema; for ``neuron_stats`` the
row-group statistics of its keys) and, for the small tables kept in memory, its rows. On an object store every
one of those reads is a request or three, so a catalog of 10,000 segments took minutes to open. A manifest is
one object, ``<store>/_catalog/m-<milliseconds>-<sha256>.zip``, holding what a reader learned:

- ``entries.parquet``: per segment its name (relative to the store), size, stamp (S3: a hash of its ETag; a
  folder: its modification time in ns), schema fingerprint and key statistics;
- ``rows/<table>.parquet``: the rows of every small table's segments, each with the segment it came from.

Nothing in it is trusted blindly. A reader lists the segments anyway (that listing is what a catalog shows) and
uses an entry only when the listed segment has the entry's name, size and stamp; any other segment is read as
before (new, replaced or changed). Segments are immutable except run records, which are replaced whole (a new
ETag, a new modification time); on a folder, a segment modified less than :data:`FRESH_S` before the manifest is
written is left out of it, so a replacement within one tick of the file system's clock cannot go unnoticed. A
manifest whose SHA-256 (in its name) or zip CRCs do not match, or that cannot be read, is ignored, and the reader
that had to read many segments itself publishes a new one.

Writers never touch it, so writers that do not know about it (an older negdb, ``negdb merge``) still leave a
correct catalog: the next reader reads their segments and, past :data:`WRITE_AFTER` of them, writes a new
manifest. It is published like a segment: a new name created if absent (a conditional PUT on S3, an atomic
link in a folder), never modified; the newest few are kept and older ones removed. A reader that cannot write
(a read-only store) just does not publish one.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import re
import time
import zipfile
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from negdb.errors import NegdbError

MANIFEST_DIR = "_catalog"
FORMAT = 1
WRITE_AFTER = 32
"""A reader that read at least this many segments itself (not from the manifest) publishes a new manifest."""
KEEP = 3
"""Manifests kept (the newest); older ones are removed by the reader that publishes a new one."""
FRESH_S = 2.0
"""Folder stores: a segment modified this recently (by its modification time) is not put in a manifest."""
SEGMENT = "_negdb_segment"
"""The column of the in-memory small tables (and of the manifest's rows) naming the segment of each row."""

_NAME = re.compile(r"m-(\d{13})-([0-9a-f]{64})\.zip")


@dataclass(frozen=True)
class SegmentInfo:
    """What a reader learned about one segment (``size``/``stamp`` identify the version it learned it from)."""

    size: int
    stamp: int
    schema: str = ""
    """Fingerprint of the Parquet schema (large tables; segments with one fingerprint are read as one group)."""
    keys: tuple = ()
    """neuron_stats: (row group, key column, min, max) of each row group's key statistics."""


@dataclass
class Manifest:
    segments: dict[str, SegmentInfo] = field(default_factory=dict)
    """segment name (``tables/<table>/...``) -> what is known about it"""
    rows: dict[str, pa.Table] = field(default_factory=dict)
    """small table -> its rows, with :data:`SEGMENT`"""


class ManifestUnreadable(NegdbError):
    """A manifest that is damaged or not one (ignored by readers, never an error of theirs)."""


def encode(manifest: Manifest) -> bytes:
    names = sorted(manifest.segments)
    infos = [manifest.segments[n] for n in names]
    entries = pa.table({"name": pa.array(names, pa.string()),
                        "size": pa.array([i.size for i in infos], pa.int64()),
                        "stamp": pa.array([i.stamp for i in infos], pa.int64()),
                        "schema": pa.array([i.schema for i in infos], pa.string()),
                        "keys": pa.array([json.dumps(list(i.keys)) if i.keys else "" for i in infos], pa.string())})
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr("manifest.json", json.dumps({"format": FORMAT, "segments": len(names),
                                                 "tables": sorted(manifest.rows)}))
        zf.writestr("entries.parquet", _parquet(entries))
        for table, rows in sorted(manifest.rows.items()):
            zf.writestr(f"rows/{table}.parquet", _parquet(rows))
    return buf.getvalue()


def _parquet(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def decode(data: bytes) -> Manifest:
    """The manifest in ``data``; :class:`ManifestUnreadable` if it is damaged or of another format."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            if zf.testzip() is not None:
                raise ManifestUnreadable("a member fails its CRC")
            head = json.loads(zf.read("manifest.json"))
            if head.get("format") != FORMAT:
                raise ManifestUnreadable(f"format {head.get('format')!r}, not {FORMAT}")
            entries = pq.read_table(io.BytesIO(zf.read("entries.parquet"))).to_pylist()
            rows = {t: pq.read_table(io.BytesIO(zf.read(f"rows/{t}.parquet"))) for t in head["tables"]}
        segments = {e["name"]: SegmentInfo(int(e["size"]), int(e["stamp"]), e["schema"] or "",
                                           tuple(tuple(k) for k in json.loads(e["keys"])) if e["keys"] else ())
                    for e in entries}
    except ManifestUnreadable:
        raise
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile, pa.ArrowException) as err:
        raise ManifestUnreadable(str(err)) from err
    if len(segments) != head.get("segments") or any(SEGMENT not in r.column_names for r in rows.values()):
        raise ManifestUnreadable("its entries do not match its header")
    return Manifest(segments, rows)


def _names(objects: Any) -> list[str]:
    """The manifests' names, newest first."""
    try:
        found = objects.list(MANIFEST_DIR)
    except (OSError, NegdbError):
        return []
    return sorted((n for n in found if _NAME.fullmatch(n.rsplit("/", 1)[-1])), reverse=True)


def latest(objects: Any) -> Manifest | None:
    """The newest readable manifest of the store behind ``objects`` (its SHA-256 checked), else None."""
    for name in _names(objects)[:2]:  # the newest; the one before if the newest is unreadable or just removed
        digest = _NAME.fullmatch(name.rsplit("/", 1)[-1])[2]  # type: ignore[index]
        try:
            data = objects.read(name)
        except (OSError, NegdbError):
            continue
        if hashlib.sha256(data).hexdigest() != digest:
            continue
        with contextlib.suppress(ManifestUnreadable):
            return decode(data)
    return None


def publish(objects: Any, manifest: Manifest) -> str | None:
    """Publish ``manifest`` under a new name (created if absent) and remove all but the newest :data:`KEEP`; the
    name, or None if the store cannot be written (readers may lack the right: nothing else depends on it)."""
    data = encode(manifest)
    name = f"{MANIFEST_DIR}/m-{int(time.time() * 1000):013d}-{hashlib.sha256(data).hexdigest()}.zip"
    try:
        if not objects.put_new(name, data):
            return None
        for old in _names(objects)[KEEP:]:
            _remove(objects, old)
    except (OSError, NegdbError):
        return None
    return name


def _remove(objects: Any, name: str) -> None:
    fs = getattr(objects, "fs", None)
    with contextlib.suppress(OSError):
        if fs is not None:
            fs.rm_file(objects.full(name))
        else:
            objects.path(name).unlink(missing_ok=True)
