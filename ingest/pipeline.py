"""``negdb ingest``: stream pre-activations of each checkpoint into the store and publish statistics."""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import NoReturn

import numpy as np
import pyarrow.parquet as pq
import torch
from tqdm.auto import tqdm

from negdb.config import store_path
from negdb.errors import BadArgument, NotEnoughDisk, StoreDamaged
from negdb.ingest.corpus import load_corpus
from negdb.ingest.device import fewer_threads, kernel_for, resident_buffers
from negdb.ingest.layerstats import Kernel, PairPlan, layer_stats
from negdb.ingest.plan import (IngestSpec, Resources, StatSpec, batch_windows, check_disk, estimate_bytes,
                               human_bytes, parse_activations, parse_layers, stat_spec)
from negdb.ingest.publish import JobKeys, publish_activations, publish_metadata, publish_stats
from negdb.ingest.result import CheckpointResult
from negdb.ingest.runplan import RunPlan, activations_for, plan_run
from negdb.ingest.slices import TokenSlice, make_slice
from negdb.ingest.state import JobState
from negdb.ingest.stream import StreamPlan, stream
from negdb.models import checkpoints as ckpts
from negdb.models import hub, loading, registry
from negdb.models.families import act_name
from negdb.stats.mapping import draw_pairs
from negdb.store.arrays import layer_name, md_group_name, open_group, put_vector
from negdb.store.catalog import Catalog
from negdb.store.faults import crash_point
from negdb.store.layout import StoreLayout, short_hash
from negdb.store.locks import exclusive_lock
from negdb.store.objects import is_url
from negdb.store.runs import RunRecord, now
from negdb.store.segments import disk_errors

Log = Callable[[str], None]


def _stderr(msg: str) -> None:
    tqdm.write(msg, file=sys.stderr)


def ingest(spec: IngestSpec | None = None, *, store: str | Path | None = None, resources: Resources | None = None,
           progress: bool = True, log: Log = _stderr, **kwargs: object) -> list[CheckpointResult]:
    """Ingest every selected checkpoint of a model; returns one result per checkpoint.

    ``spec``: what to ingest (or its fields as keyword arguments); ``resources``: device, batch, memory, codec,
    statistics kernel, overlap, ``keep_weights``. With ``resources.overlap`` (the default) the statistics and
    publishing of a checkpoint run in a worker thread while the next checkpoint streams; the results are the same
    as one after the other (``overlap=False``). The run's plan (:mod:`negdb.ingest.runplan`) is logged first (for a
    run of several checkpoints or with downloads; one local checkpoint says its size as it starts), and a run the
    disk cannot hold is refused (:class:`negdb.errors.NotEnoughDisk`). Hub checkpoints are prefetched one ahead
    and, once streamed, removed from the Hugging Face cache if this run downloaded them (unless
    ``resources.keep_weights``). ``store`` may be an object-store URL (:mod:`negdb.ingest.remote`).
    """
    opts = spec or IngestSpec(**kwargs)  # type: ignore[arg-type]
    res = resources or Resources()
    if store is not None and is_url(store):
        from negdb.ingest.remote import ingest_to_url

        return ingest_to_url(opts, str(store), resources=res, progress=progress, log=log, ingest_folder=ingest)
    layout = StoreLayout(store_path(store))
    source = registry.resolve(opts.model)
    selected = ckpts.select(source, opts.checkpoint_spec)
    corpus = load_corpus(opts.dataset, text_field=opts.text_field)
    layout.check()
    run_plan = plan_run(opts, layout, source, selected, keep_weights=res.keep_weights)
    if run_plan.worth_showing:
        log(run_plan.render())
    run_plan.check_disk()
    keep_specs = activations_for(opts, [c.revision for c in selected])
    weights = hub.HubWeights(source.location if source.kind == "hub" else None, [c.revision for c in selected],
                             keep=res.keep_weights)
    overall = tqdm(total=opts.tokens * len(selected), unit="tok", unit_scale=True, desc="all checkpoints",
                   disable=not progress or len(selected) == 1, position=0)
    seen: dict[str, str] = {}
    results: list[CheckpointResult] = []
    pending: Future | None = None
    try:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="negdb-stats") as pool:
            for i, (ckpt, cplan) in enumerate(zip(selected, run_plan.checkpoints)):
                if cplan.stored_run is not None:
                    job: CheckpointResult | _Finish = _stored_result(layout, source, ckpt, cplan, log)
                    overall.update(opts.tokens)
                else:
                    weights.prepare(i)
                    copts = replace(opts, activations=keep_specs[ckpt.revision])
                    job = _checkpoint(copts, res, layout, source, ckpt, corpus, overall, progress, log, seen,
                                      background=pending is not None)
                    freed = weights.finish(i)  # streamed: the weights are no longer needed
                    if freed is not None:
                        log(f"{source.model_id}@{ckpt.revision}: removed from the Hugging Face cache "
                            f"({human_bytes(freed)}; --keep-weights keeps downloaded checkpoints)")
                if pending is not None:  # the previous checkpoint's statistics ran while this one streamed
                    try:
                        results.append(pending.result())
                    except BaseException:
                        if isinstance(job, _Finish):
                            job.abandon("stopped: the statistics of the previous checkpoint failed")
                        raise
                    pending = None
                if isinstance(job, CheckpointResult):
                    results.append(job)
                elif res.overlap and i + 1 < len(selected):
                    pending = pool.submit(job, True)
                else:
                    results.append(job(False))
            if pending is not None:
                results.append(pending.result())
    finally:
        weights.close()
        overall.close()
    return results


