"""The units of fanned-out work: each loads its model at most once and writes only to the store.

Every job takes typed values (the command's spec, restricted to its unit of work) and is idempotent: the store's
first-writer-wins segments, per-checkpoint and per-evaluation locks and resumable work folders make a repeated or
retried job find its work done or resume it, so a duplicate submission or a retry after a dead worker never
stores anything twice.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from negdb.cluster.fanout import Outcome, timed


def _tame_threads() -> None:
    """One Dask worker thread per process: let torch use the process's share of the cores, no more."""
    import os

    import torch

    n = int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
    if n > 0:
        torch.set_num_threads(n)


def ingest_job(key: str, spec: Any, store: str, resources: Any) -> Outcome:
    """Ingest one checkpoint: ``spec`` is an :class:`~negdb.ingest.plan.IngestSpec` whose ``checkpoints`` name
    exactly one revision and whose ``activations`` are resolved (not ``auto``)."""
    from negdb.ingest.pipeline import ingest

    def body(log):
        _tame_threads()
        (result,) = ingest(spec, store=store, resources=resources, progress=False, log=log)
        return result.status, result

    return timed(key, body)


def sweep_job(key: str, spec: Any, store: str, points: list[Any], device: str) -> Outcome:
    """Evaluate the grid ``points`` of a :class:`~negdb.sweep.grid.SweepSpec` on every seed (not published)."""
    from negdb.sweep.runner import run_points

    def body(log):
        _tame_threads()
        computed, reused = run_points(spec, store, points, device=device, log=log)
        return ("computed" if computed else "stored"), (computed, reused)

    return timed(key, body)


def ablate_job(key: str, spec: Any, store: str, device: str) -> Outcome:
    """Evaluate every condition of an :class:`~negdb.ablate.options.AblateSpec` (its ``evals`` one chunk of the
    experiment's benchmarks) without recording the experiment. ``detail``: (computed, reused, probes computed)."""
    from negdb.ablate.experiment import run

    def body(log):
        _tame_threads()
        exp = run(spec, store, device=device, progress=False, log=log, record=False)
        return ("computed" if exp.computed else "stored"), (exp.computed, exp.reused, exp.probes)

    return timed(key, body)


def ablate_search_job(key: str, spec: Any, store: str, device: str) -> Outcome:
    """The perplexity-matched control search of an :class:`~negdb.ablate.options.AblateSpec`, alone (its probes
    stored for the benchmark tasks that follow it). ``detail``: the probe perplexities computed."""
    from negdb.ablate.experiment import search

    def body(log):
        _tame_threads()
        probes = search(spec, store, device=device, progress=False, log=log)
        return ("computed" if probes else "stored"), probes

    return timed(key, body)


def training_job(key: str, spec: Any, store: str, revision: str, activations: Any, resources: Any) -> Outcome:
    """One checkpoint of a :class:`~negdb.analyze.training.TrainingSpec`: ingest it, save its top set, and run
    its ablation experiment (as the serial analysis does, which then finds all of it stored)."""
    from negdb.ablate.controls import save_auto
    from negdb.ablate.experiment import run as ablate
    from negdb.ingest.pipeline import ingest
    from negdb.query import sets as setlib
    from negdb.store.catalog import Catalog
    from negdb.values import k_text

    def body(log):
        _tame_threads()
        one = replace(spec.ingest, checkpoints=(revision,), activations=activations)
        (r,) = ingest(one, store=store, resources=resources, progress=False, log=log)
        with Catalog(store) as cat:
            ns = save_auto(cat, setlib.select(cat, r.model_id, r.revision, top=k_text(spec.top), by=spec.by,
                                              slice_id=r.slice_id, spec_id=r.spec_id))
        status = r.status
        if spec.ablates:
            exp = ablate(spec.ablate_spec(r.model_id, r.revision, ns.name), store, device=resources.device,
                         progress=False, log=log)
            status = f"{status}, {exp.computed} evaluation(s) computed"
        return status, r

    return timed(key, body)
