"""Many stores, one catalog: ``negdb merge SRC... --into DST`` and ``negdb export --results``.

Merging copies every published segment and activation array of the sources that the destination lacks. It is
idempotent and safe to interrupt, and it follows the store's publish protocol:

- arrays first: each Zarr array's chunk files, then its ``zarr.json`` (an array whose metadata exists is
  complete; one the destination already has is left alone: the first writer wins);
- then the segments, detail tables before the rows that make them visible (``neuron_stats`` after
  ``activations``, ``eval_results`` / ``analyses`` / ``ablations`` / ``neuron_sets`` after their details), each
  created only if absent;
- run records last; a run record is a mutable state, so the newer one (``updated_at``) is kept.

A segment the destination already has under the same name with other bytes is compared by content: equal rows
but for provenance columns (``run_id``, ``created_at``, ...: the same result computed by two workers) count as a
duplicate and are skipped; anything else is a conflict, reported (:class:`negdb.errors.StoreConflict`), never
overwritten.
"""

from __future__ import annotations

import io
import json
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from negdb.errors import BadArgument, StoreConflict, StoreError
from negdb.store.layout import FORMAT_VERSION, StoreLayout
from negdb.store.objects import FsspecObjects, LocalObjects, is_url, objects_for

Objects = LocalObjects | FsspecObjects

PROVENANCE = frozenset({"run_id", "created_at", "updated_at", "seconds", "host", "pid"})
"""Columns that say who computed a row and when, not what it is (ignored when telling a duplicate)."""
HEAD_TABLES = ("neuron_stats", "neuron_sets", "eval_results", "ablations", "analyses")
"""Tables whose rows make other rows visible: copied after every detail table, in this order."""


@dataclass
class MergeReport:
    """What a merge did: object names copied, already present (same bytes or same content), in conflict."""

    copied: list[str] = field(default_factory=list)
    same: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    conflicts: list[tuple[str, str]] = field(default_factory=list)  # (name, why)
    runs_updated: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)  # acts groups of the source that a publication covered

    def summary(self) -> str:
        return (f"{len(self.copied)} object(s) copied, {len(self.same)} already there, {len(self.duplicates)} "
                f"duplicate segment(s) skipped, {len(self.runs_updated)} run record(s) updated, "
                f"{len(self.conflicts)} conflict(s)")


def _table_of(name: str) -> str:
    return name.split("/")[1]


def _segment_order(names: list[str]) -> list[str]:
    def key(name: str) -> tuple[int, str]:
        table = _table_of(name)
        if table == "runs":
            return (len(HEAD_TABLES) + 1, name)
        return (HEAD_TABLES.index(table) + 1 if table in HEAD_TABLES else 0, name)

    return sorted(names, key=key)


def _content(data: bytes) -> pa.Table:
    table = pq.read_table(io.BytesIO(data))
    return table.drop_columns([c for c in table.column_names if c in PROVENANCE])


def _newer_run(new: bytes, old: bytes) -> bool:
    def updated(data: bytes):
        return pq.read_table(io.BytesIO(data), columns=["updated_at"]).column(0)[0].as_py()

    try:
        return updated(new) > updated(old)
    except (pa.ArrowException, IndexError, KeyError, TypeError):
        return False


def _arrays(src: Objects, names: list[str]) -> dict[str, list[str]]:
    """Zarr node folder -> its files, for the nodes under ``acts/`` (metadata ``zarr.json`` last)."""
    nodes: dict[str, list[str]] = {}
    metas = {n.rsplit("/", 1)[0] for n in names if n.endswith("/zarr.json")}
    for name in names:
        folder = name.rsplit("/", 1)[0]
        node = folder
        while node not in metas and "/" in node:  # chunk files sit in <array>/c/<i>/<j>
            node = node.rsplit("/", 1)[0]
        nodes.setdefault(node, []).append(name)
    for files in nodes.values():
        files.sort(key=lambda n: (n.endswith("/zarr.json"), n))
    return nodes


def _copy_arrays(src: Objects, dst: Objects, report: MergeReport) -> None:
    names = src.list("acts")
    for node, files in sorted(_arrays(src, names).items()):
        meta = f"{node}/zarr.json"
        if dst.exists(meta):
            if meta in files and json.loads(src.read(meta)).get("shape") != json.loads(dst.read(meta)).get("shape"):
                report.conflicts.append((node, "an array of another shape is stored under this name"))
            else:
                report.same.append(node)
            continue
        for name in files:  # chunks first, metadata last: a visible array is whole
            if name == meta:
                dst.put_new(name, src.read(name))
            else:
                dst.replace(name, src.read(name))
        report.copied.append(node)