def plan(spec: IngestSpec | None = None, *, store: str | Path | None = None, resources: Resources | None = None,
         **kwargs: object) -> RunPlan:
    """The plan of an ingest without running it (``negdb ingest --dry-run``; offline for the Pythia aliases)."""
    opts = spec or IngestSpec(**kwargs)  # type: ignore[arg-type]
    res = resources or Resources()
    source = registry.resolve(opts.model)
    selected = ckpts.select(source, opts.checkpoint_spec)
    if store is not None and is_url(store):
        from negdb.ingest.remote import staging_dir

        return plan_run(opts, StoreLayout(staging_dir(str(store))), source, selected,
                        keep_weights=res.keep_weights, catalog=str(store))
    return plan_run(opts, StoreLayout(store_path(store)), source, selected, keep_weights=res.keep_weights)


def _stored_result(layout: StoreLayout, source, ckpt, cplan, log: Log) -> CheckpointResult:
    run_id, slice_id, spec_id, layers = cplan.stored_run
    log(f"{source.model_id}@{ckpt.revision}: already ingested by run {run_id}; nothing to do")
    _clear_done_work(layout, run_id)
    return CheckpointResult(source.model_id, ckpt.revision, "already", None, 0, layers, 0.0, slice_id, spec_id)


def _clear_done_work(layout: StoreLayout, run_id: str) -> None:
    """Remove the work folder of a run recorded done (stopped after its record, before its clean-up): nothing in
    it is needed any more."""
    work = layout.root / "work"
    for state in work.glob("*/state.json") if work.is_dir() else []:
        try:
            done = json.loads(state.read_text()).get("run_id") == run_id
        except (OSError, ValueError):
            continue
        if done:
            shutil.rmtree(state.parent, ignore_errors=True)


def _slice(opts: IngestSpec, corpus, lm, model_id: str, log: Log) -> TokenSlice:
    tokenizer = lm.tokenizer
    context = loading.max_context(lm)
    if opts.seq_len > context:
        raise BadArgument(f"--seq-len {opts.seq_len} is longer than the context of {model_id} ({context} tokens): "
                          f"use --seq-len {context} or less")
    bos = tokenizer.bos_token_id if opts.prepend_bos else None
    if opts.prepend_bos and bos is None:
        raise BadArgument(f"--bos: the tokenizer of {model_id} has no BOS token; drop --bos")
    sl = make_slice(corpus, tokenizer, tokenizer_name=model_id, seq_len=opts.seq_len, n_tokens=opts.tokens,
                    bos_token_id=bos)
    if sl.clamped:
        log(f"note: {corpus.name} holds only {sl.n_tokens:,} tokens in windows of {opts.seq_len}; "
            f"using all of them instead of {opts.tokens:,}")
    return sl


