"""negdb.models: model families, aliases, checkpoints, loading and pre-activation capture.

- :mod:`negdb.models.families`: the one adapter table (``FAMILIES``, ``family_for``, module paths).
- :mod:`negdb.models.registry`: ``resolve(name_or_path) -> ModelSource``, ``list_aliases()``.
- :mod:`negdb.models.checkpoints`: ``select(source, spec) -> list[Checkpoint]``.
- :mod:`negdb.models.loading`: ``load(source, checkpoint, device=..., dtype=...) -> LoadedModel``.
- :mod:`negdb.models.capture`: ``run_batch(lm, input_ids, layers, ...) -> Captured``.

Submodules are imported on demand so that ``import negdb.models.registry`` stays free of torch.
"""
