"""Write a synthetic negdb store at the scale of Pythia-1b x 154 checkpoints (catalog only, no activations).

    .venv/bin/python bench/synthetic_catalog.py --out /tmp/negdb-synth          # 16 x 8192 x 154 = 20.2M rows
    .venv/bin/python bench/synthetic_catalog.py --out /tmp/s --checkpoints 10   # smaller

What is written is what a real ``negdb ingest --model pythia-1b --checkpoints all`` publishes to ``tables/``:
one ``models`` row, one ``checkpoints`` segment per revision (``step0 ... step143000``), one ``slices`` and one
``stat_specs`` row, one ``runs`` record and one ``neuron_stats`` segment per checkpoint (16 layers x 8,192
neurons, the real schema of :func:`negdb.store.tables.neuron_stats_table`, rows in (layer, neuron) order as
``negdb.ingest.publish.publish_stats`` writes them), every segment through
:func:`negdb.store.segments.write_segment`. No ``activations`` rows: the store has no Zarr arrays.

Values are seeded and plausible, not real: each neuron has a fixed propensity to become non-Gaussian;
``w_dist`` is gamma-distributed (most neurons 0.05..0.3) with a heavy tail that grows with training (about 3%
above 0.9 at the end); the negative/positive split, moments, quantiles (rounded to float16, as statistics of
float16 values are), ``w_pct`` (percentile within the layer) and ``md`` follow from it.

``--layout partitioned`` puts each neuron_stats segment under ``neuron_stats/model_id=<percent-encoded>/
revision=<percent-encoded>/`` (hive style, so DuckDB skips other checkpoints' files without opening them), as
``negdb ingest`` does (:func:`negdb.ingest.publish.stats_segment_path`); the default ``flat`` is the older layout.
Both write the scan encoding of ``publish_stats`` (:func:`negdb.store.segments.write_parquet`).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pyarrow as pa

from negdb.models.registry import PYTHIA_REVISIONS, PYTHIA_TOKENS_PER_STEP
from negdb.store.layout import StoreLayout, short_hash
from negdb.store.segments import write_segment
from negdb.store.tables import CHECKPOINTS, MODELS, RUNS, SLICES, STAT_SPECS, neuron_stats_table

MODEL_ID = "pythia-1b"
N_TOKENS = 16_384
SEQ_LEN = 512


def _pythia_1b_row(n_layers: int, d_mlp: int) -> dict:
    config = {"model_type": "gpt_neox", "num_hidden_layers": n_layers, "intermediate_size": d_mlp,
              "hidden_size": 2048, "hidden_act": "gelu", "synthetic": True}
    return {"model_id": MODEL_ID, "kind": "hub", "location": "EleutherAI/pythia-1b", "family": "gpt_neox",
            "model_type": "gpt_neox", "n_layers": n_layers, "d_mlp": d_mlp, "d_model": 2048,
            "activation": "gelu", "config_json": json.dumps(config)}


def _ranks_pct(values: np.ndarray) -> np.ndarray:
    """Percentile (0..100) of each value within its row of ``values`` (layers x neurons); no ties in practice."""
    order = values.argsort(axis=1)
    ranks = np.empty_like(order)
    rows = np.arange(values.shape[0])[:, None]
    ranks[rows, order] = np.arange(values.shape[1])[None, :]
    return 100.0 * (ranks + 0.5) / values.shape[1]


def neuron_stats_rows(rng: np.random.Generator, propensity: np.ndarray, progress: float, *, revision: str,
                      slice_id: str, spec_id: str, run_id: str) -> pa.Table:
    """One checkpoint's neuron_stats segment: ``propensity`` is (layers, neurons) in [0, 1]; progress in [0, 1]."""
    n_layers, d_mlp = propensity.shape
    shape = (n_layers, d_mlp)
    # body: gamma(2, 0.06) ~ mean 0.12; tail: neurons with a high propensity drift far from Gaussian in training
    w = rng.gamma(2.0, 0.06, size=shape)
    tail = propensity > 0.985 - 0.015 * progress                    # 1.5% at step 0 .. 3% at the end
    w = np.where(tail, w + 0.2 + 0.9 * progress + (0.2 + 0.5 * progress) * rng.pareto(3.0, size=shape), w)
    neg_share = np.clip(rng.beta(2.0, 2.0, size=shape) + 0.35 * tail, 0.0, 1.0)
    std = rng.lognormal(-1.0, 0.4, size=shape)
    mean = rng.normal(-0.3, 0.25, size=shape) * std
    skew = rng.normal(0.0, 0.3, size=shape) - 4.0 * w * (neg_share - 0.5)
    kurt = rng.gamma(1.5, 0.6, size=shape) + 6.0 * w
    z = np.array([-2.33, -1.64, -0.67, 0.0, 0.67, 1.64, 2.33])
    qs = mean[..., None] + std[..., None] * (z + 0.2 * skew[..., None] * (z**2 - 1) / 6)
    f16 = lambda a: a.astype(np.float16).astype(np.float64)  # noqa: E731  (statistics of float16 values)
    n_tok = np.full(shape, N_TOKENS, np.int64)
    cols: dict[str, np.ndarray] = {
        "n": n_tok,
        "mean": mean.astype(np.float32).astype(np.float64),
        "std": std.astype(np.float32).astype(np.float64),
        "skew": skew.astype(np.float32).astype(np.float64),
        "kurtosis": kurt.astype(np.float32).astype(np.float64),
        "min": f16(qs[..., 0] - std * (1.5 + w)),
        "max": f16(qs[..., -1] + std * (1.5 + w)),
        **{name: f16(qs[..., i]) for i, name in enumerate(("q01", "q05", "q25", "q50", "q75", "q95", "q99"))},
        "frac_neg": np.round(np.clip(0.5 - mean / (2.5 * std), 0.0, 1.0) * N_TOKENS) / N_TOKENS,
        "mean_neg": (mean - 0.8 * std).astype(np.float32).astype(np.float64),
        "mean_pos": (mean + 0.8 * std).astype(np.float32).astype(np.float64),
        "w_dist": w,
        "w_dist_neg": w * neg_share,
        "w_dist_pos": w * (1.0 - neg_share),
        "w_pct": _ranks_pct(w),
        "md": (rng.lognormal(-7.8, 0.3, size=shape) * (1.0 + 0.5 * w)),
    }
    table_def = neuron_stats_table()
    n = n_layers * d_mlp
    const = {"model_id": MODEL_ID, "revision": revision, "slice_id": slice_id, "spec_id": spec_id,
             "run_id": run_id}
    arrays = []
    for name, typ, _ in table_def.columns:
        if name in const:
            arrays.append(pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32)),
                                                         pa.array([const[name]], typ)).cast(typ))
        elif name == "layer":
            arrays.append(pa.array(np.repeat(np.arange(n_layers, dtype=np.int32), d_mlp), typ))
        elif name == "neuron":
            arrays.append(pa.array(np.tile(np.arange(d_mlp, dtype=np.int32), n_layers), typ))
        else:
            arrays.append(pa.array(cols[name].reshape(-1), typ))
    return pa.Table.from_arrays(arrays, schema=table_def.schema)


