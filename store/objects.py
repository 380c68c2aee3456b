"""A store as a set of named objects: list, read, create-if-absent, replace.

The publish protocol needs only these four operations: a segment is *created if absent* (the first writer wins)
and a run record is *replaced*. On a local folder, creation is a flushed temporary file hard-linked into place
(:func:`negdb.store.segments.atomic_write_bytes`). Copying between stores (:mod:`negdb.store.merge`) is written
against this interface, so that other backends (object storage) plug in without touching it.
"""

from __future__ import annotations

import os
from pathlib import Path

from negdb.store.segments import atomic_write_bytes


class LocalObjects:
    """The objects of a store folder; names are '/'-separated paths relative to the store root."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"LocalObjects({str(self.root)!r})"

    def path(self, name: str) -> Path:
        return self.root / name

    def list(self, prefix: str) -> list[str]:
        """Published objects under ``prefix`` (temporary ``.``-files excluded), sorted."""
        base = self.root / prefix
        if not base.is_dir():
            return []
        out = []
        for dirpath, _, files in os.walk(base):
            for f in files:
                if not f.startswith("."):
                    out.append(str((Path(dirpath) / f).relative_to(self.root)).replace(os.sep, "/"))
        return sorted(out)

    def exists(self, name: str) -> bool:
        return (self.root / name).is_file()

    def read(self, name: str) -> bytes:
        return (self.root / name).read_bytes()

    def size(self, name: str) -> int:
        return (self.root / name).stat().st_size

    def put_new(self, name: str, data: bytes) -> bool:
        """Create ``name`` with ``data`` unless it exists (atomic); True if this call created it."""
        return atomic_write_bytes(self.root / name, data, exclusive=True)

    def replace(self, name: str, data: bytes) -> None:
        atomic_write_bytes(self.root / name, data)


def is_url(store: str | Path) -> bool:
    """Whether ``store`` names an fsspec URL (``s3://bucket/prefix``, ``memory://x``) rather than a folder."""
    text = str(store)
    return "://" in text and not text.startswith("file://")


class FsspecObjects:
    """The objects of a store at an fsspec URL (S3 and others).

    ``put_new`` is a conditional write (S3: ``PUT`` with ``If-None-Match: *``, through s3fs's ``mode="create"``):
    of two writers of one name exactly one succeeds, with no rename and no lock. Objects are written whole.
    """

    def __init__(self, url: str, **storage_options: object) -> None:
        import fsspec

        self.url = url.rstrip("/")
        self.fs, self.base = fsspec.core.url_to_fs(self.url, **storage_options)
        self.base = self.base.rstrip("/")
        self.protocol = self.url.split("://", 1)[0]

    def __repr__(self) -> str:
        return f"FsspecObjects({self.url!r})"

    def full(self, name: str) -> str:
        """The object's path as the filesystem names it (no protocol)."""
        return f"{self.base}/{name}"

    def uri(self, name: str) -> str:
        """The object's URL (with the protocol), as DuckDB and zarr open it."""
        return f"{self.protocol}://{self.full(name)}"

    def list(self, prefix: str) -> list[str]:
        return [name for name, _ in self.listing(prefix)]

    def listing(self, prefix: str) -> list[tuple[str, dict]]:
        """(name, details) of the published objects under ``prefix``, sorted by name (never a cached listing)."""
        self.forget(prefix)
        try:
            found = self.fs.find(self.full(prefix), detail=True)
        except FileNotFoundError:
            return []
        cut = len(self.base) + 1
        out = []
        for path, info in found.items():
            name = path[cut:] if path.startswith(self.base + "/") else path
            if not name.rsplit("/", 1)[-1].startswith(".") and info.get("type", "file") != "directory":
                out.append((name, info))
        return sorted(out, key=lambda e: e[0])

    def forget(self, prefix: str) -> None:
        """Drop the filesystem's cached listings of ``prefix`` and of every folder below it.

        ``invalidate_cache`` drops a path and its parents only, and s3fs's ``find`` refills just the folders not
        cached yet: a folder listed before another process published into it would keep hiding the new objects
        (and DuckDB's opens through this filesystem would fail on them with FileNotFoundError).
        """
        full = self.full(prefix)
        self.fs.invalidate_cache(full)
        cache = getattr(self.fs, "dircache", None)
        if cache is not None:
            for key in [k for k in list(cache) if str(k).startswith(full.rstrip("/") + "/")]:
                cache.pop(key, None)

    def exists(self, name: str) -> bool:
        self.fs.invalidate_cache(self.full(name))
        return bool(self.fs.exists(self.full(name)))

    def read(self, name: str) -> bytes:
        return self.fs.cat_file(self.full(name))

    def size(self, name: str) -> int:
        return int(self.fs.size(self.full(name)))

    def put_new(self, name: str, data: bytes) -> bool:
        """Create ``name`` unless it exists (a conditional PUT); True if this call created it."""
        try:
            self.fs.pipe_file(self.full(name), data, mode="create")
            return True
        except (FileExistsError, OSError) as err:
            if self.exists(name):  # the condition failed: another writer was first
                return False
            raise err
        except TypeError:  # a filesystem without mode="create": check, then write (not atomic)
            if self.exists(name):
                return False
            self.fs.pipe_file(self.full(name), data)
            return True

    def replace(self, name: str, data: bytes) -> None:
        self.fs.pipe_file(self.full(name), data)

    def delete_prefix(self, prefix: str) -> None:
        self.delete(self.list(prefix))

    def delete(self, names: list[str]) -> None:
        """Remove the objects ``names`` (one batch request on S3)."""
        if names:
            self.fs.rm([self.full(n) for n in names])


def objects_for(store: str | Path) -> LocalObjects | FsspecObjects:
    """The objects of a store folder or URL."""
    return FsspecObjects(str(store)) if is_url(store) else LocalObjects(Path(store).expanduser())