def _copy_segment(src: Objects, dst: Objects, name: str, report: MergeReport) -> None:
    data = src.read(name)
    if dst.put_new(name, data):
        report.copied.append(name)
        return
    old = dst.read(name)
    if old == data:
        report.same.append(name)
    elif _table_of(name) == "runs":
        if _newer_run(data, old):
            dst.replace(name, data)
            report.runs_updated.append(name)
        else:
            report.same.append(name)
    else:
        try:
            dup = _content(data).equals(_content(old))
        except pa.ArrowException:
            dup = False
        if dup:
            report.duplicates.append(name)
        else:
            report.conflicts.append((name, "a segment with this key but other content is already stored"))


def open_store(store: str | Path, *, create: bool = False) -> Objects:
    """The objects of a store folder or URL; refuses one that is not a negdb store (unless ``create``)."""
    if not is_url(store):
        layout = StoreLayout(Path(store).expanduser())
        if not layout.marker.exists() and not create:
            raise StoreError(f"{store} is not a negdb store (no negdb.json): pass store folders or URLs")
        layout.init()  # refuses another format
        return LocalObjects(layout.root)
    objects = objects_for(store)
    marker = json.dumps({"format": FORMAT_VERSION}).encode()
    if create:
        objects.put_new("negdb.json", marker)
    if not objects.exists("negdb.json"):
        raise StoreError(f"{store} is not a negdb store (no negdb.json): pass store folders or URLs")
    fmt = json.loads(objects.read("negdb.json")).get("format")
    if fmt != FORMAT_VERSION:
        raise StoreError(f"{store} holds a negdb store of format {fmt}; this negdb reads format {FORMAT_VERSION}")
    return objects


def merge(sources: list[str | Path], into: str | Path, *, arrays: bool = True,
          skip_tables: frozenset[str] = frozenset(), strict: bool = True) -> MergeReport:
    """Copy what ``into`` lacks from each source store, folders or URLs (see the module docstring).

    With ``strict`` a conflict raises :class:`StoreConflict` after everything else is copied.
    """
    for source in sources:
        open_store(source)
    dst = open_store(into, create=True)
    report = MergeReport()
    for source in sources:
        if str(source).rstrip("/") == str(into).rstrip("/") or (
                not is_url(source) and not is_url(into) and Path(source).resolve() == Path(into).resolve()):
            continue
        src = open_store(source)
        if arrays:
            _copy_arrays(src, dst, report)
        names = [n for n in src.list("tables") if _table_of(n) not in skip_tables]
        for name in _segment_order(names):
            _copy_segment(src, dst, name, report)
    if strict and report.conflicts:
        first = "; ".join(f"{n}: {why}" for n, why in report.conflicts[:3])
        more = f" (and {len(report.conflicts) - 3} more)" if len(report.conflicts) > 3 else ""
        raise StoreConflict(f"{len(report.conflicts)} conflict(s), kept the destination's: {first}{more}; "
                            f"everything else was merged ({report.summary()})")
    return report


def export_results(store: str | Path, out: str | Path) -> MergeReport:
    """A bundle of everything but activations (``negdb export --results``): a store folder without arrays and
    without the ``activations`` table, or a ``.tar.gz`` of one when ``out`` ends so."""
    out = Path(out)
    if out.name.endswith((".tar.gz", ".tgz")):
        with tempfile.TemporaryDirectory(dir=out.parent if out.parent.exists() else None) as tmp:
            bundle = Path(tmp) / out.name.removesuffix(".gz").removesuffix(".tar").removesuffix(".tgz")
            report = merge([store], bundle, arrays=False, skip_tables=frozenset({"activations"}))
            partial = out.with_name(f".{out.name}.partial")
            with tarfile.open(partial, "w:gz") as tar:
                tar.add(bundle, arcname=bundle.name)
            partial.replace(out)
        return report
    if out.exists() and any(out.iterdir()) and not (out / "negdb.json").exists():
        raise BadArgument(f"{out} exists and is not a negdb store: pass a new folder or a .tar.gz name")
    return merge([store], out, arrays=False, skip_tables=frozenset({"activations"}))


def _group_of(array_path: str) -> str:
    """The acts group of a stored layer array (``acts/<m>/<r>/<slice>[/<publication>]``)."""
    return array_path.split("/preact/", 1)[0]


