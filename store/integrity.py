"""Integrity of a store: damaged files, duplicate rows, quarantine (``negdb check`` and ``negdb repair``).

What can go wrong after the fact (the writers themselves never publish a partial file, docs/STORE.md): a disk
or a person truncates, alters or deletes a published file, or a store written by an older negdb holds a layer
twice. :func:`check` finds every such problem and says what it affects; :func:`repair` moves each damaged file
(or array folder) into ``<store>/quarantine/<time>/`` (never deletes anything), rewrites a segment that repeats
another's layers without them, and reports what was lost and the command that restores it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import unquote

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from negdb.errors import StoreDamaged, StoreError, one_line
from negdb.store.layout import FORMAT_VERSION, StoreLayout

KEYS: dict[str, tuple[str, ...]] = {
    "models": ("model_id",),
    "checkpoints": ("model_id", "revision"),
    "slices": ("slice_id",),
    "stat_specs": ("spec_id",),
    "activations": ("model_id", "revision", "slice_id", "layer"),
}
"""Small tables whose views keep one row per key (a repeated row, e.g. from an older negdb, is shown once)."""

NEURON_LAYER_KEYS = ("model_id", "revision", "slice_id", "spec_id", "layer")
"""neuron_stats holds each (model, revision, slice, spec, layer) in one segment; the view shows one."""


def quarantine(layout: StoreLayout, path: Path, stamp: str | None = None) -> Path:
    """Move a file or folder of the store to ``quarantine/<stamp>/<its relative path>``; returns the new path."""
    stamp = stamp or datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    rel = path.resolve().relative_to(layout.root.resolve())
    dst = layout.root / "quarantine" / stamp / rel
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.rename(path, dst)
    return dst


def segment_problem(path: Path) -> str | None:
    """Why a Parquet segment cannot be read (its footer, schema and every row group's metadata), or None."""
    try:
        meta = pq.read_metadata(path)
        for i in range(meta.num_row_groups):
            meta.row_group(i)
        size = path.stat().st_size
        end = max((meta.row_group(i).column(j).file_offset + meta.row_group(i).column(j).total_compressed_size
                   for i in range(meta.num_row_groups) for j in range(meta.num_columns)), default=0)
        if end > size:
            return f"its data ends at byte {end} but the file has {size}"
    except (OSError, pa.ArrowException, ValueError) as err:
        return one_line(err)
    return None


def damaged_segment(paths: Iterable[Path]) -> StoreDamaged | None:
    """The error for the first unreadable segment of ``paths`` (a one-line message naming it), or None."""
    for path in paths:
        problem = segment_problem(path)
        if problem is not None:
            return StoreDamaged(f"the catalog segment {path} is damaged ({problem}): run `negdb repair` to "
                                "quarantine it (`negdb check` shows what is lost)")
    return None


LAYER_KEY_STATS = ("SELECT file_name, row_group_id, path_in_schema, stats_min_value, stats_max_value FROM "
                   "parquet_metadata(?) WHERE path_in_schema IN ('model_id', 'revision', 'slice_id', 'spec_id', 'layer')")
"""(file, row group, key column, min, max) of neuron_stats segments, from their Parquet footers."""


def duplicate_layers(con: duckdb.DuckDBPyConnection, listing: list[tuple[str, int, int]]) -> dict[str, list[int]]:
    """neuron_stats segments that repeat a (model, revision, slice, spec, layer) of an older segment: for each such
    segment (path as listed), the layers to leave out. Read from the Parquet footers only (row-group statistics:
    a row group holds one run of consecutive layers), so it costs no data read."""
    if len(listing) < 2:
        return {}
    return repeated_layers(con.execute(LAYER_KEY_STATS, [[p for p, _, _ in listing]]).fetchall(), listing)


def repeated_layers(rows: Iterable[tuple], listing: list[tuple[str, int, int]] | tuple) -> dict[str, list[int]]:
    """:func:`duplicate_layers` from the footers' key statistics ``rows`` (as :data:`LAYER_KEY_STATS` returns them,
    e.g. kept in the catalog manifest) of the segments of ``listing`` (path, size, modification stamp)."""
    order = {p: (mtime, p) for p, _, mtime in listing}
    groups: dict[tuple[str, int], dict[str, tuple[str | None, str | None]]] = {}
    for file, rg, col, lo, hi in rows:
        groups.setdefault((file, rg), {})[col] = (lo, hi)
    owner: dict[tuple, str] = {}
    out: dict[str, list[int]] = {}
    for (file, _), cols in sorted(groups.items(), key=lambda kv: order.get(kv[0][0], (0, kv[0][0]))):
        keys = [cols.get(c, (None, None)) for c in NEURON_LAYER_KEYS]
        if any(lo is None or lo != hi for lo, hi in keys[:4]) or keys[4][0] is None:
            continue  # statistics missing: cannot tell (never so for segments negdb writes)
        for layer in range(int(keys[4][0]), int(keys[4][1]) + 1):
            key = (*(lo for lo, _ in keys[:4]), layer)
            first = owner.setdefault(key, file)
            if first != file:
                out.setdefault(file, []).append(layer)
    return out


def dedupe_filter(duplicates: dict[str, list[int]], rename: dict[str, str]) -> str:
    """A WHERE clause leaving out the repeated layers (``rename``: listed path -> the path the reader uses)."""
    def lit(text: str) -> str:
        return "'" + text.replace("'", "''") + "'"

    parts = [f"(filename = {lit(rename.get(f, f))} AND layer IN ({', '.join(map(str, sorted(ls)))}))"
             for f, ls in sorted(duplicates.items())]
    return "NOT (" + " OR ".join(parts) + ")"


# ------------------------------------------------------------------------------------------ check and repair


@dataclass
class Problem:
    """One thing wrong with a store: what, which path, what it affects and what repair does about it."""

    kind: str  # damaged-segment | damaged-array | missing-array | duplicate-layers | duplicate-rows | marker | leftover
    path: Path
    detail: str
    affects: str
    repair: str
    layers: list[int] = field(default_factory=list)  # duplicate-layers: the repeated layers

    def line(self, root: Path) -> str:
        try:
            shown = self.path.relative_to(root)
        except ValueError:
            shown = self.path
        return f"{self.kind}: {shown}: {self.detail}; affects {self.affects}"


@dataclass
class Report:
    """What :func:`check` found (``problems``) and, after :func:`repair`, what was done (``actions``)."""

    root: Path
    problems: list[Problem] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)
    checked: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not [p for p in self.problems if p.kind != "leftover"]

    def render(self) -> str:
        head = ", ".join(f"{n} {what}" for what, n in self.checked.items())
        lines = [f"checked {head}"]
        if not self.problems:
            lines.append("no problems found")
        lines += [p.line(self.root) for p in self.problems]
        lines += self.actions
        return "\n".join(lines)


