"""Fanned-out ``negdb ingest``, ``negdb ablate``, ``negdb sweep`` and ``negdb analyze training``.

Each driver takes the command's typed spec, splits it into units of work that load a model once (the same spec
restricted to one checkpoint, grid point or benchmark: :mod:`negdb.cluster.jobs`), runs them on the executor
(:func:`negdb.cluster.fanout.run_tasks`), then runs the command's own serial path, which finds every ingest and
evaluation stored and only assembles, compares and records: so a fanned-out run stores exactly what a serial one
stores, and returns the serial one's result.

- ingest: one task per checkpoint still to ingest (the plan and the disk check run here first);
- sweep: one task per grid point (all its seeds; the main sets are saved here first);
- ablate: one task per benchmark (every condition of the experiment on it);
- analyze training: one task per checkpoint (its ingest, its top set and its ablation experiment).
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from negdb.cluster import jobs
from negdb.cluster.executor import Executor, open_client
from negdb.cluster.fanout import Log, Task, run_tasks
from negdb.config import store_path
from negdb.errors import BadArgument
from negdb.store.layout import StoreLayout, short_hash


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run(spec: Any, store: str | Path | None, executor: Executor, *, device: str = "auto", resources: Any = None,
        progress: bool = True, log: Log = _stderr) -> Any:
    """Run the typed ``spec`` (``IngestSpec``, ``AblateSpec``, ``SweepSpec`` or ``TrainingSpec``) on ``executor``;
    returns what the serial path returns. ``resources``: the ingests' (default: ``Resources(device=device)``)."""
    from negdb.ablate.options import AblateSpec
    from negdb.analyze.training import TrainingSpec
    from negdb.ingest.plan import IngestSpec, Resources
    from negdb.sweep.grid import SweepSpec

    if not isinstance(executor, Executor):
        raise BadArgument(f"executor must be an Executor, got {type(executor).__name__}")
    res = resources or Resources(device=device)
    if isinstance(spec, IngestSpec):
        return ingest(spec, store, executor, resources=res, progress=progress, log=log)
    if isinstance(spec, TrainingSpec):
        return training(spec, store, executor, resources=res, progress=progress, log=log)
    if isinstance(spec, SweepSpec):
        return sweep(spec, store, executor, device=device, progress=progress, log=log)
    if isinstance(spec, AblateSpec):
        return ablate(spec, store, executor, device=device, progress=progress, log=log)
    raise BadArgument(f"{type(spec).__name__} cannot be fanned out: give an IngestSpec, AblateSpec, SweepSpec or "
                      "TrainingSpec")


def ingest(spec: Any, store: str | Path | None, executor: Executor, *, resources: Any = None,
           progress: bool = True, log: Log = _stderr) -> list[Any]:
    """``negdb ingest --executor ...``: one task per checkpoint; returns one result per checkpoint, in order.

    ``store`` may be an object-store URL: each task then ingests in its worker's staging store and publishes
    (:mod:`negdb.ingest.remote`)."""
    from negdb.ingest import runplan
    from negdb.ingest.pipeline import plan as plan_of
    from negdb.ingest.plan import Resources
    from negdb.ingest.result import CheckpointResult
    from negdb.models import checkpoints as ckpts
    from negdb.models import registry
    from negdb.store.catalog import Catalog
    from negdb.store.merge import open_store
    from negdb.store.objects import is_url

    res = resources or Resources()
    remote = store is not None and is_url(store)
    root: Path | str = str(store).rstrip("/") if remote else store_path(store)
    source = registry.resolve(spec.model)
    selected = ckpts.select(source, spec.checkpoint_spec)
    plan = plan_of(spec, store=root, resources=res)
    log(plan.render())
    plan.check_disk()
    if remote:
        open_store(root, create=True)
    else:
        StoreLayout(Path(root)).init()
    kept = runplan.activations_for(spec, [c.revision for c in selected])
    tasks, results = [], {}
    for c, cp in zip(selected, plan.checkpoints):
        if cp.stored_run is not None:
            _run_id, slice_id, spec_id, layers = cp.stored_run
            results[c.revision] = CheckpointResult(source.model_id, c.revision, "already", None, 0, layers, 0.0,
                                                   slice_id, spec_id)
            continue
        one = replace(spec, checkpoints=(c.revision,), activations=kept[c.revision])
        key = f"ingest-{short_hash(source.model_id, c.revision, one.record())}"
        tasks.append(Task(key, jobs.ingest_job, (key, one, str(root), res)))
    if tasks:
        with open_client(executor) as client:
            for outcome in run_tasks(client, tasks, desc="ingest", progress=progress, log=log):
                results[outcome.detail.revision] = outcome.detail
    with Catalog(root) as cat:  # a fresh snapshot: the catalog as the workers left it
        n = cat.sql("SELECT count(DISTINCT revision) AS n FROM neuron_stats WHERE model_id = ?",
                    [source.model_id])["n"][0]
    log(f"catalog refreshed: {n} checkpoint(s) of {source.model_id} with statistics in {root}")
    return [results[c.revision] for c in selected]


