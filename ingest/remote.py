"""``negdb ingest --store s3://bucket/prefix``: ingest in a local staging store, publish to the object store.

Each checkpoint the object store lacks (its ``runs`` say what is stored) is ingested by the ordinary local
pipeline into a staging store (``$NEGDB_CACHE/staging/<hash of the URL>``: resumable work folders, flushed whole
shards), then published with conditional writes (:func:`negdb.store.merge.publish`: arrays under a prefix unique to
the publication, visible only through the segment that names them; no renames). The staged arrays are removed once
published. Each checkpoint is ingested under a lease object (:mod:`negdb.store.lease`, the object-store form of the
per-checkpoint ``flock``): a second worker asking for the same checkpoint waits until the first has published it
and then finds it stored; if the holder dies, its lease expires and the next worker takes over. The conditional
PUT of the segments keeps one publication even if two workers compute the same checkpoint.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from negdb.config import cache_dir
from negdb.store.layout import StoreLayout, short_hash

Log = Callable[[str], None]


def staging_dir(url: str) -> Path:
    """The local staging store of an object-store URL."""
    return cache_dir() / "staging" / short_hash("staging-v1", url.rstrip("/"), n=16)


def ingest_to_url(opts: Any, url: str, *, resources: Any, progress: bool, log: Log, ingest_folder: Callable[..., Any],
                  poll_s: float = 2.0) -> list[Any]:
    """Ingest each selected checkpoint of the :class:`~negdb.ingest.plan.IngestSpec` ``opts`` into ``url`` (see the
    module docstring), with ``resources``; one result per checkpoint. ``ingest_folder``: the pipeline's ingest into
    a store folder (:func:`negdb.ingest.pipeline.ingest`), run in the staging store."""
    import shutil

    from negdb.ingest import runplan
    from negdb.ingest.corpus import load_corpus
    from negdb.ingest.result import CheckpointResult
    from negdb.models import checkpoints as ckpts
    from negdb.models import registry
    from negdb.store import lease
    from negdb.store.merge import open_store, publish
    from negdb.store.objects import objects_for

    source = registry.resolve(opts.model)
    selected = ckpts.select(source, opts.checkpoint_spec)
    load_corpus(opts.dataset, text_field=opts.text_field)  # a bad --dataset fails before anything is written
    open_store(url, create=True)
    staging = StoreLayout(staging_dir(url))
    plan = runplan.plan_run(opts, staging, source, selected, keep_weights=resources.keep_weights, catalog=url)
    log(plan.render().replace("disk (store", "disk (staging") + f"\n  staging: {staging.root}, published to {url}")
    plan.check_disk()
    specs = runplan.activations_for(opts, [c.revision for c in selected])
    objects = objects_for(url)
    results = []
    for c, cp in zip(selected, plan.checkpoints):
        if cp.stored_run is None:
            one = replace(opts, checkpoints=(c.revision,), activations=specs[c.revision])
            key = runplan.lease_key(source.model_id, c.revision, opts)

            def published(cp: Any = cp) -> bool:
                return runplan.stored_run(url, opts, cp.revision, cp.keep_layers) is not None

            def waiting(owner: str, rev: str = c.revision) -> None:
                log(f"{source.model_id}@{rev}: waiting for {owner}, which holds the lease on this checkpoint")

            with lease.held(objects, key, done=published, on_wait=waiting, poll_s=poll_s) as mine:
                if mine and not published():
                    (res,) = ingest_folder(one, store=staging.root, resources=resources, progress=progress, log=log)
                    report = publish(staging.root, url, job=(source.model_id, c.revision))
                    log(f"{source.model_id}@{c.revision}: published to {url} ({report.summary()})")
                    for group in report.groups:  # this checkpoint's staged arrays only (others may be in flight)
                        shutil.rmtree(staging.root / group, ignore_errors=True)
                    results.append(res)
                    continue
            cp = replace(cp, stored_run=runplan.stored_run(url, opts, c.revision, cp.keep_layers))
        run_id, slice_id, spec_id, layers = cp.stored_run  # type: ignore[misc]
        log(f"{source.model_id}@{c.revision}: already in {url} (run {run_id}); nothing to do")
        results.append(CheckpointResult(source.model_id, c.revision, "already", None, 0, layers, 0.0,
                                        slice_id, spec_id))
    return results