def _marker_problem(layout: StoreLayout) -> str | None:
    try:
        data = json.loads(layout.marker.read_text())
    except FileNotFoundError:
        return "negdb.json is missing"
    except (OSError, ValueError) as err:
        return f"negdb.json is unreadable ({one_line(err)})"
    if not isinstance(data, dict) or data.get("format") != FORMAT_VERSION:
        return f"negdb.json does not name format {FORMAT_VERSION}"
    return None


def _keys_of_path(layout: StoreLayout, path: Path) -> str:
    rel = path.relative_to(layout.table_dir("x").parent)
    parts = dict(p.split("=", 1) for p in rel.parts[1:-1] if "=" in p)
    table = rel.parts[0]
    what = f"the {table} rows of segment {rel.name}"
    if parts:
        what += " (" + ", ".join(f"{k} {unquote(v)}" for k, v in parts.items()) + ")"
    return what


_RESTORE = {
    "neuron_stats": "re-run the ingest of that checkpoint (`negdb ingest ... --checkpoints <revision>`) to compute "
                    "them again",
    "activations": "re-run the ingest with --activations to record the arrays again",
    "runs": "nothing to restore (a run's record; its results are elsewhere)",
}


def _check_segments(layout: StoreLayout, report: Report) -> list[Path]:
    from negdb.store.segments import list_segments

    bad = []
    tables = layout.root / "tables"
    n = 0
    for folder in sorted(p for p in tables.iterdir() if p.is_dir()) if tables.is_dir() else []:
        for path in list_segments(folder):
            n += 1
            problem = segment_problem(path)
            if problem is not None:
                bad.append(path)
                table = folder.name
                report.problems.append(Problem(
                    "damaged-segment", path, problem, _keys_of_path(layout, path),
                    _RESTORE.get(table, "re-run the command that wrote it (nothing else depends on the file)")))
    report.checked["segments"] = n
    return bad


def _check_duplicates(layout: StoreLayout, report: Report, skip: set[Path]) -> None:
    from negdb.store.segments import segment_listing

    listing = [e for e in segment_listing(layout.table_dir("neuron_stats")) if Path(e[0]) not in skip]
    con = duckdb.connect(":memory:")
    try:
        dups = duplicate_layers(con, listing)
    finally:
        con.close()
    for file, layers in sorted(dups.items()):
        report.problems.append(Problem(
            "duplicate-layers", Path(file), f"repeats layers {sorted(layers)} of an older segment",
            "nothing (the catalog shows the older rows once)", "rewrite the segment without them", sorted(layers)))