def sweep(spec: Any, store: str | Path | None, executor: Executor, *, device: str = "auto", progress: bool = True,
          log: Log = _stderr) -> Any:
    """``negdb sweep --executor ...``: one task per grid point, then the serial sweep (all stored). ``store``: a
    folder or an object-store URL, which the workers write into directly."""
    from negdb.ablate.conditions import check_store
    from negdb.ablate.controls import save_auto
    from negdb.store.catalog import Catalog
    from negdb.sweep import runner
    from negdb.sweep.grid import selection, setup

    layout = StoreLayout.at(store)
    check_store(layout, spec.model)
    with Catalog(layout.location) as cat:
        st = setup(cat, spec)
        for by in spec.by:  # the main sets, saved once before the workers read them
            for f in spec.fractions:
                save_auto(cat, selection(cat, spec, st.keys, by, f))
    tasks = []
    for p in spec.points():
        key = f"sweep-{short_hash(st.keys.model_id, st.keys.revision, p.label(), repr(spec))}"
        tasks.append(Task(key, jobs.sweep_job, (key, spec, str(layout.location), [p], device)))
    with open_client(executor) as client:
        run_tasks(client, tasks, desc="sweep", progress=progress, log=log)
    return runner.run(spec, layout.location, device=device, progress=False, log=log)


def ablate(spec: Any, store: str | Path | None, executor: Executor, *, device: str = "auto", progress: bool = True,
           log: Log = _stderr) -> Any:
    """``negdb ablate --executor ...``: one task per benchmark, then the serial experiment (all stored).
    ``store``: a folder or an object-store URL, which the workers write into directly.

    With a ppl-matched control and several benchmarks, a first task runs the perplexity-matched search once and
    stores its probes; the benchmark tasks depend on it (Dask waits for it) and read the match back."""
    from negdb.ablate.experiment import run

    where = StoreLayout.at(store).location
    kinds = {k.value for k in spec.controls.kinds}
    benches = list(spec.benchmarks)
    tasks, first = [], ()
    if "ppl-matched" in kinds and len(benches) > 1:
        key = f"ablate-search-{short_hash(repr(spec))}"
        tasks.append(Task(key, jobs.ablate_search_job, (key, spec, str(where), device)))
        first = (key,)
    for bench in benches:
        key = f"ablate-{short_hash(repr(spec), bench)}"
        tasks.append(Task(key, jobs.ablate_job, (key, replace(spec, evals=(bench,)), str(where), device),
                          after=first))
    with open_client(executor) as client:
        outcomes = run_tasks(client, tasks, desc="ablate", progress=progress, log=log)
    if first:
        again = sum(o.detail[2] for o in outcomes[1:])
        log(f"ppl-matched control: searched once ({outcomes[0].detail} probe perplexities computed) before "
            f"{len(benches)} benchmark task(s), which computed {again} more")
    return run(spec, where, device=device, progress=False, log=log)


def training(spec: Any, store: str | Path | None, executor: Executor, *, resources: Any = None,
             progress: bool = True, log: Log = _stderr) -> Any:
    """``negdb analyze training --executor ...``: one task per checkpoint, then the serial analysis (all
    stored). An analysis already stored, or one of fewer than two checkpoints, goes straight to the serial path
    (which reads it back, or says what is wrong)."""
    from negdb.analyze import training as tr
    from negdb.analyze.record import analysis_id, lookup
    from negdb.ingest import runplan
    from negdb.ingest.plan import Resources
    from negdb.models import checkpoints as ckpts
    from negdb.models import registry

    res = resources or Resources()
    layout = StoreLayout.at(store)
    root = layout.location
    source = registry.resolve(spec.model)
    selected = ckpts.select(source, spec.ingest.checkpoint_spec)
    stored = len(selected) >= 2 and layout.is_store() and lookup(
        layout, analysis_id(tr.KIND, spec.config(source.model_id, [c.revision for c in selected]))) is not None
    if len(selected) >= 2 and not stored:
        kept = runplan.activations_for(spec.ingest, [c.revision for c in selected])
        layout.init()
        tasks = []
        for c in selected:
            key = f"training-{short_hash(source.model_id, c.revision, repr(spec))}"
            tasks.append(Task(key, jobs.training_job, (key, spec, str(root), c.revision, kept[c.revision], res)))
        with open_client(executor) as client:
            run_tasks(client, tasks, desc="analyze training", progress=progress, log=log)
    return tr.run(spec, root, device=res.device, resources=res, progress=False, log=log)