def _missing(layout: StoreLayout, model_id: str, revision: str, slice_id: str, spec: StatSpec, layers: list[int],
             keep: list[int]) -> tuple[list[int], list[int]]:
    """Layers still lacking statistics (for this spec), and kept layers still lacking stored activations (a
    recorded array whose folder, its slice's token ids or its md inputs are gone, e.g. quarantined by
    `negdb repair`, counts as missing: ingesting again restores it)."""
    spec_id = spec.spec_id
    with Catalog(layout.root) as cat:
        have_stats = set(cat.arrow("SELECT DISTINCT layer FROM neuron_stats WHERE model_id = ? AND revision = ? "
                                   "AND slice_id = ? AND spec_id = ?",
                                   [model_id, revision, slice_id, spec_id]).column("layer").to_pylist())
        recorded = cat.arrow("SELECT layer, array_path FROM activations WHERE model_id = ? AND revision = ? "
                             "AND slice_id = ?", [model_id, revision, slice_id]).to_pylist()
    group = layout.acts_group(model_id, revision, slice_id)
    md = Path("md") / md_group_name(spec.md_pairs, spec.md_seed)
    vectors = all((group / name / "zarr.json").exists() for name in ("token_ids", "window", "position", md / "pairs"))
    have_acts = {r["layer"] for r in recorded if vectors and (layout.root / r["array_path"] / "zarr.json").exists()
                 and (group / md / layer_name(r["layer"]) / "zarr.json").exists()}
    return sorted(set(layers) - have_stats), sorted(set(keep) - have_acts)


def _checkpoint(opts: IngestSpec, res: Resources, layout: StoreLayout, source, ckpt, corpus, overall: tqdm,
                progress: bool, log: Log, seen: dict[str, str] | None = None,
                background: bool = False) -> CheckpointResult | _Finish:
    """Stream one checkpoint; return its result if there was nothing to do, else the job that finishes it.

    The returned job (statistics, publishing, the run record; ``job(overlapped)``) holds the checkpoint's lock
    until it is done, so it may run in another thread while the next checkpoint streams. ``background``: a
    previous checkpoint's statistics are running now (the streaming then leaves them one core).
    """
    started = time.perf_counter()
    label = f"{source.model_id}@{ckpt.revision}"
    lm = loading.load(source, ckpt, device=res.device, dtype=getattr(torch, opts.dtype))
    load_s = time.perf_counter() - started
    digest = _weights_digest(source, ckpt)
    if digest is not None:
        _warn_same_weights(layout, source.model_id, ckpt.revision, digest, {} if seen is None else seen, log)
    sl = _slice(opts, corpus, lm, source.model_id, log)
    spec = stat_spec(opts, sl.n_tokens)
    layers = parse_layers(opts.layer_text, lm.n_layers)
    keep = parse_activations(opts.activations_text, layers, lm.n_layers)
    job_key = short_hash("ingest-v1", source.model_id, ckpt.revision, sl.slice_id, spec.spec_id, layers, keep)
    work = layout.work_dir(job_key)
    if not work.exists():
        check_disk(layout.root, _needed_bytes(opts, lm, sl, layers))
    layout.init()
    group_name = f"{source.model_id}|{ckpt.revision}|{sl.slice_id}"
    held = ExitStack()
    held.enter_context(exclusive_lock(
        layout.lock_file(group_name),
        on_wait=lambda who: log(f"{label}: waiting for {who}, which is writing the same checkpoint")))
    try:
        # what the store holds now: other jobs of this checkpoint may have published layers since this job began
        stats_todo, acts_todo = _missing(layout, source.model_id, ckpt.revision, sl.slice_id, spec, layers, keep)
        state = _load_state(work, log, label)
        if state is None:
            todo = sorted(set(stats_todo) | set(acts_todo))
            if not todo:
                log(f"{label}: already ingested ({len(layers)} layers, slice {sl.slice_id}, spec {spec.spec_id}); "
                    "nothing to do")
                overall.update(sl.n_tokens)
                held.close()
                return CheckpointResult(source.model_id, ckpt.revision, "already", None, sl.n_tokens, layers, 0.0,
                                        sl.slice_id, spec.spec_id)
            state = JobState(started_at=now().isoformat(), layers=todo, stats_layers=stats_todo, keep=acts_todo)
            status = "ingested"
        else:
            state.resumes += 1
            status = "resumed"
            # never publish a layer twice: drop what the store holds already (from this job's interrupted publish
            # or from another job that ingested overlapping layers meanwhile)
            state.stats_layers = [l for l in state.stats_layers if l in stats_todo]
            state.keep = [l for l in state.keep if l in acts_todo]
            log(f"{label}: resuming run {state.run_id} ({state.batches_done} batches and "
                f"{len(state.stats_done)} layers of statistics already done)")
        state.timings["load_s"] = state.timings.get("load_s", 0.0) + load_s
        keys = JobKeys(source.model_id, ckpt.revision, sl.slice_id, spec.spec_id, state.run_id, job_key)
        run = RunRecord(run_id=state.run_id, kind="ingest", model_id=source.model_id, revision=ckpt.revision,
                        slice_id=sl.slice_id, spec_id=spec.spec_id, layers=state.layers,
                        config={**opts.record(), **asdict(res), "activations_kept": keep, "slice": sl.meta(),
                                **_machine(lm)},
                        resumes=state.resumes, timings=state.timings)
        _announce(opts, lm, sl, state, state.keep, label, log)
        with disk_errors(work):
            work.mkdir(parents=True, exist_ok=True)
        state.save(work)
        run.save(layout, "running")
        held.enter_context(run.reserve_failure(layout))
        kernel = kernel_for(res, lm)
        try:
            if state.stats_layers or state.keep:
                with fewer_threads(background):
                    done = _stream_job(opts, res, layout, lm, source, ckpt, sl, spec, state, keys, work, overall,
                                       progress, label, kernel, digest)
            else:
                log(f"{label}: every layer of run {state.run_id} is in the store already (published by it "
                    "before it was interrupted, or by another run); nothing left to publish")
                overall.update(sl.n_tokens)
                done = _nothing_left
        except BaseException as err:
            _failed(run, layout, err, work)
    except BaseException:
        held.close()
        raise
    del lm  # the finishing job needs no model: the next checkpoint may load its own meanwhile
    return _Finish(layout, run, state, work, held, done, kernel, log,
                   CheckpointResult(source.model_id, ckpt.revision, status, state.run_id, sl.n_tokens, state.layers,
                                    0.0, sl.slice_id, spec.spec_id), started, label)


