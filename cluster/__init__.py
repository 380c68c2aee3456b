"""negdb.cluster: fan-out of ingest and evaluation grids on Dask (a local cluster, a scheduler, or Slurm jobs).

``negdb.cluster.run(spec, store, Executor(...))`` runs a typed spec (``IngestSpec``, ``AblateSpec``, ``SweepSpec``,
``TrainingSpec``) as tasks on the executor; ``negdb.open(store).run(spec, executor=...)`` and the commands'
``--executor`` are its other forms.
"""

from __future__ import annotations

from negdb.cluster.drivers import run
from negdb.cluster.executor import EXECUTORS, Executor, open_client, slurm_cluster

__all__ = ["EXECUTORS", "Executor", "open_client", "run", "slurm_cluster"]
