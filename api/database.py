"""The typed Python API: ``db = negdb.open(path)`` and one method per command.

Every ``negdb`` command is a thin parser over one of these calls; they take typed values (lists, ints,
fractions, enums, option groups), never the CLI's strings::

    import negdb
    db = negdb.open("negdb-store")
    db.ingest("smollm2-135m", tokens=16_384)
    w = db.select("smollm2-135m", top=0.01, by="w_dist")        # a Selection: polars members, keys, content hash
    res = db.ablate(w, mode="neg", evals=["ppl", "blimp"], controls=["random"], seeds=3)
    res.frame()                                                 # condition, benchmark, metric, value, delta, CI
    print(res.render("table"))

The results are the stored ones: a repeated call reads them back and loads no model. Methods that evaluate take
``device`` (default: the database's, ``auto``), which never enters a key.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from negdb.config import store_path
from negdb.errors import BadArgument, NotFound

if TYPE_CHECKING:  # pragma: no cover
    import polars as pl

    from negdb.ablate.experiment import Experiment
    from negdb.query.sets import Selection
    from negdb.query.setstore import NeuronSet
    from negdb.store.catalog import Catalog, QueryResult


RUNNERS = {"AblateSpec": "negdb.ablate.experiment", "SweepSpec": "negdb.sweep.runner",
           "LayersSpec": "negdb.analyze.layers", "PosSpec": "negdb.analyze.pos",
           "TrainingSpec": "negdb.analyze.training", "PairsSpec": "negdb.analyze.pairs"}
"""Spec class name -> the module whose ``run(spec, store, ...)`` runs it."""


def _quiet(_msg: str) -> None:
    pass


class Sets:
    """The saved neuron sets of a database: ``db.sets["wass1"]``, ``"wass1" in db.sets``, ``list(db.sets)``,
    ``db.sets.frame()``; ``db.sets.save(selection, "name")``."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def frame(self) -> pl.DataFrame:
        from negdb.query.setstore import list_sets

        with self._db.catalog() as cat:
            return list_sets(cat)

    def __iter__(self) -> Iterator[str]:
        return iter(self.frame()["name"].to_list())

    def __len__(self) -> int:
        return self.frame().height

    def __contains__(self, name: object) -> bool:
        return name in set(self)

    def __getitem__(self, name: str) -> NeuronSet:
        from negdb.query.setstore import get

        names = list(self)
        if name not in names:
            raise NotFound(f"no neuron set named {name!r} in {self._db.path}: saved sets are "
                           f"{', '.join(names[:8]) or 'none'}{' ...' if len(names) > 8 else ''}")
        with self._db.catalog() as cat:
            return get(cat, name)

    def save(self, selection: Selection, name: str) -> NeuronSet:
        """Store ``selection`` as the immutable set ``name`` (the same members again: a no-op)."""
        from negdb.query.setstore import save

        return save(self._db.path, selection, name)


