"""Where fanned-out work runs: this process, a Dask cluster, or Slurm jobs through dask-jobqueue.

:class:`Executor` is what ``--executor local|dask|slurm`` and its options say (an option group, like
:class:`negdb.ingest.plan.Resources`: never part of a key); :func:`open_client` yields a ``distributed.Client``
for it (``None`` for ``local``: the serial path in this process):

- ``dask`` with ``workers`` and neither ``address`` nor ``scheduler_file``: a ``LocalCluster`` of that many
  single-threaded worker processes bound to 127.0.0.1, without a dashboard (with one ``GPU`` resource each when
  this machine has as many CUDA devices);
- ``dask`` with ``address`` (``tcp://host:8786``) or ``scheduler_file``: a running scheduler;
- ``slurm``: a ``dask_jobqueue.SLURMCluster`` (partition, account, walltime, memory, cores, ``gpus_per_job`` as
  ``--gres=gpu:N`` and a worker ``GPU`` resource) scaled to ``workers`` jobs.

GPU tasks ask for the ``GPU`` resource when the cluster's workers declare it (:func:`gpu_resources`).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from negdb.errors import BadArgument
from negdb.values import as_int

EXECUTORS = ("local", "dask", "slurm")
_WALLTIME = re.compile(r"^(\d+-)?\d{1,2}(:\d{2}){0,2}$")


@dataclass(frozen=True)
class Executor:
    """Where a command's work runs (see the module docstring); validated on construction (:class:`BadArgument`).

    Attributes:
        kind: ``local`` (this process, the default), ``dask`` or ``slurm``.
        address, scheduler_file: a running Dask scheduler (``kind="dask"``; at most one of them).
        workers: local-cluster worker processes (default 2) or Slurm jobs (default 1).
        gpus_per_job, partition, account, walltime, memory, cores, python, job_prologue: the Slurm job
            (``kind="slurm"``): ``--gres=gpu:N``, ``-p``, ``-A``, ``-t``, ``--mem``, ``--cpus-per-task``, the
            worker's Python, shell lines run before it (``module load cuda``).
    """

    kind: str = "local"
    address: str | None = None
    scheduler_file: str | None = None
    workers: int | None = None
    gpus_per_job: int = 0
    partition: str | None = None
    account: str | None = None
    walltime: str = "04:00:00"
    memory: str = "32GB"
    cores: int = 4
    python: str | None = None
    job_prologue: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in EXECUTORS:
            raise BadArgument(f"--executor must be one of {', '.join(EXECUTORS)}, got {self.kind!r}")
        if self.address and self.scheduler_file:
            raise BadArgument("--address and --scheduler-file name the same thing: give one")
        if self.kind != "dask" and (self.address or self.scheduler_file):
            raise BadArgument("--address and --scheduler-file go with --executor dask")
        object.__setattr__(self, "workers", as_int(self.workers, "--workers", minimum=1, optional=True))
        object.__setattr__(self, "gpus_per_job", as_int(self.gpus_per_job, "--gpus-per-job", minimum=0))
        object.__setattr__(self, "cores", as_int(self.cores, "--job-cores", minimum=1))
        if self.kind != "slurm" and (self.partition or self.account or self.gpus_per_job):
            raise BadArgument("--partition, --account and --gpus-per-job go with --executor slurm")
        if not _WALLTIME.match(str(self.walltime)):
            raise BadArgument(f"--walltime {self.walltime!r}: use [D-]HH:MM:SS")
        if isinstance(self.job_prologue, str):
            object.__setattr__(self, "job_prologue", (self.job_prologue,))
        object.__setattr__(self, "job_prologue", tuple(str(x) for x in self.job_prologue))

    @property
    def fanned_out(self) -> bool:
        return self.kind != "local"


def slurm_cluster(spec: Executor, **scheduler: Any) -> Any:
    """A ``SLURMCluster`` for ``spec`` (no job is submitted until it is scaled; ``job_script()`` shows one)."""
    from dask_jobqueue import SLURMCluster

    directives = [f"--gres=gpu:{spec.gpus_per_job}"] if spec.gpus_per_job else []
    worker_args = ["--resources", f"GPU={spec.gpus_per_job}"] if spec.gpus_per_job else []
    kw: dict[str, Any] = dict(queue=spec.partition, account=spec.account, walltime=spec.walltime,
                              memory=spec.memory, cores=spec.cores, processes=1, job_name="negdb",
                              job_extra_directives=directives, worker_extra_args=worker_args,
                              job_script_prologue=list(spec.job_prologue),
                              scheduler_options={"dashboard_address": None, **scheduler})
    if spec.python:
        kw["python"] = spec.python
    return SLURMCluster(**kw)


def _local_cluster(workers: int) -> Any:
    from distributed import LocalCluster

    gpus = 0
    with contextlib.suppress(Exception):
        import torch

        gpus = torch.cuda.device_count()
    resources = {"GPU": 1} if gpus >= workers else None
    return LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                        dashboard_address=None, resources=resources)


@contextlib.contextmanager
def open_client(spec: Executor) -> Iterator[Any]:
    """A ``distributed.Client`` for ``spec`` (closed, with any cluster it started, on exit); ``None`` if local."""
    if spec.kind == "local":
        yield None
        return
    from distributed import Client

    if spec.kind == "dask" and (spec.address or spec.scheduler_file):
        try:
            client = (Client(scheduler_file=spec.scheduler_file, timeout="30s") if spec.scheduler_file else
                      Client(spec.address, timeout="30s"))
        except (OSError, TimeoutError, ValueError) as err:
            raise BadArgument(f"no Dask scheduler at {spec.address or spec.scheduler_file}: {err}") from None
        try:
            yield client
        finally:
            client.close()
        return
    cluster = _local_cluster(spec.workers or 2) if spec.kind == "dask" else slurm_cluster(spec)
    try:
        if spec.kind == "slurm":
            cluster.scale(jobs=spec.workers or 1)
        client = Client(cluster)
        try:
            yield client
        finally:
            client.close()
    finally:
        cluster.close()


def gpu_resources(client: Any) -> dict[str, float] | None:
    """``{"GPU": 1}`` when the cluster's workers declare a GPU resource (tasks then ask for one), else ``None``."""
    info = client.scheduler_info()
    workers = info.get("workers", {}).values()
    if any(w.get("resources", {}).get("GPU") for w in workers):
        return {"GPU": 1}
    return None
