"""The whole run's plan, before anything is loaded: checkpoints, downloads, bytes, disk and time.

``negdb ingest`` prints it before starting and refuses (:class:`negdb.errors.NotEnoughDisk`) a run whose store
or Hugging Face cache cannot hold it, naming the options that shrink it; ``--dry-run`` prints only the plan. It
works offline: model sizes come from the alias table (Pythia) or from config and weight files on disk
(:func:`negdb.models.sizes.size_from_folder`), never from loading a model, and the time estimate from the
timings of earlier ingests stored in the ``runs`` table, per device kind (forward-pass and statistics rates, see
:func:`estimate_times`).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from negdb.errors import BadArgument, NotEnoughDisk, UnknownModel
from negdb.ingest.plan import IngestSpec, estimate_bytes, human_bytes, parse_activations, parse_layers
from negdb.models.checkpoints import Checkpoint
from negdb.models.registry import ModelSource
from negdb.models.sizes import ModelSize, size_from_folder
from negdb.values import duration_text

STATS_BYTES_PER_NEURON = 160
"""A neuron_stats row as stored (zstd Parquet): 138 B measured on SmolLM2-135M, rounded up."""

SAME_STATS_KEYS = ("dataset", "text_field", "tokens", "seq_len", "prepend_bos", "layers", "w_reference", "seed",
                   "md_pairs", "store_dtype", "dtype")
"""Fields of an earlier done ingest's record that must match for a checkpoint to count as stored."""

_LEGACY_KEYS = {"prepend_bos": "bos"}
"""Record fields that stores written before the typed specs name otherwise."""


def activations_for(opts: IngestSpec, revisions: Sequence[str]) -> dict[str, object]:
    """The ``activations`` of each checkpoint: ``auto`` keeps all layers of the last checkpoint of a
    multi-checkpoint run (the final model for ``all``/``every:K``) and none of the others; one checkpoint keeps
    all. Any other value applies to every checkpoint."""
    if opts.activations != "auto":
        return {r: opts.activations for r in revisions}
    last = revisions[-1] if revisions else None
    return {r: "all" if r == last else "none" for r in revisions}


def _activations_text(value: object) -> str:
    return value if isinstance(value, str) else "layers=" + ",".join(map(str, value))  # type: ignore[arg-type]


@dataclass(frozen=True)
class CheckpointPlan:
    """One checkpoint of the run."""

    revision: str
    stored_run: tuple[str, str, str, list[int]] | None  # (run_id, slice_id, spec_id, layers) of an earlier
    # done ingest with the same arguments, which covers this checkpoint: nothing to do
    cached: bool | None  # weights in the local Hugging Face cache (None: not a hub model)
    keep_layers: int  # layers whose activations are kept
    weight_bytes: int | None  # one checkpoint's weight files
    array_bytes: int  # kept activations and their MLP inputs (uncompressed upper bound)
    stats_bytes: int  # neuron_stats segment
    scratch_bytes: int  # spool of the layers not kept, removed when the checkpoint is published

    @property
    def stored(self) -> bool:
        return self.stored_run is not None

    @property
    def download(self) -> bool:
        return not self.stored and self.cached is False


@dataclass(frozen=True)
class TimeEstimate:
    """Estimated hours of the checkpoints still to ingest on one device kind, from stored runs."""

    device_kind: str
    runs: int
    seconds: float | None  # None when the model's parameter count is unknown


@dataclass(frozen=True)
class DiskNeed:
    """Bytes a file system must have free for the run."""

    what: str
    path: str
    needed: int
    free: int

    @property
    def fits(self) -> bool:
        return self.needed <= self.free