@dataclass
class _Finish:
    """The rest of a streamed checkpoint's job: statistics, publishing, the run record; it holds the lock."""

    layout: StoreLayout
    run: RunRecord
    state: JobState
    work: Path
    held: ExitStack
    done: Callable[[Kernel], None]
    kernel: Kernel
    log: Log
    result: CheckpointResult
    started: float
    label: str

    def __call__(self, overlapped: bool) -> CheckpointResult:
        """Finish the job (``overlapped``: while another checkpoint streams, so numpy gets one thread)."""
        kernel = replace(self.kernel, threads=1) if overlapped and self.kernel.backend == "numpy" else self.kernel
        try:
            try:
                self.done(kernel)
            except BaseException as err:
                _failed(self.run, self.layout, err, self.work)
            self.run.timings = self.state.timings
            self.run.save(self.layout, "done")
            crash_point("publish.after_done")
            shutil.rmtree(self.work, ignore_errors=True)
        finally:
            self.held.close()
        seconds = time.perf_counter() - self.started
        r = self.result
        self.log(f"{self.label}: {r.status} {r.n_tokens:,} tokens x {len(r.layers)} layers in {seconds:.1f} s "
                 f"(run {r.run_id})")
        return replace(r, seconds=seconds)

    def abandon(self, why: str) -> None:
        """Leave the job for a later run to resume (its streamed batches are kept) and release the lock."""
        try:
            self.run.save_quietly(self.layout, "interrupted", f"{why}; run the same command again to resume")
        finally:
            self.held.close()


def _failed(run: RunRecord, layout: StoreLayout, err: BaseException, work: Path) -> NoReturn:
    """Record why the job stopped (it resumes from ``work`` when the same command runs again) and raise."""
    if isinstance(err, KeyboardInterrupt):
        run.save_quietly(layout, "interrupted", "interrupted; run the same command again to resume")
        raise err
    if isinstance(err, NotEnoughDisk):
        run.save_quietly(layout, "failed", str(err))
        raise NotEnoughDisk(f"the disk is full while writing {getattr(err, 'what', 'the store')}: free space or use "
                            f"another --store; the unfinished ingest is kept in {work} and resumes when you run the "
                            "same command again") from err
    run.save_quietly(layout, "failed", f"{type(err).__name__}: {err}")
    raise err


def _nothing_left(kernel: Kernel) -> None:
    """The finishing job of a resumed run whose layers other runs have published meanwhile."""