def _of_job(src: Objects, name: str, job: tuple[str, str] | None) -> bool:
    """Whether the segment ``name`` holds rows of the checkpoint ``job`` = (model_id, revision), or has no such
    columns (models, slices, stat_specs: shared metadata); every segment when ``job`` is None."""
    if job is None:
        return True
    if "/model_id=" in name:  # neuron_stats: hive folders name the checkpoint
        from urllib.parse import unquote

        parts = dict(p.split("=", 1) for p in name.split("/") if "=" in p)
        return (unquote(parts.get("model_id", "")), unquote(parts.get("revision", ""))) == job
    schema = pq.read_schema(io.BytesIO(src.read(name)))
    if "model_id" not in schema.names or "revision" not in schema.names:
        return True
    rows = pq.read_table(io.BytesIO(src.read(name)), columns=["model_id", "revision"]).to_pylist()
    return any((r["model_id"], r["revision"]) == job for r in rows)


def publish(scratch: str | Path, into: str | Path, *, job: tuple[str, str] | None = None,
            fail_after_arrays: bool = False) -> MergeReport:
    """Publish a local store's results to an object store without renames (``negdb ingest --store s3://...``).

    Each job's arrays are uploaded under a prefix unique to this publication (``<acts group>/<publication>/``,
    whole objects: chunk and shard files, then each array's ``zarr.json``), and become visible only through the
    ``activations`` segment naming them, created with a conditional PUT. A job someone else published first keeps
    theirs: this publication's prefix is deleted again. A publication killed midway leaves only an unreferenced
    prefix (``negdb gc`` removes it) and no visible row; the rest is :func:`merge`'s segment copy.

    ``job`` = (model_id, revision): publish only that checkpoint's segments (and the shared metadata), so that
    several processes publishing from one staging store never publish each other's unfinished work.
    """
    import uuid

    src = open_store(scratch)
    dst = open_store(into, create=True)
    report = MergeReport()
    for name in src.list("tables/activations"):
        if not _of_job(src, name, job):
            continue
        table = pq.read_table(io.BytesIO(src.read(name)))
        groups = sorted({_group_of(p) for p in table.column("array_path").to_pylist()})
        report.groups.extend(groups)
        if dst.exists(name):
            report.same.append(name)
            continue
        pub = uuid.uuid4().hex[:12]
        moved = {g: f"{g}/{pub}" for g in groups}
        for g in groups:
            files = src.list(g)
            for f in sorted(files, key=lambda n: (n.endswith("zarr.json"), -n.count("/"), n)):
                dst.replace(moved[g] + f[len(g):], src.read(f))
        if fail_after_arrays:
            raise RuntimeError("publication stopped after the arrays (test hook)")
        paths = [moved[_group_of(p)] + p[len(_group_of(p)):] for p in table.column("array_path").to_pylist()]
        table = table.set_column(table.column_names.index("array_path"), "array_path", pa.array(paths))
        buf = io.BytesIO()
        pq.write_table(table, buf, compression="zstd")
        if dst.put_new(name, buf.getvalue()):
            report.copied.append(name)
        else:  # another worker published this job first: ours is not referenced, remove it
            for g in groups:
                dst.delete_prefix(moved[g])  # type: ignore[union-attr]
            report.duplicates.append(name)
    names = [n for n in src.list("tables") if _table_of(n) != "activations" and _of_job(src, n, job)]
    for name in _segment_order(names):
        _copy_segment(src, dst, name, report)
    return report


def gc(store: str | Path, *, grace_s: float = 3600.0, dry_run: bool = False) -> list[str]:
    """Remove from an object store what nothing uses once older than ``grace_s``: array prefixes that no
    ``activations`` row names (publications that lost a race or were killed) and leases no one holds
    (``leases/<key>``: :func:`negdb.store.lease.finished`). Returns the prefixes removed (or, with ``dry_run``,
    found), array prefixes first."""
    import time

    from negdb.store.catalog import Catalog
    from negdb.store.lease import PREFIX as LEASES
    from negdb.store.lease import finished

    objects = open_store(store)
    if not isinstance(objects, FsspecObjects):
        return []
    with Catalog(str(store)) as cat:
        referenced = set(cat.arrow("SELECT DISTINCT array_path FROM activations").column(0).to_pylist())
    groups = {_group_of(p) for p in referenced}
    newest: dict[str, float] = {}
    for name, info in objects.listing("acts"):
        prefix = "/".join(name.split("/")[:5])  # acts/<model>/<revision>/<slice>/<publication>
        when = info.get("LastModified") or info.get("mtime") or info.get("created")
        stamp = when.timestamp() if hasattr(when, "timestamp") else float(when or 0)
        newest[prefix] = max(newest.get(prefix, 0.0), stamp)
    now = time.time()
    stale = sorted(p for p, t in newest.items() if p not in groups and now - t >= grace_s)
    leases = finished(objects, grace_s=grace_s)
    if not dry_run:
        for prefix in stale:
            objects.delete_prefix(prefix)
        for names in leases.values():
            objects.delete(names)
    return stale + [f"{LEASES}/{key}" for key in leases]