@dataclass(frozen=True)
class RunPlan:
    """What ``negdb ingest`` will do (see the module docstring)."""

    model_id: str
    kind: str
    size: ModelSize | None
    tokens: int
    seq_len: int
    layers: int
    md_rows: int
    keep_weights: bool
    checkpoints: list[CheckpointPlan]
    times: list[TimeEstimate] = field(default_factory=list)
    disk: list[DiskNeed] = field(default_factory=list)

    # ---------------------------------------------------------------------------------------------- totals

    @property
    def todo(self) -> list[CheckpointPlan]:
        return [c for c in self.checkpoints if not c.stored]

    @property
    def downloads(self) -> list[CheckpointPlan]:
        return [c for c in self.checkpoints if c.download]

    def download_bytes(self) -> int:
        return sum(c.weight_bytes or 0 for c in self.downloads)

    def weights_peak(self) -> int:
        """Bytes of weights in the Hugging Face cache at once: everything downloaded with ``--keep-weights``,
        else the checkpoint being ingested and the one being prefetched."""
        sizes = [c.weight_bytes or 0 for c in self.downloads]
        return sum(sizes) if self.keep_weights else sum(sorted(sizes)[-2:])

    def array_bytes(self) -> int:
        return sum(c.array_bytes for c in self.todo)

    def stats_bytes(self) -> int:
        return sum(c.stats_bytes for c in self.todo)

    def scratch_bytes(self) -> int:
        return max((c.scratch_bytes for c in self.todo), default=0)

    def store_bytes(self) -> int:
        """Peak bytes the store's disk gains: kept arrays and statistics, plus one checkpoint's scratch."""
        return self.array_bytes() + self.stats_bytes() + self.scratch_bytes()

    # ---------------------------------------------------------------------------------------------- output

    @property
    def worth_showing(self) -> bool:
        """Whether an ingest logs this plan before it starts: several checkpoints or downloads (one local
        checkpoint announces its size when it starts, and its errors stay one line)."""
        return len(self.checkpoints) > 1 or bool(self.downloads)

    def as_dict(self) -> dict:
        out = asdict(self)
        out.update(download_bytes=self.download_bytes(), weights_peak=self.weights_peak(),
                   array_bytes=self.array_bytes(), stats_bytes=self.stats_bytes(),
                   scratch_bytes=self.scratch_bytes(), store_bytes=self.store_bytes())
        return out

    def render(self) -> str:
        revs = [c.revision for c in self.checkpoints]
        shown = ", ".join(revs) if len(revs) <= 4 else f"{revs[0]}, {revs[1]}, ..., {revs[-1]}"
        lines = [f"plan: {self.model_id}, {len(revs)} checkpoint(s) ({shown}); {self.tokens:,} tokens "
                 f"(windows of {self.seq_len}) x {self.layers} layers"
                 + (f" x {self.size.d_mlp:,} neurons" if self.size else "")
                 + (f"; {self.size.n_params / 1e6:,.0f}M parameters" if self.size and self.size.n_params else "")]
        todo = self.todo
        if len(todo) < len(revs):
            lines.append(f"  already stored: {len(revs) - len(todo)} checkpoint(s); to ingest: {len(todo)}")
        if not todo:
            lines.append("  nothing to do")
            return "\n".join(lines)
        if self.kind == "hub":
            dl = self.downloads
            if dl:
                each = dl[0].weight_bytes
                hygiene = ("kept (--keep-weights)" if self.keep_weights else
                           "each removed once ingested, one prefetched meanwhile")
                lines.append(f"  downloads: {len(dl)} checkpoint(s)"
                             + (f" x {human_bytes(each)} = {human_bytes(self.download_bytes())}" if each else
                                " (sizes unknown)")
                             + f"; {hygiene}: at most {human_bytes(self.weights_peak())} in the cache at once")
            else:
                lines.append("  downloads: none (every checkpoint is in the local Hugging Face cache)")
        kept = [c for c in todo if c.keep_layers]
        who = ("none" if not kept else kept[0].revision if len(kept) == 1 else f"{len(kept)} checkpoints")
        lines.append(f"  activations kept for {who}: {human_bytes(self.array_bytes())}; statistics for "
                     f"{len(todo)}: {human_bytes(self.stats_bytes())}; scratch of one checkpoint at a time: "
                     f"{human_bytes(self.scratch_bytes())} (md inputs of {self.md_rows:,} token rows included)")
        for need in self.disk:
            lines.append(f"  disk ({need.what}): needs {human_bytes(need.needed)}, {need.path} has "
                         f"{human_bytes(need.free)} free" + ("" if need.fits else "  <- too small"))
        if any(not d.fits for d in self.disk):
            lines.append(f"  this run would be refused: shrink it with {self.shrink_options()}")
        if not self.times:
            lines.append("  time: no stored ingest timings in this store yet (a small ingest calibrates it)")
        for t in self.times:
            when = "unknown (parameter count unknown)" if t.seconds is None else duration_text(t.seconds)
            lines.append(f"  time on {t.device_kind} (from {t.runs} stored run(s)): {when}")
        return "\n".join(lines)

    # ---------------------------------------------------------------------------------------------- refusal

    def check_disk(self) -> None:
        """Raise :class:`NotEnoughDisk` naming what shrinks the run when a file system cannot hold it."""
        short = [d for d in self.disk if not d.fits]
        if not short:
            return
        what = "; ".join(f"{d.what} needs {human_bytes(d.needed)} but {d.path} has {human_bytes(d.free)} free"
                         for d in short)
        raise NotEnoughDisk(f"not enough disk space for this run: {what}; shrink it with {self.shrink_options()}")

    def shrink_options(self) -> str:
        todo = self.todo
        opts = []
        if self.array_bytes():
            opts.append(f"--activations none (saves {human_bytes(self.array_bytes())})")
        if len(todo) > 1:
            opts.append("fewer --checkpoints (every:K)")
        opts.append("fewer --tokens or --layers (arrays, statistics and scratch shrink in proportion)")
        if self.keep_weights and self.downloads:
            opts.append(f"dropping --keep-weights (saves {human_bytes(self.weights_peak())})")
        opts.append("or another --store")
        return ", ".join(opts)