def _check_arrays(layout: StoreLayout, report: Report, full: bool) -> None:
    from negdb.store.arrays import verify_array

    acts = layout.root / "acts"
    arrays = sorted(p.parent for p in acts.rglob("zarr.json")
                    if p.parent != acts and _is_array(p)) if acts.is_dir() else []
    for path in arrays:
        try:
            verify_array(path, full=full, probe=True)
        except StoreDamaged as err:
            rel = path.relative_to(layout.root)
            what = (f"the token contexts of every layer of {rel.parent}" if path.name in ("token_ids", "window",
                                                                                          "position")
                    else f"the md pairs of {rel.parent}" if path.name == "pairs"
                    else f"the stored pre-activations {rel}" if rel.parent.name == "preact"
                    else f"the md inputs {rel}")
            report.problems.append(Problem("damaged-array", path, str(err).removeprefix("the stored "), what,
                                           "re-run the ingest of that checkpoint with --activations to store it "
                                           "again"))
    report.checked["arrays"] = len(arrays)


def _is_array(meta: Path) -> bool:
    try:
        return json.loads(meta.read_text()).get("node_type") == "array"
    except (OSError, ValueError):
        return True  # an unreadable zarr.json: verify_array names it


def _check_leftovers(layout: StoreLayout, report: Report) -> None:
    from negdb.store.duckfile import partial_files

    for folder in ("tables", "acts"):
        base = layout.root / folder
        for path in sorted(base.rglob("*.partial")) if base.is_dir() else []:
            report.problems.append(Problem("leftover", path, "a temporary file of an interrupted write",
                                           "nothing (never read)", "remove it"))
    for path in partial_files(layout.root):  # the views file's, from a rewrite cut short (store/duckfile.py)
        report.problems.append(Problem("leftover", path, "a temporary copy of the views file (negdb.duckdb) from an "
                                       "interrupted rewrite", "nothing (never read)", "remove it"))


def check(store: Path | str, *, full: bool = False) -> Report:
    """Every problem of the store at ``store``: its marker, every catalog segment (footer and row-group metadata),
    neuron_stats layers held twice, every stored array (all files present, the start of each decoded, small arrays'
    SHA-256; with ``full`` every chunk decoded and its CRC-32C checked) and leftovers of interrupted writes (in
    ``tables/``, ``acts/`` and the views file's temporary copies at the store's root).
    Changes nothing."""
    layout = StoreLayout(Path(store))
    if not layout.root.is_dir():
        raise StoreError(f"{layout.root} is not a folder: pass the store folder")
    report = Report(layout.root)
    marker = _marker_problem(layout)
    if marker is not None:
        report.problems.append(Problem("marker", layout.marker, marker, "every command (the store is refused)",
                                       f"write negdb.json with format {FORMAT_VERSION} if the folder is a store"))
    bad = _check_segments(layout, report)
    _check_duplicates(layout, report, set(bad))
    _check_arrays(layout, report, full)
    _check_leftovers(layout, report)
    return report


def _rewrite_without(layout: StoreLayout, path: Path, layers: list[int], stamp: str) -> None:
    """Replace a neuron_stats segment by one without ``layers`` (encoded as the writer's); the original goes to
    quarantine."""
    import pyarrow.compute as pc

    from negdb.store.segments import write_segment

    table = pq.read_table(path)
    col = table.column("layer")
    keep = table.filter(pc.invert(pc.is_in(col, pa.array(layers, col.type))))
    quarantine(layout, path, stamp)
    if keep.num_rows:
        write_segment(path, keep, scan=True)


def repair(store: Path | str, *, full: bool = False) -> Report:
    """:func:`check`, then fix what can be fixed without guessing: damaged segments, damaged arrays and leftovers
    are moved to ``quarantine/<time>/`` (nothing is deleted), segments repeating layers are rewritten without
    them. The report's ``actions`` say what moved and what was lost, with the command that restores it."""
    report = check(store, full=full)
    layout = StoreLayout(Path(store))
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    for p in report.problems:
        rel = p.path.relative_to(layout.root) if p.path.is_relative_to(layout.root) else p.path
        if p.kind in ("damaged-segment", "damaged-array"):
            dst = quarantine(layout, p.path, stamp)
            report.actions.append(f"quarantined {rel} -> {dst.relative_to(layout.root)}; lost: {p.affects}; "
                                  f"to restore: {p.repair}")
        elif p.kind == "duplicate-layers":
            _rewrite_without(layout, p.path, p.layers, stamp)
            report.actions.append(f"rewrote {rel} without layers {p.layers} (the older segment keeps them; the "
                                  f"original is in quarantine/{stamp}/); lost: nothing")
        elif p.kind == "leftover":
            p.path.unlink(missing_ok=True)
            report.actions.append(f"removed {rel}")
        elif p.kind == "marker":
            report.actions.append(f"left {rel} as it is: {p.repair}")
    if not report.problems:
        report.actions.append("nothing to repair")
    return report