class Analyses:
    """The stored analyses of a database: ``db.analyze.pos(...)``, ``.layers(...)``, ``.training(...)``,
    ``.pairs(...)``."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def pos(self, neurons: Any, *, mode: str = "neg", controls: Sequence[str] = ("random", "ppl-matched"),
            seeds: int = 1, control_seed: int = 0, probe_tokens: int = 16384, ppl_tokens: int | None = None,
            scoring: Any = None, bootstrap: Any = None, model: str | None = None, device: str | None = None) -> Any:
        """``negdb analyze pos``: excess surprisal per POS tag of the ablation and its controls."""
        from negdb.ablate.options import Controls
        from negdb.analyze.pos import PosSpec, run
        from negdb.evals.options import Bootstrap, Scoring

        db = self._db
        spec = PosSpec(db._neurons(neurons, model), mode=mode,
                       controls=Controls(kinds=controls, seeds=seeds, seed=control_seed, probe_tokens=probe_tokens),
                       ppl_tokens=ppl_tokens, scoring=scoring or Scoring(), bootstrap=bootstrap or Bootstrap())
        return run(spec, db.path, device=db._device(device), progress=db.progress, log=db.log)

    def layers(self, neurons: Any, *, mode: str = "neg", groups: int = 8,
               variants: Sequence[str] = ("alone", "cumulative"), evals: Sequence[str] = ("ppl", "blimp", "tse"),
               limit: Any = None, sample_seed: int = 0, ppl_tokens: int | None = None, scoring: Any = None,
               bootstrap: Any = None, model: str | None = None, device: str | None = None) -> Any:
        """``negdb analyze layers``: the set ablated one layer group at a time and cumulatively."""
        from negdb.analyze.layers import LayersSpec, run
        from negdb.evals.options import Bootstrap, Sampling, Scoring

        db = self._db
        spec = LayersSpec(db._neurons(neurons, model), mode=mode, groups=groups, variants=variants,
                          evals=evals, sampling=Sampling(limit=limit, ppl_tokens=ppl_tokens, seed=sample_seed),
                          scoring=scoring or Scoring(), bootstrap=bootstrap or Bootstrap())
        return run(spec, db.path, device=db._device(device), progress=db.progress, log=db.log)

    def training(self, model: str, *, checkpoints: Any = "all", top: float | int = 0.01, by: str = "w_dist",
                 mode: str = "neg", evals: Sequence[str] = ("ppl", "blimp", "tse"),
                 controls: Sequence[str] = ("random",), seeds: int = 1, control_seed: int = 0, limit: Any = None,
                 sample_seed: int = 0, ppl_tokens: int | None = None, scoring: Any = None, bootstrap: Any = None,
                 ingest: Mapping[str, Any] | None = None, device: str | None = None) -> Any:
        """``negdb analyze training``: w_dist, the top sets and the ablation across checkpoints.

        ``ingest``: further :class:`~negdb.ingest.plan.IngestSpec` fields (``tokens``, ``seq_len``, ``seed``, ...;
        activations default to none).
        """
        from negdb.ablate.options import Controls
        from negdb.analyze.training import TrainingSpec, run
        from negdb.evals.options import Bootstrap, Sampling, Scoring
        from negdb.ingest.plan import IngestSpec

        db = self._db
        spec = TrainingSpec(IngestSpec(model, checkpoints=checkpoints, **{"activations": "none", **(ingest or {})}),
                            top=top, by=by, mode=mode, evals=evals,
                            controls=Controls(kinds=controls, seeds=seeds, seed=control_seed),
                            sampling=Sampling(limit=limit, ppl_tokens=ppl_tokens, seed=sample_seed),
                            scoring=scoring or Scoring(), bootstrap=bootstrap or Bootstrap())
        return run(spec, db.path, device=db._device(device), progress=db.progress, log=db.log)

    def pairs(self, model: str, *, layer: int | None = None, index: int | None = None, k: int = 20,
              context: int = 8, all_signs: bool = False, checkpoint: str | None = None, bootstrap: Any = None,
              tokenizer: Any = None) -> Any:
        """``negdb analyze pairs``: token pairs one neuron differentiates; per layer the negative share."""
        from negdb.analyze.pairs import PairsSpec, run
        from negdb.evals.options import Bootstrap

        spec = PairsSpec(model, checkpoint=checkpoint, layer=layer, index=index, k=k, context=context,
                         all_signs=all_signs, bootstrap=bootstrap or Bootstrap())
        return run(spec, self._db.path, tokenizer=tokenizer)


class Database:
    """A negdb store opened for Python: ``negdb.open(path)``.

    Args:
        path: the store folder (default ``$NEGDB_STORE`` or ``./negdb-store``), created by the first ingest, or an
            object-store URL (``s3://bucket/prefix``): ingests, sets and evaluations are written straight into it
            (segments created only if absent, the first writer wins).
        device: where models run when something must be computed (``auto``, ``cpu``, ``cuda:N``).
        progress: show progress bars.
        log: where progress lines go (default: nowhere; pass ``print`` to see them).
    """

    def __init__(self, path: str | Path | None = None, *, device: str = "auto", progress: bool = False,
                 log: Any = None) -> None:
        from negdb.store.objects import is_url

        self.path: Path | str = str(path).rstrip("/") if path is not None and is_url(path) else store_path(path)
        self.device = device
        self.progress = progress
        self.log = log or _quiet
        self.sets = Sets(self)
        self.analyze = Analyses(self)

    def __repr__(self) -> str:
        return f"negdb.Database({str(self.path)!r})"

    def _device(self, device: str | None) -> str:
        return device or self.device

    # ------------------------------------------------------------------------------------------ catalog

    @contextlib.contextmanager
    def catalog(self) -> Iterator[Catalog]:
        """The store's catalog (DuckDB views over the stored segments), closed on exit."""
        from negdb.store.catalog import Catalog

        with Catalog(self.path) as cat:
            yield cat

    def query(self, sql: str, params: list[Any] | dict[str, Any] | None = None, *, max_rows: int | None = None,
              timeout_s: float | None = None) -> QueryResult:
        """One read-only ``SELECT``/``WITH`` over the catalog views, checked and bounded like ``negdb sql``
        (``BadQuery``, ``QueryTimeout``); an Arrow table and whether rows were cut."""
        with self.catalog() as cat:
            return cat.query(sql, params, max_rows=max_rows, timeout_s=timeout_s)

    def sql(self, sql: str, params: list[Any] | dict[str, Any] | None = None, *, max_rows: int | None = None,
            timeout_s: float | None = None) -> pl.DataFrame:
        """:meth:`query` as a polars frame."""
        import polars as pl

        out = pl.from_arrow(self.query(sql, params, max_rows=max_rows, timeout_s=timeout_s).table)
        assert isinstance(out, pl.DataFrame)
        return out

    def results(self, *, model: str | None = None, benchmark: str | None = None) -> pl.DataFrame:
        """Every stored evaluation (``negdb results``), newest last."""
        from negdb.ablate.stored import results_frame

        with self.catalog() as cat:
            return results_frame(cat, model=model, benchmark=benchmark)

    def ablations(self) -> pl.DataFrame:
        """Every stored ablation experiment (``negdb results --ablations``)."""
        from negdb.ablate.stored import ablation_frame

        with self.catalog() as cat:
            return ablation_frame(cat)

    def comparison(self, ablation_id: str) -> Any:
        """The comparison of a stored experiment, rebuilt from its stored results (``negdb results --show``)."""
        from negdb.ablate.stored import stored_comparison

        with self.catalog() as cat:
            return stored_comparison(cat, ablation_id)

    # ------------------------------------------------------------------------------------------ ingest

    def ingest(self, model: str, *, checkpoints: Any = "final", tokens: int = 16384, resources: Any = None,
               device: str | None = None, executor: Any = None, **spec: Any) -> list[Any]:
        """``negdb ingest``: statistics of ``model``'s ``checkpoints`` (a list of revisions, or ``all``,
        ``final``, ``every:K``, ``first:N``); further :class:`~negdb.ingest.plan.IngestSpec` fields as keywords
        (``seq_len``, ``layers``, ``activations``, ``prepend_bos``, ``seed``, ...). Stored checkpoints are skipped.
        ``executor``: a :class:`negdb.cluster.Executor`: one task per checkpoint (see :meth:`run`)."""
        from negdb.ingest.pipeline import ingest
        from negdb.ingest.plan import IngestSpec, Resources

        res = resources or Resources(device=self._device(device))
        one = IngestSpec(model, checkpoints=checkpoints, tokens=tokens, **spec)
        if executor is not None and executor.fanned_out:
            from negdb.cluster import run as fan_out

            return fan_out(one, self.path, executor, resources=res, progress=self.progress,  # type: ignore[no-any-return]
                           log=self.log)
        return ingest(one, store=self.path, resources=res, progress=self.progress, log=self.log)

    # ------------------------------------------------------------------------------------------ sets

    def select(self, model: str, checkpoint: str | None = None, *, where: str | None = None,
               top: float | int | None = None, bottom: float | int | None = None, by: str = "w_dist",
               random_like: str | None = None, seed: int = 0, layers: Sequence[int] | None = None) -> Selection:
        """``negdb select``: neurons of ``model``'s statistics (``top``/``bottom``: a fraction of each layer such
        as 0.01, or a count), not saved; see :func:`negdb.query.sets.select`."""
        from negdb.query import sets as setlib
        from negdb.values import k_text, layer_list, top_k

        for name, k in (("top", top), ("bottom", bottom)):
            if k is not None:
                top_k(k, name)
        picked = layer_list(layers)
        with self.catalog() as cat:
            return setlib.select(cat, model, checkpoint, where=where,
                                 top=None if top is None else k_text(top),
                                 bottom=None if bottom is None else k_text(bottom), by=by,
                                 random_like=random_like, seed=seed,
                                 layers=None if picked is None else ",".join(map(str, picked)))

    def selection(self, model: str, neurons: Mapping[int, Sequence[int]], checkpoint: str | None = None) -> Selection:
        """A ``Selection`` of the given ``{layer: [neuron, ...]}`` on ``model``'s statistics (not saved)."""
        import json

        import polars as pl

        from negdb.ablate.interventions import make_intervention
        from negdb.query import sets as setlib

        given = make_intervention("neg", neurons).neurons  # validated: layer -> sorted unique indices
        if not given:
            raise BadArgument("the neuron mapping is empty: name at least one {layer: [neuron]}")
        rows = [(li, n) for li, cols in given.items() for n in cols]
        members = pl.DataFrame(rows, schema={"layer": pl.Int32, "neuron": pl.Int32}, orient="row")
        with self.catalog() as cat:
            keys = setlib.resolve_keys(cat, model, checkpoint)
            widths = setlib.layer_widths(cat, keys)
        bad = [(li, n) for li, n in rows if li not in widths or n >= widths[li]]
        if bad:
            raise BadArgument(f"neurons {bad[:4]} are not in {keys.model_id}@{keys.revision} (layers with "
                              f"statistics: {sorted(widths)})")
        return setlib.Selection(keys=keys, expression=json.dumps({"pick": "given"}), members=members,
                                counts={li: len(cols) for li, cols in given.items()},
                                content_hash=setlib.content_hash(keys, members))

    def _neurons(self, neurons: Any, model: str | None) -> Any:
        """A ``SetSpec``, ``Selection`` or ``NeuronSet`` from what a method was given (a saved set's name, a
        ``{layer: [neurons]}`` mapping with ``model``, or one of those)."""
        from negdb.query.sets import Selection
        from negdb.query.setspec import SetSpec
        from negdb.query.setstore import NeuronSet

        if isinstance(neurons, (SetSpec, Selection, NeuronSet)):
            return neurons
        if isinstance(neurons, str):
            return self.sets[neurons]
        if isinstance(neurons, Mapping):
            if model is None:
                raise BadArgument("a {layer: [neurons]} mapping needs model=... (whose statistics it refers to)")
            return self.selection(model, neurons)
        raise BadArgument(f"neurons must be a Selection, a NeuronSet, a SetSpec, a saved set's name or a "
                          f"{{layer: [neurons]}} mapping, got {type(neurons).__name__}")

    # ------------------------------------------------------------------------------------------ experiments

    def ablate(self, neurons: Any, *, mode: str = "neg", evals: Sequence[str] = ("ppl", "blimp", "tse", "suite"),
               controls: Any = ("random", "ppl-matched"), seeds: int = 3, control_seed: int = 0,
               limit: Any = None, sample_seed: int = 0, ppl_tokens: int | None = None, probe_tokens: int = 16384,
               tolerance: float = 0.05, resolution: float = 0.005, max_fraction: float = 0.9,
               scoring: Any = None, bootstrap: Any = None, save: str | None = None, model: str | None = None,
               device: str | None = None, executor: Any = None) -> Experiment:
        """``negdb ablate``: ``neurons`` (a ``Selection``, ``NeuronSet``, ``SetSpec``, saved set's name, or a
        ``{layer: [neurons]}`` mapping with ``model``) under ``mode``, against the ``controls`` (kinds, or a whole
        :class:`~negdb.ablate.options.Controls`), on ``evals``.

        ``limit``: items per group, a count or ``{"*": 50, "suite": 200}``; ``scoring``: a
        :class:`~negdb.evals.options.Scoring` (BOS policy, window, batch size); ``bootstrap``: a
        :class:`~negdb.evals.options.Bootstrap`. Returns the :class:`~negdb.ablate.experiment.Experiment`
        (``.frame()``, ``.render(fmt)``)."""
        from negdb.ablate.options import AblateSpec, Controls
        from negdb.evals.options import Bootstrap, Sampling, Scoring

        if not isinstance(controls, Controls):
            controls = Controls(kinds=controls, seeds=seeds, seed=control_seed, tolerance=tolerance,
                                resolution=resolution, max_fraction=max_fraction, probe_tokens=probe_tokens)
        spec = AblateSpec(self._neurons(neurons, model), mode=mode, evals=evals, controls=controls,
                          sampling=Sampling(limit=limit, ppl_tokens=ppl_tokens, seed=sample_seed),
                          scoring=scoring or Scoring(), bootstrap=bootstrap or Bootstrap(), save=save)
        return self.run(spec, device=device, executor=executor)  # type: ignore[no-any-return]

    def run(self, spec: Any, *, device: str | None = None, executor: Any = None) -> Any:
        """Run (or read back) a spec: ``AblateSpec``, ``SweepSpec``, ``LayersSpec``, ``PosSpec``,
        ``TrainingSpec``, ``PairsSpec`` or ``IngestSpec``.

        ``executor``: a :class:`negdb.cluster.Executor` (``Executor("dask", workers=4)``, a scheduler's
        ``address``, or Slurm jobs) fans an ``IngestSpec``, ``AblateSpec``, ``SweepSpec`` or ``TrainingSpec`` out
        as one task per checkpoint, grid point or benchmark; the result is the serial one's."""
        import importlib

        from negdb.ingest.plan import IngestSpec, Resources

        dev = self._device(device)
        if executor is not None and executor.fanned_out:
            from negdb.cluster import run as fan_out

            return fan_out(spec, self.path, executor, device=dev, progress=self.progress, log=self.log)
        if isinstance(spec, IngestSpec):
            from negdb.ingest.pipeline import ingest

            return ingest(spec, store=self.path, resources=Resources(device=dev), progress=self.progress,
                          log=self.log)
        where = RUNNERS.get(type(spec).__name__)
        if where is None:
            raise BadArgument(f"not a negdb spec: {type(spec).__name__}")
        run = importlib.import_module(where).run
        if type(spec).__name__ == "PairsSpec":
            return run(spec, self.path)
        return run(spec, self.path, device=dev, progress=self.progress, log=self.log)

    def sweep(self, model: str, *, fractions: Sequence[float] = (0.005, 0.01, 0.02, 0.05),
              by: Sequence[str] = ("w_dist", "kurtosis", "skew", "std"), direction: str = "top",
              modes: Sequence[str] = ("neg", "pos", "both"), seeds: Sequence[int] = (0, 1, 2),
              evals: Sequence[str] = ("ppl", "blimp", "tse", "suite"),
              controls: Sequence[str] = ("random", "ppl-matched"), limit: Any = None, ppl_tokens: int | None = None,
              probe_tokens: int = 16384, tolerance: float = 0.05, resolution: float = 0.005,
              max_fraction: float = 0.9, layers: Sequence[int] | None = None, checkpoint: str | None = None,
              scoring: Any = None, n_boot: int = 1000, device: str | None = None, dry_run: bool = False,
              executor: Any = None) -> Any:
        """``negdb sweep``: every (selector, fraction, mode) point once per seed ``s`` of ``seeds`` (``s`` seeds
        that run's item subsample, random control and bootstrap). ``dry_run``: the work estimate only;
        ``executor``: a :class:`negdb.cluster.Executor`, one task per grid point (see :meth:`run`)."""
        from negdb.ablate.options import Controls
        from negdb.evals.options import Sampling, Scoring
        from negdb.sweep import SweepSpec, plan

        spec = SweepSpec(model, checkpoint=checkpoint, fractions=fractions, by=by,
                         direction=direction, modes=modes, layers=layers, seeds=seeds,
                         evals=evals,
                         controls=Controls(kinds=controls, probe_tokens=probe_tokens, tolerance=tolerance,
                                           resolution=resolution, max_fraction=max_fraction),
                         sampling=Sampling(limit=limit, ppl_tokens=ppl_tokens), scoring=scoring or Scoring(),
                         n_boot=n_boot)
        if dry_run:
            return plan(spec, self.path)
        return self.run(spec, device=device, executor=executor)

    def report(self, out: str | Path = "negdb-report", models: Sequence[str] | None = None, **kw: Any) -> Any:
        """``negdb report``: the HTML report drawn only from stored results (no model is loaded)."""
        from negdb.report.build import build

        return build(self.path, out, list(models) if models else None, **kw)

    def intervene(self, model: Any, neurons: Any, mode: str = "neg") -> Any:
        """:func:`negdb.intervene` with a stored set (or a saved set's name); ``mode="mean"`` reads the set's
        stored means."""
        from negdb.ablate.controls import intervention_for
        from negdb.hooks import intervene

        ns = self._neurons(neurons, None)
        if hasattr(ns, "set_id"):
            with self.catalog() as cat:
                return intervene(model, intervention_for(cat, ns, mode))
        return intervene(model, ns, mode)


def open(path: str | Path | None = None, **kw: Any) -> Database:  # noqa: A001 - negdb.open, like io.open
    """The store at ``path`` (default ``$NEGDB_STORE`` or ``./negdb-store``) as a :class:`Database`."""
    return Database(path, **kw)