# -------------------------------------------------------------------------------------------------- sizes


def model_size(source: ModelSource, checkpoint: Checkpoint) -> ModelSize:
    """The size of ``checkpoint`` without loading it (raises :class:`UnknownModel` when it cannot be told)."""
    if source.size is not None:
        return source.size
    if source.kind in ("local", "steps"):
        size = size_from_folder(Path(checkpoint.location))
    elif source.kind == "hub":
        from negdb.models import hub

        folder = hub.snapshot_dir(checkpoint.location, checkpoint.revision)
        size = size_from_folder(folder) if folder is not None else _hub_config_size(checkpoint)
    else:
        size = _gguf_size(Path(source.location))
    if size is None:
        raise UnknownModel(f"cannot plan {source.model_id}@{checkpoint.revision}: its config is not on this machine")
    return size


def _hub_config_size(checkpoint: Checkpoint) -> ModelSize | None:
    from negdb.errors import NegdbError
    from negdb.models.loading import _hub_config
    from negdb.models.sizes import _dims

    try:
        config, _ = _hub_config(checkpoint.location, checkpoint.revision)
    except NegdbError:
        return None
    layers, width, mlp = _dims(config)
    return ModelSize(None, layers, width, mlp, None)


def _gguf_size(path: Path) -> ModelSize | None:
    """Layers, widths and parameters from a GGUF file's header fields and tensor shapes (weights are mapped,
    not read)."""
    try:
        from gguf import GGUFReader
    except ImportError:  # pragma: no cover - gguf is a dependency
        return None
    reader = GGUFReader(str(path))
    arch = bytes(reader.fields["general.architecture"].parts[-1]).decode()

    def field_int(name: str) -> int:
        f = reader.fields[f"{arch}.{name}"]
        return int(f.parts[f.data[0]][0])

    params = sum(int(t.n_elements) for t in reader.tensors)
    return ModelSize(params, field_int("block_count"), field_int("embedding_length"),
                     field_int("feed_forward_length"), path.stat().st_size)


# -------------------------------------------------------------------------------------------------- the store


def _done_runs(root: Path | str, model_id: str) -> list[dict]:
    from negdb.store.catalog import Catalog
    from negdb.store.objects import is_url

    if not is_url(root) and not (Path(root) / "tables" / "runs").is_dir():
        return []
    with Catalog(root) as cat:
        rows = cat.arrow("SELECT run_id, model_id, revision, slice_id, spec_id, layers, config_json, timings_json "
                         "FROM runs WHERE kind = 'ingest' AND status = 'done'"
                         + (" AND model_id = ?" if model_id else ""), [model_id] if model_id else None).to_pylist()
    for r in rows:
        r["root"] = root
        r["config"] = json.loads(r.pop("config_json") or "{}")
        r["timings"] = json.loads(r.pop("timings_json") or "{}")
    return rows