def _load_state(work: Path, log: Log, label: str) -> JobState | None:
    """The resume state of an interrupted job, or None; a damaged one starts the job over (nothing in a work
    folder is published, so nothing is lost but time)."""
    try:
        return JobState.load(work)
    except StoreDamaged as err:
        log(f"{label}: {err}; starting the job over")
        shutil.rmtree(work, ignore_errors=True)
        return None


def _needed_bytes(opts: IngestSpec, lm, sl: TokenSlice, layers: list[int]) -> int:
    return estimate_bytes(n_tokens=sl.n_tokens, d_mlp=lm.d_mlp, n_layers=len(layers), d_model=lm.d_model,
                          md_rows=min(2 * opts.md_pairs, sl.n_tokens), store_dtype=opts.store_dtype)


def _announce(opts: IngestSpec, lm, sl: TokenSlice, state: JobState, keep: list[int], label: str,
              log: Log) -> None:
    need = _needed_bytes(opts, lm, sl, state.layers)
    log(f"{label}: {sl.n_tokens:,} tokens ({sl.n_windows} x {sl.seq_len}) of {sl.dataset}, "
        f"{len(state.layers)} layers x {lm.d_mlp} neurons, keeping activations of {len(keep)} layers; "
        f"needs up to {human_bytes(need)} of disk")


def _stream_job(opts: IngestSpec, res: Resources, layout: StoreLayout, lm, source, ckpt, sl: TokenSlice, spec,
                state: JobState, keys: JobKeys, work: Path, overall: tqdm, progress: bool, label: str,
                kernel: Kernel, digest: str | None = None) -> Callable[[Kernel], None]:
    """Stream the remaining batches; return the rest of the job (statistics and publishing) as a function."""
    spool = work / "spool.zarr"
    a, b = draw_pairs(sl.n_tokens, spec.md_pairs, spec.md_seed)
    pairs = PairPlan(a=a, b=b, md_rows=np.unique(np.concatenate([a, b])))
    md_key = md_group_name(spec.md_pairs, spec.md_seed)
    tmp = work / "tmp"
    with disk_errors(spool):
        group = open_group(spool)
        group.require_group("md").require_group(md_key)
        flat = sl.tokens.reshape(-1)
        put_vector(spool, "token_ids", flat, tmp_dir=tmp)
        put_vector(spool, "window", np.repeat(np.arange(sl.n_windows, dtype=np.int32), sl.seq_len), tmp_dir=tmp)
        put_vector(spool, "position", np.tile(np.arange(sl.seq_len, dtype=np.int32), sl.n_windows), tmp_dir=tmp)
        put_vector(spool, f"md/{md_key}/pairs", np.stack([a, b], axis=1), tmp_dir=tmp)
    wpb = batch_windows(res, opts.seq_len, d_mlp=lm.d_mlp, n_layers=len(state.layers), n_windows=sl.n_windows)
    plan = StreamPlan(layers=state.layers, windows_per_batch=wpb, store_dtype=opts.store_dtype,
                      compression=res.compression, md_rows=pairs.md_rows, md_key=md_key)
    done_tokens = min(state.batches_done * wpb * sl.seq_len, sl.n_tokens)
    overall.update(done_tokens)
    resident = resident_buffers(opts, res, lm, sl, state, kernel)
    with tqdm(total=sl.n_tokens, initial=done_tokens, unit="tok", unit_scale=True, desc=label, leave=False,
              disable=not progress, position=1 if not overall.disable else 0) as bar:
        def on_tokens(n: int) -> None:
            bar.update(n)
            overall.update(n)

        stream(lm, sl.tokens, group, spool, plan, state, work, on_tokens, resident=resident)
    rows = {"model": _model_row(source, lm), "checkpoint": _checkpoint_row(source, ckpt, lm, digest),
            "slice_row": sl.meta() | {"slice_id": sl.slice_id}, "spec": spec.row()}
    keep, d_mlp = state.keep, lm.d_mlp

    def finish(k: Kernel) -> None:
        _stats_phase(res, group, pairs, spec, state, work, md_key, progress, label, k, resident)
        resident.clear()  # frees the device copies
        publish_metadata(layout, **rows)
        crash_point("publish.after_metadata")
        # the lock of this checkpoint is held, so what the store lacks now is what this job publishes: a layer that
        # another job published while this one was interrupted (or this job before it was) is never published twice
        stats_todo, acts_todo = _missing(layout, keys.model_id, keys.revision, keys.slice_id, spec, state.stats_layers,
                                         keep)
        publish_activations(layout, keys, spool, acts_todo, md_key, n_tokens=sl.n_tokens, d_mlp=d_mlp,
                            dtype=opts.store_dtype)
        publish_stats(layout, keys, {l: work / "stats" / f"L{l:03d}.parquet" for l in stats_todo})
        crash_point("publish.after_stats")

    return finish


