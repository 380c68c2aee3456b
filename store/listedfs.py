"""The filesystem a catalog registers on DuckDB for an object store: the store's, answering for listed segments.

DuckDB globs every path of a ``read_parquet([...])`` list when it binds a view (and again for each query). Through
a registered fsspec filesystem each glob is a call into fsspec's event loop, even when the answer is cached: at
10,000 segments that is seconds per view made. A catalog already knows which segments exist (its snapshot's
listing), so :class:`ListedFileSystem` answers a glob of a listed path at once and hands everything else
(reading, metadata, any other glob) to the store's own filesystem.
"""

from __future__ import annotations

from typing import Any

from fsspec import AbstractFileSystem
from fsspec.utils import stringify_path


class ListedFileSystem(AbstractFileSystem):
    """``fs`` (the store's fsspec filesystem), with ``glob`` of a path in :attr:`listed` answered without it."""

    cachable = False  # one per catalog, never shared through fsspec's instance cache

    def __init__(self, fs: AbstractFileSystem) -> None:
        super().__init__()
        self.fs = fs
        self.protocol = fs.protocol  # DuckDB routes the URLs of these protocols here
        self.listed: frozenset[str] = frozenset()
        """Paths (without protocol) of the segments of the catalog's snapshot."""

    def _strip_protocol(self, path: Any) -> str:  # type: ignore[override]
        return self.fs._strip_protocol(stringify_path(path))

    def glob(self, path: Any, maxdepth: int | None = None, **kwargs: Any) -> Any:
        stripped = self._strip_protocol(path)
        if stripped in self.listed and not kwargs.get("detail"):
            return [stripped]
        return self.fs.glob(path, maxdepth=maxdepth, **kwargs)

    def open(self, path: Any, mode: str = "rb", *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        return self.fs.open(path, mode, *args, **kwargs)

    def info(self, path: Any, **kwargs: Any) -> Any:
        return self.fs.info(path, **kwargs)

    def ls(self, path: Any, detail: bool = True, **kwargs: Any) -> Any:
        return self.fs.ls(path, detail=detail, **kwargs)

    def modified(self, path: Any) -> Any:
        return self.fs.modified(path)

    def size(self, path: Any) -> Any:
        return self.fs.size(path)

    def exists(self, path: Any, **kwargs: Any) -> bool:
        return bool(self._strip_protocol(path) in self.listed or self.fs.exists(path, **kwargs))

    def isdir(self, path: Any) -> bool:
        return bool(self.fs.isdir(path))

    def isfile(self, path: Any) -> bool:
        return bool(self._strip_protocol(path) in self.listed or self.fs.isfile(path))

    def __getattr__(self, name: str) -> Any:  # anything else DuckDB may call: the store's filesystem
        if name == "fs":  # not set yet (during AbstractFileSystem.__init__)
            raise AttributeError(name)
        return getattr(self.fs, name)