def partitioned_path(layout: StoreLayout, model_id: str, revision: str, name: str) -> Path:
    """Where the proposed layout puts a neuron_stats segment (hive-style folders, values percent-encoded)."""
    return (layout.table_dir("neuron_stats") / f"model_id={quote(model_id, safe='')}"
            / f"revision={quote(revision, safe='')}" / name)


def write_store(out: Path, *, n_layers: int = 16, d_mlp: int = 8192, n_checkpoints: int = 154, seed: int = 0,
                layout_kind: str = "flat", quiet: bool = False) -> dict:
    """Write the synthetic store at ``out`` (must not exist, or be a previous synthetic store). Returns a summary."""
    if out.exists():
        if not (out / "negdb.json").exists():
            raise SystemExit(f"{out} exists and is not a negdb store: pick another --out")
        shutil.rmtree(out)
    layout = StoreLayout(out).init()
    revisions = list(PYTHIA_REVISIONS)
    if n_checkpoints < len(revisions):  # a thinned sweep that keeps the first and the last checkpoint
        idx = np.unique(np.linspace(0, len(revisions) - 1, n_checkpoints).round().astype(int))
        revisions = [revisions[i] for i in idx]
    elif n_checkpoints > len(revisions):
        raise SystemExit(f"--checkpoints is at most {len(revisions)} (Pythia's revisions)")
    slice_id = short_hash("synthetic-slice", seed)
    spec = {"spec_id": short_hash("exact", None, 50_000, 0, "float16"), "w_reference": "exact", "w_seed": None,
            "md_pairs": 50_000, "md_seed": 0, "value_dtype": "float16"}
    slice_row = {"slice_id": slice_id, "dataset": "wikitext-2", "source": "synthetic", "tokenizer": "pythia",
                 "seq_len": SEQ_LEN, "n_windows": N_TOKENS // SEQ_LEN, "n_tokens": N_TOKENS,
                 "token_sha256": "0" * 64, "text_sha256": "0" * 64, "bos_token_id": None}
    for table, row, key in ((MODELS, _pythia_1b_row(n_layers, d_mlp), (MODEL_ID,)),
                            (SLICES, slice_row, (slice_id,)), (STAT_SPECS, spec, (spec["spec_id"],))):
        write_segment(layout.table_dir(table.name) / f"{short_hash(*key)}.parquet", table.from_rows([row]))

    rng0 = np.random.default_rng(seed)
    propensity = rng0.random((n_layers, d_mlp))
    last_step = int(revisions[-1].removeprefix("step"))
    start = time.perf_counter()
    rows = 0
    for i, revision in enumerate(revisions):
        step = int(revision.removeprefix("step"))
        progress = np.log1p(step) / np.log1p(last_step)
        job_key = short_hash(MODEL_ID, revision, slice_id, spec["spec_id"], list(range(n_layers)))
        run_id = short_hash("run", job_key, n=16)
        write_segment(layout.table_dir("checkpoints") / f"{short_hash(MODEL_ID, revision)}.parquet",
                      CHECKPOINTS.from_rows([{"model_id": MODEL_ID, "revision": revision, "step": step,
                                              "tokens_seen": step * PYTHIA_TOKENS_PER_STEP, "commit": None,
                                              "location": "EleutherAI/pythia-1b"}]))
        table = neuron_stats_rows(np.random.default_rng([seed, i]), propensity, float(progress), revision=revision,
                                  slice_id=slice_id, spec_id=spec["spec_id"], run_id=run_id)
        if layout_kind == "partitioned":
            write_segment(partitioned_path(layout, MODEL_ID, revision, f"{job_key}.parquet"), table, scan=True)
        else:
            write_segment(layout.table_dir("neuron_stats") / f"{job_key}.parquet", table, scan=True)
        now = datetime.now(timezone.utc)
        write_segment(layout.table_dir("runs") / f"{run_id}.parquet", RUNS.from_rows([{
            "run_id": run_id, "kind": "ingest", "model_id": MODEL_ID, "revision": revision, "slice_id": slice_id,
            "spec_id": spec["spec_id"], "layers": list(range(n_layers)), "status": "done",
            "config_json": json.dumps({"synthetic": True, "seed": seed}), "versions_json": "{}", "host": "synthetic",
            "pid": 0, "resumes": 0, "started_at": now, "updated_at": now, "timings_json": "{}", "message": None}]),
            exclusive=False)
        rows += table.num_rows
        if not quiet and (i % 10 == 0 or i == len(revisions) - 1):
            print(f"  {i + 1}/{len(revisions)} checkpoints, {rows:,} rows, {time.perf_counter() - start:.0f} s",
                  flush=True)
    size = sum(p.stat().st_size for p in (out / "tables").rglob("*.parquet"))
    return {"store": str(out), "model": MODEL_ID, "revisions": revisions, "rows": rows, "bytes": size,
            "layout": layout_kind,
            "seconds": time.perf_counter() - start}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("/tmp/negdb-synth"), help="store folder (replaced)")
    ap.add_argument("--layers", type=int, default=16)
    ap.add_argument("--neurons", type=int, default=8192)
    ap.add_argument("--checkpoints", type=int, default=154, help="at most 154 (Pythia's revisions)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--layout", choices=["flat", "partitioned"], default="flat",
                    help="flat: what negdb ingest writes; partitioned: the proposed layout (see the docstring)")
    args = ap.parse_args()
    info = write_store(args.out, n_layers=args.layers, d_mlp=args.neurons, n_checkpoints=args.checkpoints,
                       seed=args.seed, layout_kind=args.layout)
    print(f"wrote {info['rows']:,} neuron_stats rows ({len(info['revisions'])} checkpoints, {info['layout']} layout) "
          f"to {info['store']}: "
          f"{info['bytes'] / 1e9:.2f} GB in {info['seconds']:.0f} s")


if __name__ == "__main__":
    main()