def _stats_phase(res: Resources, group, pairs: PairPlan, spec, state: JobState, work: Path, md_key: str,
                 progress: bool, label: str, kernel: Kernel, resident: dict[int, torch.Tensor]) -> None:
    started = time.perf_counter()
    remaining = [l for l in state.stats_layers if l not in state.stats_done]
    for layer in tqdm(remaining, desc=f"{label} statistics", unit="layer", leave=False, disable=not progress):
        name = f"L{layer:03d}"
        table = layer_stats(group["preact"][name], group["md"][md_key][name], pairs, spec, layer,
                            res.mem_budget_mb, kernel, resident.pop(layer, None))
        out = work / "stats" / f"{name}.parquet"
        out.parent.mkdir(exist_ok=True)
        tmp = out.with_suffix(".partial")
        with disk_errors(out):
            pq.write_table(table, tmp)
            tmp.replace(out)
        state.stats_done.append(layer)
        state.timings["stats_s"] = state.timings.get("stats_s", 0.0) + time.perf_counter() - started
        started = time.perf_counter()
        state.save(work)
        crash_point("stats.after_layer")


def _model_row(source, lm) -> dict:
    cfg = lm.model.config
    return {"model_id": source.model_id, "kind": source.kind, "location": str(source.location),
            "family": lm.family.name, "model_type": cfg.model_type, "n_layers": lm.n_layers, "d_mlp": lm.d_mlp,
            "d_model": lm.d_model, "activation": act_name(cfg, lm.family),
            "config_json": json.dumps(_config_dict(cfg), sort_keys=True, default=str)}


def _config_dict(cfg) -> dict:
    """The model config without the fields that name where one checkpoint was read from (``_name_or_path``,
    ``_commit_hash``): the model row is the same whichever checkpoint (or worker) writes it first."""
    return {k: v for k, v in cfg.to_dict().items() if not k.startswith("_")}


def _checkpoint_row(source, ckpt, lm, digest: str | None = None) -> dict:
    return {"model_id": source.model_id, "revision": ckpt.revision, "step": ckpt.step,
            "tokens_seen": ckpt.tokens_seen, "commit": lm.commit, "location": str(ckpt.location),
            "weights_sha256": digest}


def _machine(lm) -> dict:
    """What the time estimates of later plans need: the device kind, parameters and MLP width of this run."""
    return {"device_kind": loading.device_kind(lm.device), "n_params": sum(p.numel() for p in lm.model.parameters()),
            "d_mlp": lm.d_mlp}


def _weights_digest(source, ckpt) -> str | None:
    """SHA-256 of the checkpoint's weight files (hub files: their LFS names; nothing is read)."""
    if source.kind == "hub":
        folder = hub.snapshot_dir(ckpt.location, ckpt.revision)
        return hub.weights_sha256(folder) if folder is not None else None
    return hub.weights_sha256(ckpt.location if source.kind != "gguf" else source.location)


def _warn_same_weights(layout: StoreLayout, model_id: str, revision: str, digest: str, seen: dict[str, str],
                       log: Log) -> None:
    """Warn when another revision of the model (in this run or in the store) has the very same weights."""
    same = [r for r, d in seen.items() if d == digest and r != revision]
    seen[revision] = digest
    if not same and layout.table_dir("checkpoints").is_dir():
        with Catalog(layout.root) as cat:
            if "weights_sha256" in cat.arrow("SELECT * FROM checkpoints LIMIT 0").column_names:
                same = cat.arrow("SELECT revision FROM checkpoints WHERE model_id = ? AND weights_sha256 = ? "
                                 "AND revision <> ?", [model_id, digest, revision]).column("revision").to_pylist()
    if same:
        log(f"warning: {model_id}@{revision} has the same weights as {', '.join(sorted(same))} "
            f"(sha256 {digest[:12]}): the hub may serve one checkpoint under two names (EleutherAI/pythia#205)")


__all__ = ["CheckpointResult", "IngestSpec", "Resources", "RunPlan", "ingest", "plan"]
