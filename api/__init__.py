"""negdb: a neuron-statistics database for language-model interpretability.

The typed Python API (every ``negdb`` command is a thin parser over one of these calls)::

    import negdb
    db = negdb.open("negdb-store")
    db.ingest("smollm2-135m", tokens=16_384)
    w = db.select("smollm2-135m", top=0.01, by="w_dist")          # a Selection: polars frame + keys + hash
    res = db.ablate(w, mode="neg", evals=["ppl", "blimp"], controls=["random"], seeds=3)
    res.frame()                                                   # condition, benchmark, metric, value, delta, CI
    with negdb.intervene(hf_model, w, mode="neg"):                # any live HF causal LM of a known family
        ...

Everything below is imported on first use (``import negdb`` loads no torch): ``open``/``Database``,
``intervene``, ``load`` (a model as negdb loads it), ``connect`` (the catalog), the option groups (``SetSpec``,
``Controls``, ``Sampling``, ``Limits``, ``Scoring``, ``Bootstrap``, ``IngestSpec``, ``Resources``, ``Executor``)
and specs (``AblateSpec``, ``SweepSpec``, ``LayersSpec``, ``PosSpec``, ``TrainingSpec``, ``PairsSpec``), the
intervention registry (``register_intervention``, ``Intervention``, ``make_intervention``, ``modes``) and the errors.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from negdb.errors import (BadArgument, BadQuery, ModelLoadError, NegdbError, NotEnoughDisk, NotFound,
                          QueryTimeout, QueryTooLarge, StoreConflict, StoreDamaged, StoreError, UnknownModel)

__version__ = "0.1.0"

_LAZY = {
    "open": "negdb.database", "Database": "negdb.database",
    "intervene": "negdb.hooks", "load": "negdb.hooks",
    "SetSpec": "negdb.query.setspec",
    "Controls": "negdb.ablate.options", "ControlKind": "negdb.ablate.options", "AblateSpec": "negdb.ablate.options",
    "Sampling": "negdb.evals.options", "Limits": "negdb.evals.options", "Scoring": "negdb.evals.options",
    "BosPolicy": "negdb.evals.options", "Bootstrap": "negdb.evals.options",
    "IngestSpec": "negdb.ingest.plan", "Resources": "negdb.ingest.plan", "Executor": "negdb.cluster.executor",
    "SweepSpec": "negdb.sweep.grid", "LayersSpec": "negdb.analyze.layers", "PosSpec": "negdb.analyze.pos",
    "TrainingSpec": "negdb.analyze.training", "PairsSpec": "negdb.analyze.pairs",
    "Intervention": "negdb.ablate.interventions", "register_intervention": "negdb.ablate.interventions",
    "make_intervention": "negdb.ablate.interventions", "modes": "negdb.ablate.interventions",
}
"""Public name -> the module defining it (imported on first use)."""

__all__ = ["BadArgument", "BadQuery", "ModelLoadError", "NegdbError", "NotEnoughDisk", "NotFound", "QueryTimeout",
           "QueryTooLarge", "StoreConflict", "StoreDamaged", "StoreError", "UnknownModel", "__version__", "connect",
           *_LAZY]

if TYPE_CHECKING:  # pragma: no cover
    from negdb.store.catalog import Catalog


def __getattr__(name: str) -> Any:
    where = _LAZY.get(name)
    if where is None:
        raise AttributeError(f"module 'negdb' has no attribute {name!r}")
    value = getattr(importlib.import_module(where), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


def connect(path: str | None = None) -> "Catalog":
    """Open the catalog of the store at ``path`` (default: ``$NEGDB_STORE`` or ``./negdb-store``), a folder or an
    fsspec URL (``s3://bucket/prefix``: read through DuckDB with the filesystem registered on the connection)."""
    from negdb.config import store_path
    from negdb.store.catalog import Catalog
    from negdb.store.objects import is_url

    return Catalog(path if path is not None and is_url(path) else store_path(path))