def _stored(runs: list[dict], opts: IngestSpec, revision: str, keep: int
            ) -> tuple[str, str, str, list[int]] | None:
    """The done run that covers ``revision`` with these arguments (and at least ``keep`` kept layers)."""
    want = opts.record()

    def same(cfg: dict, key: str) -> bool:
        return cfg.get(key, cfg.get(_LEGACY_KEYS.get(key, key))) == want[key]

    for r in runs:
        cfg = r["config"]
        if r["revision"] == revision and all(same(cfg, k) for k in SAME_STATS_KEYS) \
                and len(cfg.get("activations_kept", [])) >= keep and _arrays_intact(r, keep):
            return r["run_id"], r["slice_id"], r["spec_id"], list(r["layers"] or [])
    return None


def _arrays_intact(run: dict, keep: int) -> bool:
    """Whether a folder store still holds ``keep`` whole activation arrays of the run's checkpoint and slice, with
    their token vectors and md inputs (``negdb repair`` quarantines damaged ones: the ingest then restores them, so
    such a checkpoint is not stored). Object stores publish arrays immutably: always intact."""
    from negdb.store.arrays import layer_name, md_group_name
    from negdb.store.catalog import Catalog
    from negdb.store.layout import StoreLayout
    from negdb.store.objects import is_url

    if keep == 0 or is_url(run["root"]):
        return True
    layout = StoreLayout(Path(run["root"]))
    with Catalog(layout.root) as cat:
        rows = cat.arrow("SELECT layer, array_path FROM activations WHERE model_id = ? AND revision = ? AND "
                         "slice_id = ?", [run["model_id"], run["revision"], run["slice_id"]]).to_pylist()
        spec = cat.arrow("SELECT md_pairs, md_seed FROM stat_specs WHERE spec_id = ? LIMIT 1",
                         [run["spec_id"]]).to_pylist()
    if not spec:
        return False
    group = layout.acts_group(run["model_id"], run["revision"], run["slice_id"])
    md = Path("md") / md_group_name(spec[0]["md_pairs"], spec[0]["md_seed"])
    if not all((group / v / "zarr.json").exists() for v in ("token_ids", "window", "position", md / "pairs")):
        return False
    whole = {r["layer"] for r in rows if (layout.root / r["array_path"] / "zarr.json").exists()
             and (group / md / layer_name(r["layer"]) / "zarr.json").exists()}
    return len(whole) >= keep


def stored_run(catalog: Path | str, opts: IngestSpec, revision: str, keep: int
               ) -> tuple[str, str, str, list[int]] | None:
    """The done ingest run in the store at ``catalog`` (a folder or URL) that covers ``revision`` of ``opts``
    with at least ``keep`` kept layers, as (run_id, slice_id, spec_id, layers); None if there is none yet."""
    from negdb.models.registry import resolve

    return _stored(_done_runs(catalog, resolve(opts.model).model_id), opts, revision, keep)


def lease_key(model_id: str, revision: str, opts: IngestSpec) -> str:
    """The lease of one checkpoint's ingest into an object store: the same arguments, the same lease."""
    from negdb.store.layout import short_hash

    record = opts.record()
    return short_hash("ingest-lease-v1", model_id, revision, {k: record[k] for k in SAME_STATS_KEYS})


def estimate_times(runs: list[dict], *, tokens: int, size: ModelSize, layers: int, checkpoints: int
                   ) -> list[TimeEstimate]:
    """Hours for ``checkpoints`` ingests per device kind, from stored done runs that recorded their device.

    Forward passes cost in proportion to tokens x parameters, statistics to tokens x neurons; each device kind's
    two rates are ratios of sums over its runs (``stream_s`` and ``stats_s`` timings), so long runs weigh most.
    """
    per: dict[str, list[float]] = {}
    for r in runs:
        cfg, t = r["config"], r["timings"]
        kind, n_params, d_mlp = cfg.get("device_kind"), cfg.get("n_params"), cfg.get("d_mlp")
        n_tokens = (cfg.get("slice") or {}).get("n_tokens")
        if not (kind and n_params and d_mlp and n_tokens and t.get("stream_s") and t.get("stats_s")):
            continue
        acc = per.setdefault(kind, [0, 0.0, 0.0, 0.0, 0.0])
        acc[0] += 1
        acc[1] += n_tokens * n_params
        acc[2] += t["stream_s"]
        acc[3] += n_tokens * len(r["layers"] or []) * d_mlp
        acc[4] += t["stats_s"]
    out = []
    for kind, (n, fwd_work, fwd_s, stat_work, stat_s) in sorted(per.items()):
        seconds = None
        if size.n_params:
            seconds = checkpoints * (tokens * size.n_params / (fwd_work / fwd_s)
                                     + tokens * layers * size.d_mlp / (stat_work / stat_s))
        out.append(TimeEstimate(kind, int(n), seconds))
    return out


