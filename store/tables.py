"""Arrow schemas of the catalog tables, with a one-line meaning per column."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa


@dataclass(frozen=True)
class Table:
    """One catalog table: its name, columns (name, Arrow type, meaning) and what it is."""

    name: str
    doc: str
    columns: tuple[tuple[str, pa.DataType, str], ...]

    @property
    def schema(self) -> pa.Schema:
        return pa.schema([(name, typ) for name, typ, _ in self.columns])

    def from_rows(self, rows: list[dict]) -> pa.Table:
        """Build an Arrow table of this schema from dicts (missing keys become NULL)."""
        return pa.Table.from_pylist([{c: r.get(c) for c, _, _ in self.columns} for r in rows], schema=self.schema)


TS = pa.timestamp("us", tz="UTC")

MODELS = Table("models", "one row per model known to the store", (
    ("model_id", pa.string(), "catalog key: alias (pythia-70m), hub id or absolute local path"),
    ("kind", pa.string(), "hub | local | steps | gguf"),
    ("location", pa.string(), "hub id, folder or GGUF file it was loaded from"),
    ("family", pa.string(), "adapter family from the model table (gpt_neox, llama, ...)"),
    ("model_type", pa.string(), "transformers config.model_type"),
    ("n_layers", pa.int32(), "number of transformer layers"),
    ("d_mlp", pa.int32(), "MLP neurons per layer"),
    ("d_model", pa.int32(), "residual width"),
    ("activation", pa.string(), "nonlinearity after the pre-activation"),
    ("config_json", pa.string(), "the model config as JSON"),
))

CHECKPOINTS = Table("checkpoints", "one row per stored model checkpoint", (
    ("model_id", pa.string(), "model key"),
    ("revision", pa.string(), "checkpoint name: stepN, main or final"),
    ("step", pa.int64(), "training step (NULL if unknown)"),
    ("tokens_seen", pa.int64(), "training tokens seen at this step (NULL if unknown)"),
    ("commit", pa.string(), "resolved hub commit hash (NULL for local files)"),
    ("location", pa.string(), "hub id or folder of this checkpoint"),
))

SLICES = Table("slices", "one row per exact dataset slice (token windows) used for statistics", (
    ("slice_id", pa.string(), "hash of the token ids, window length and BOS policy"),
    ("dataset", pa.string(), "corpus spec (wikitext-2, a file, hf:...)"),
    ("source", pa.string(), "file path or dataset id of the corpus"),
    ("tokenizer", pa.string(), "tokenizer name"),
    ("seq_len", pa.int32(), "tokens per window"),
    ("n_windows", pa.int32(), "number of windows"),
    ("n_tokens", pa.int64(), "tokens in the slice (n_windows * seq_len)"),
    ("token_sha256", pa.string(), "SHA-256 of the int32 token ids"),
    ("text_sha256", pa.string(), "SHA-256 of the corpus text"),
    ("bos_token_id", pa.int32(), "BOS token prepended to each window (NULL: none)"),
))

STAT_SPECS = Table("stat_specs", "how a set of statistics was computed", (
    ("spec_id", pa.string(), "hash of the fields below"),
    ("w_reference", pa.string(), "exact (analytic N(0,1) quantiles) or sample (seeded N(0,1) draws)"),
    ("w_seed", pa.int64(), "seed of the N(0,1) sample (NULL for exact)"),
    ("md_pairs", pa.int64(), "token pairs drawn for mapping difficulty"),
    ("md_seed", pa.int64(), "seed of the token pairs"),
    ("value_dtype", pa.string(), "dtype of the stored pre-activations the statistics were computed from"),
))

ACTIVATIONS = Table("activations", "stored pre-activation arrays, one row per layer", (
    ("model_id", pa.string(), "model key"),
    ("revision", pa.string(), "checkpoint"),
    ("slice_id", pa.string(), "dataset slice"),
    ("layer", pa.int32(), "layer index"),
    ("array_path", pa.string(), "Zarr array path relative to the store"),
    ("dtype", pa.string(), "stored dtype"),
    ("n_tokens", pa.int64(), "rows (tokens)"),
    ("d_mlp", pa.int32(), "columns (neurons)"),
    ("run_id", pa.string(), "run that stored it"),
))

RUNS = Table("runs", "one row per run; the latest state of each run", (
    ("run_id", pa.string(), "run key"),
    ("kind", pa.string(), "ingest"),
    ("model_id", pa.string(), "model key"),
    ("revision", pa.string(), "checkpoint"),
    ("slice_id", pa.string(), "dataset slice"),
    ("spec_id", pa.string(), "statistics spec"),
    ("layers", pa.list_(pa.int32()), "layers this run computes"),
    ("status", pa.string(), "running | done | failed | interrupted"),
    ("config_json", pa.string(), "the run's arguments as JSON"),
    ("versions_json", pa.string(), "library versions as JSON"),
    ("host", pa.string(), "machine name"),
    ("pid", pa.int64(), "process id of the last writer"),
    ("resumes", pa.int32(), "times the run was resumed after an interruption"),
    ("started_at", TS, "first start (UTC)"),
    ("updated_at", TS, "last state change (UTC)"),
    ("timings_json", pa.string(), "seconds per phase as JSON"),
    ("message", pa.string(), "error or note"),
))

NEURON_KEYS: tuple[tuple[str, pa.DataType, str], ...] = (
    ("model_id", pa.string(), "model key"),
    ("revision", pa.string(), "checkpoint"),
    ("slice_id", pa.string(), "dataset slice the statistics were computed on"),
    ("spec_id", pa.string(), "statistics spec (stat_specs)"),
    ("layer", pa.int32(), "layer index"),
    ("neuron", pa.int32(), "neuron index within the layer"),
)


def neuron_stats_table() -> Table:
    """The per-neuron statistics table: keys, the statistics of negdb.stats, and the run."""
    from negdb.stats.schema import NEURON_STATS

    stats = tuple((c.name, c.arrow_type, c.description) for c in NEURON_STATS)
    return Table("neuron_stats", "per-neuron statistics of MLP pre-activations",
                 NEURON_KEYS + stats + (("run_id", pa.string(), "run that computed it"),))


NEURON_SETS = Table("neuron_sets", "one row per saved neuron set (immutable; the name is unique)", (
    ("name", pa.string(), "the set's name ([A-Za-z0-9_.-]{1,64}); one segment per name, first writer wins"),
    ("set_id", pa.string(), "SHA-256 of the statistics keys and the sorted (layer, neuron) members"),
    ("model_id", pa.string(), "model key of the statistics the set was selected from"),
    ("revision", pa.string(), "checkpoint of those statistics"),
    ("slice_id", pa.string(), "dataset slice of those statistics"),
    ("spec_id", pa.string(), "statistics spec of those statistics"),
    ("expression", pa.string(), "canonical JSON of the picker (where, top/bottom + by, random_like + seed, layers)"),
    ("counts_json", pa.string(), "members per layer as JSON {layer: count} over the layers the picker considered"),
    ("n_members", pa.int64(), "number of member neurons"),
    ("created_at", TS, "when the set was saved (UTC)"),
))

NEURON_SET_MEMBERS = Table("neuron_set_members", "the member neurons of each saved set, one segment per set_id", (
    ("set_id", pa.string(), "the set (neuron_sets.set_id)"),
    ("layer", pa.int32(), "layer index"),
    ("neuron", pa.int32(), "neuron index within the layer"),
))


def all_tables() -> tuple[Table, ...]:
    return (MODELS, CHECKPOINTS, SLICES, STAT_SPECS, ACTIVATIONS, RUNS, neuron_stats_table(), NEURON_SETS,
            NEURON_SET_MEMBERS)
