"""negdb: a neuron-statistics database for language-model interpretability.

The Python API mirrors the CLI::

    from negdb.ingest import ingest          # fill a store (negdb ingest)
    import negdb
    cat = negdb.connect("negdb-store")       # query its catalog with SQL (polars / Arrow results)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from negdb.errors import (BadArgument, BadQuery, ModelLoadError, NegdbError, NotEnoughDisk, NotFound,
                          QueryTimeout, QueryTooLarge, StoreConflict, StoreDamaged, StoreError, UnknownModel)

__version__ = "0.1.0"
__all__ = ["BadArgument", "BadQuery", "ModelLoadError", "NegdbError", "NotEnoughDisk", "NotFound", "QueryTimeout",
           "QueryTooLarge", "StoreConflict", "StoreDamaged", "StoreError", "UnknownModel", "__version__", "connect"]

if TYPE_CHECKING:  # pragma: no cover
    from negdb.store.catalog import Catalog


def connect(path: str | None = None) -> "Catalog":
    """Open the catalog of the store at ``path`` (default: ``$NEGDB_STORE`` or ``./negdb-store``)."""
    from negdb.config import store_path
    from negdb.store.catalog import Catalog

    return Catalog(store_path(path))