def _free(path: Path) -> tuple[Path, int, int]:
    probe = path
    while not probe.exists():
        probe = probe.parent
    return probe, shutil.disk_usage(probe).free, os.stat(probe).st_dev


def disk_needs(store_root: Path, store_bytes: int, weights_bytes: int, hub_cache: Path | None) -> list[DiskNeed]:
    """What the store's and the cache's file systems must hold (one need when they are the same disk)."""
    probe, free, dev = _free(store_root)
    if hub_cache is None or not weights_bytes:
        return [DiskNeed("store", str(probe), store_bytes, free)]
    cprobe, cfree, cdev = _free(hub_cache)
    if cdev == dev:
        return [DiskNeed("store and Hugging Face cache", str(probe), store_bytes + weights_bytes, free)]
    return [DiskNeed("store", str(probe), store_bytes, free),
            DiskNeed("Hugging Face cache", str(cprobe), weights_bytes, cfree)]


def plan_run(opts: IngestSpec, layout, source: ModelSource, selected: list[Checkpoint], *,
             keep_weights: bool = False, catalog: Path | str | None = None) -> RunPlan:
    """The plan of ingesting ``selected`` checkpoints of ``source`` into the store at ``layout``; ``catalog``: the
    store whose runs say what is stored and how long ingests took, when not ``layout``'s (an object store whose
    local staging folder is ``layout``)."""
    catalog = catalog if catalog is not None else layout.root
    size = model_size(source, selected[-1])
    n_windows = opts.tokens // opts.seq_len
    if n_windows < 1:
        raise BadArgument(f"--tokens ({opts.tokens}) is smaller than --seq-len ({opts.seq_len}): "
                          "ask for at least one window")
    tokens = n_windows * opts.seq_len
    layers = parse_layers(opts.layer_text, size.n_layers)
    md_rows = min(2 * min(opts.md_pairs, tokens // 2), tokens)
    specs = activations_for(opts, [c.revision for c in selected])
    runs = _done_runs(catalog, source.model_id)
    cached: dict[str, bool | None] = {}
    if source.kind == "hub":
        from negdb.models import hub

        cached = {c.revision: hub.is_cached(c.location, c.revision) for c in selected}

    def nbytes(n_layers: int) -> int:
        return estimate_bytes(n_tokens=tokens, d_mlp=size.d_mlp, n_layers=n_layers, d_model=size.d_model,
                              md_rows=md_rows, store_dtype=opts.store_dtype) if n_layers else 0

    plans = []
    for c in selected:
        keep = len(parse_activations(_activations_text(specs[c.revision]), layers, size.n_layers))
        plans.append(CheckpointPlan(
            revision=c.revision, stored_run=_stored(runs, opts, c.revision, keep), cached=cached.get(c.revision),
            keep_layers=keep, weight_bytes=size.weight_bytes, array_bytes=nbytes(keep),
            stats_bytes=len(layers) * size.d_mlp * STATS_BYTES_PER_NEURON,
            scratch_bytes=nbytes(len(layers)) - nbytes(keep)))
    plan = RunPlan(model_id=source.model_id, kind=source.kind, size=size, tokens=tokens, seq_len=opts.seq_len,
                   layers=len(layers), md_rows=md_rows, keep_weights=keep_weights, checkpoints=plans)
    all_runs = _done_runs(catalog, "")
    times = estimate_times(all_runs, tokens=tokens, size=size, layers=len(layers), checkpoints=len(plan.todo))
    hub_cache = None
    if source.kind == "hub":
        from huggingface_hub import constants

        hub_cache = Path(constants.HF_HUB_CACHE)
    disk = disk_needs(layout.root, plan.store_bytes(), plan.weights_peak(), hub_cache) if plan.todo else []
    return replace(plan, times=times, disk=disk)
