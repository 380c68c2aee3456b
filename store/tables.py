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
    ("weights_sha256", pa.string(), "SHA-256 over the names and SHA-256s of the checkpoint's weight files"),
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
    ("forward_dtype", pa.string(), "dtype of the forward pass that produced them (float32, bfloat16, float16)"),
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


EVAL_RESULTS = Table("eval_results", "one row per stored evaluation: one benchmark under one intervention", (
    ("result_id", pa.string(), "SHA-256 key of (model, checkpoint commit, mode, set_id, benchmark spec, scoring, limit, seed)"),
    ("model_id", pa.string(), "model key"),
    ("revision", pa.string(), "checkpoint evaluated"),
    ("commit", pa.string(), "resolved hub commit of the checkpoint (NULL for local files)"),
    ("mode", pa.string(), "intervention mode (neg, pos, both, mean, posrelu, signflip); 'none' for the baseline"),
    ("set_id", pa.string(), "neuron set ablated (neuron_sets.set_id); NULL for the baseline"),
    ("n_neurons", pa.int64(), "neurons in the set (0 for the baseline)"),
    ("benchmark", pa.string(), "benchmark name (benchmarks.json), or lm-eval:<task> for an lm-evaluation-harness task (negdb lm-eval)"),
    ("bench_hash", pa.string(), "SHA-256 of the benchmark definition and its data files (lm-eval: the task config and local data)"),
    ("scoring_json", pa.string(), "scoring conventions as JSON: BOS policy and prefix token, window, rule (lm-eval: its version, few-shot, seed, task config)"),
    ("item_limit", pa.int64(), "items per group kept (tokens for perplexity); NULL = all"),
    ("sample_seed", pa.int64(), "seed of the --limit subsample"),
    ("n_items", pa.int64(), "items scored (windows for perplexity)"),
    ("primary_metric", pa.string(), "the benchmark's primary metric"),
    ("primary_value", pa.float64(), "its value (macro accuracy for grouped benchmarks; perplexity for ppl)"),
    ("seconds", pa.float64(), "wall time of the evaluation (summed over resumed chunks)"),
    ("created_at", TS, "when the result was stored (UTC)"),
    ("versions_json", pa.string(), "library versions as JSON"),
))

EVAL_METRICS = Table("eval_metrics", "every metric of every stored evaluation, overall and per group", (
    ("result_id", pa.string(), "the evaluation (eval_results.result_id)"),
    ("benchmark", pa.string(), "benchmark name"),
    ("metric", pa.string(), "acc_sum, acc_mean, acc, acc_norm, ppl, nll"),
    ("level", pa.string(), "overall (micro over items), macro (mean over groups), or the grouping field (UID, phenomenon, field, ...)"),
    ("grp", pa.string(), "group value at that level (NULL for overall and macro)"),
    ("value", pa.float64(), "the metric's value"),
    ("n", pa.int64(), "items (windows, tokens for ppl) behind the value"),
))

EVAL_ITEMS = Table("eval_items", "per-item scores of every stored evaluation (windows for perplexity)", (
    ("result_id", pa.string(), "the evaluation (eval_results.result_id)"),
    ("benchmark", pa.string(), "benchmark name"),
    ("item", pa.int32(), "item position in the benchmark (window index for perplexity)"),
    ("item_id", pa.string(), "the item's own id (BLiMP pairID, TSE item; first token offset for perplexity)"),
    ("grp", pa.string(), "grouping value (BLiMP UID, TSE phenomenon), else NULL"),
    ("meta_json", pa.string(), "the item's grouping fields as JSON (field, linguistics_term, category, ...)"),
    ("correct", pa.bool_(), "primary decision: good > bad by total log-prob (pairs), acc (choices), greedy (LAMBADA)"),
    ("correct_alt", pa.bool_(), "second decision: mean per-token log-prob (pairs), acc_norm (choices), else NULL"),
    ("logprobs", pa.list_(pa.float64()), "total log-probability of each request (good, bad / each choice); -NLL for a window"),
    ("n_tokens", pa.list_(pa.int32()), "scored tokens of each request (predicted tokens for a window)"),
    ("greedy", pa.list_(pa.bool_()), "whether each request's tokens were all the argmax"),
    ("prefix_id", pa.int32(), "token prepended before the context (BOS policy), else NULL"),
))

EVAL_TOKENS = Table("eval_tokens", "per-token losses of perplexity evaluations (for surprisal analyses)", (
    ("result_id", pa.string(), "the evaluation (eval_results.result_id)"),
    ("window", pa.int32(), "window index"),
    ("position", pa.int64(), "token position in the tokenized text"),
    ("token_id", pa.int32(), "the token"),
    ("nll", pa.float64(), "negative log-likelihood of the token given its window's earlier tokens (natural log)"),
))

ABLATIONS = Table("ablations", "one row per condition of a stored ablation experiment (negdb ablate)", (
    ("ablation_id", pa.string(), "key of the experiment (model, checkpoint, main set, mode, evals, controls, seeds, limits)"),
    ("condition", pa.string(), "baseline, ablation, random, ppl-matched"),
    ("seed", pa.int64(), "control seed (random), else NULL"),
    ("model_id", pa.string(), "model key"),
    ("revision", pa.string(), "checkpoint"),
    ("mode", pa.string(), "intervention mode ('none' for the baseline)"),
    ("set_id", pa.string(), "neuron set of the condition (NULL for the baseline)"),
    ("set_name", pa.string(), "its saved name"),
    ("n_neurons", pa.int64(), "neurons in the set"),
    ("fraction", pa.float64(), "ppl-matched: share of each layer's neurons (lowest w_dist) ablated; else NULL"),
    ("result_ids", pa.list_(pa.string()), "the condition's evaluations (eval_results.result_id)"),
    ("config_json", pa.string(), "the experiment's arguments as JSON"),
    ("created_at", TS, "when it was stored (UTC)"),
))


ANALYSES = Table("analyses", "one row per stored analysis (negdb analyze pos | layers | training | pairs)", (
    ("analysis_id", pa.string(), "key of the analysis: hash of its kind and every argument that changes its numbers"),
    ("kind", pa.string(), "pos, layers, training, pairs or sweep"),
    ("model_id", pa.string(), "model key"),
    ("revision", pa.string(), "checkpoint (the final one for training; NULL when not one checkpoint)"),
    ("config_json", pa.string(), "the analysis's arguments as JSON"),
    ("summary_json", pa.string(), "headline numbers and the stored results it read (ablation ids, result ids) as JSON"),
    ("seconds", pa.float64(), "wall time of the analysis itself (stored evaluations it reused not counted)"),
    ("created_at", TS, "when it was stored (UTC)"),
))

POS_SURPRISAL = Table("pos_surprisal", "per part-of-speech tag: excess surprisal of an ablation on WikiText-2 test", (
    ("analysis_id", pa.string(), "the analysis (analyses.analysis_id)"),
    ("condition", pa.string(), "ablation, random or ppl-matched"),
    ("seed", pa.int64(), "random-control seed, else NULL"),
    ("result_id", pa.string(), "the ablated perplexity evaluation (eval_results.result_id)"),
    ("baseline_id", pa.string(), "the baseline perplexity evaluation"),
    ("tag", pa.string(), "spaCy universal POS tag of the token (by largest character overlap); ALL for every token"),
    ("function_word", pa.bool_(), "tag is a function-word class (DET, ADP, AUX, PART, PRON, CCONJ, SCONJ, PUNCT)"),
    ("n_tokens", pa.int64(), "scored tokens with this tag"),
    ("baseline_nll", pa.float64(), "mean baseline surprisal (nats)"),
    ("ablated_nll", pa.float64(), "mean surprisal under the condition (nats)"),
    ("excess", pa.float64(), "mean excess surprisal: ablated minus baseline (nats per token)"),
    ("excess_total", pa.float64(), "summed excess surprisal of the tag's tokens (nats)"),
    ("share", pa.float64(), "the tag's share of the summed excess over all tokens"),
    ("token_share", pa.float64(), "the tag's share of the scored tokens"),
    ("ci_lo", pa.float64(), "95% bootstrap CI of excess (resampling windows), lower"),
    ("ci_hi", pa.float64(), "upper"),
))

LAYER_EFFECTS = Table("layer_effects", "a neuron set ablated one layer group at a time and cumulatively", (
    ("analysis_id", pa.string(), "the analysis (analyses.analysis_id)"),
    ("variant", pa.string(), "alone (only this group's layers) or cumulative (groups 0..this one)"),
    ("group_index", pa.int32(), "layer group, 0 = first layers"),
    ("layers", pa.list_(pa.int32()), "layers whose set members were ablated"),
    ("set_id", pa.string(), "the restricted neuron set (neuron_sets.set_id); NULL when it has no neurons there"),
    ("n_neurons", pa.int64(), "neurons ablated"),
    ("benchmark", pa.string(), "benchmark name, or a summary (grammar: mean of BLiMP acc_sum and TSE acc_mean)"),
    ("metric", pa.string(), "metric (acc_sum, acc_mean, ppl, nll; mean for summaries)"),
    ("level", pa.string(), "overall, macro, summary, or a grouping field (UID, field, linguistics_term, phenomenon)"),
    ("grp", pa.string(), "group value at that level (NULL for overall, macro and summary)"),
    ("n", pa.int64(), "items, windows or tokens behind the value"),
    ("baseline", pa.float64(), "unablated value"),
    ("value", pa.float64(), "ablated value"),
    ("delta", pa.float64(), "value minus baseline"),
    ("ci_lo", pa.float64(), "95% paired-bootstrap CI of delta, lower (headline rows: macro, ppl, summary; else NULL)"),
    ("ci_hi", pa.float64(), "upper"),
    ("result_id", pa.string(), "the ablated evaluation (eval_results.result_id; the baseline's when no neurons)"),
    ("baseline_id", pa.string(), "the baseline evaluation (eval_results.result_id)"),
))

TRAINING_DYNAMICS = Table("training_dynamics", "per checkpoint: w_dist distribution, top-1% cohort, overlaps, ablation effect", (
    ("analysis_id", pa.string(), "the analysis (analyses.analysis_id)"),
    ("model_id", pa.string(), "model key"),
    ("revision", pa.string(), "checkpoint"),
    ("step", pa.int64(), "training step (NULL if unknown)"),
    ("tokens_seen", pa.int64(), "training tokens seen (NULL if unknown)"),
    ("layer", pa.int32(), "layer (NULL: all layers pooled, and for ablation effects)"),
    ("quantity", pa.string(), "w_dist_mean, w_dist_p50/p90/p99/max, top_w_dist_mean, cohort_w_dist_mean, "
                              "overlap_final, overlap_prev; effects: baseline, delta_<condition>, w_minus_<control>"),
    ("benchmark", pa.string(), "ablation effects: benchmark or summary row (grammar); NULL for w_dist quantities"),
    ("metric", pa.string(), "ablation effects: metric (acc_sum, acc_mean, ppl, mean); NULL otherwise"),
    ("value", pa.float64(), "the value"),
    ("ci_lo", pa.float64(), "95% paired-bootstrap CI lower (delta_* and w_minus_* rows), else NULL"),
    ("ci_hi", pa.float64(), "upper"),
    ("n", pa.int64(), "neurons (w_dist quantities), members (set means), union size (overlaps), items (effects)"),
))

DIFF_PAIRS = Table("diff_pairs", "token pairs with nearby MLP inputs whose pre-activations of one neuron land far apart", (
    ("analysis_id", pa.string(), "the analysis (analyses.analysis_id)"),
    ("model_id", pa.string(), "model key"),
    ("revision", pa.string(), "checkpoint"),
    ("layer", pa.int32(), "layer"),
    ("neuron", pa.int32(), "neuron"),
    ("rank", pa.int32(), "1 = the most differentiating pair"),
    ("token_a", pa.int64(), "flat token index of the first token in the slice"),
    ("token_b", pa.int64(), "flat token index of the second token"),
    ("x_a", pa.float64(), "pre-activation at token_a"),
    ("x_b", pa.float64(), "pre-activation at token_b"),
    ("d_in", pa.float64(), "MLP-input distance, divided by the largest over the pairs (as md)"),
    ("d_out", pa.float64(), "|x_a - x_b| divided by the median over the pairs (as md)"),
    ("ratio", pa.float64(), "d_out / d_in"),
    ("signs", pa.string(), "neg (x_a < 0 and x_b < 0), pos (both >= 0) or mixed"),
    ("text_a", pa.string(), "token_a as text"),
    ("text_b", pa.string(), "token_b as text"),
    ("context_a", pa.string(), "the tokens before and after token_a, token_a in [[ ]]"),
    ("context_b", pa.string(), "the same for token_b"),
))

NEG_SHARE = Table("neg_share", "per layer: the share of non-Gaussianity (w_dist) in the negative region", (
    ("analysis_id", pa.string(), "the analysis (analyses.analysis_id)"),
    ("model_id", pa.string(), "model key"),
    ("revision", pa.string(), "checkpoint"),
    ("layer", pa.int32(), "layer (NULL: all layers together)"),
    ("selection", pa.string(), "top1 (the layer's top 1% by w_dist), rest, or all"),
    ("n_neurons", pa.int64(), "neurons with w_dist > 0 (the share is undefined for the others)"),
    ("share_mean", pa.float64(), "mean over neurons of w_dist_neg / w_dist"),
    ("share_pooled", pa.float64(), "sum of w_dist_neg / sum of w_dist"),
    ("neg_mass_mean", pa.float64(), "mean share of the neuron's tokens with a negative pre-activation (frac_neg)"),
    ("ci_lo", pa.float64(), "95% bootstrap CI of share_mean (resampling neurons), lower"),
    ("ci_hi", pa.float64(), "upper"),
))

SWEEP_POINTS = Table("sweep_points", "every (selector, fraction, mode, condition, seed) of a sweep: one benchmark metric each", (
    ("analysis_id", pa.string(), "the sweep (analyses.analysis_id, kind 'sweep')"),
    ("selector", pa.string(), "statistic the main set was ranked by (w_dist, kurtosis, skew, std, ...)"),
    ("direction", pa.string(), "top or bottom"),
    ("fraction", pa.float64(), "share of each layer's neurons in the main set (0.01 = 1%)"),
    ("mode", pa.string(), "intervention mode"),
    ("condition", pa.string(), "ablation, random or ppl-matched"),
    ("seed", pa.int64(), "sweep seed: item subsample, random-control and bootstrap seed"),
    ("set_id", pa.string(), "the condition's neuron set (neuron_sets.set_id)"),
    ("n_neurons", pa.int64(), "neurons ablated"),
    ("control_fraction", pa.float64(), "ppl-matched: share of each layer's lowest-w_dist neurons ablated; else NULL"),
    ("matched", pa.bool_(), "ppl-matched: whether the control reached the ablation's perplexity; else NULL"),
    ("benchmark", pa.string(), "benchmark, or grammar / suite for the summary means"),
    ("metric", pa.string(), "metric (acc_sum, acc_mean, acc, acc_norm, ppl, mean)"),
    ("n", pa.int64(), "items (windows for perplexity) behind the value"),
    ("baseline", pa.float64(), "unablated value on the same items"),
    ("value", pa.float64(), "value under the condition"),
    ("delta", pa.float64(), "value minus baseline"),
    ("ci_lo", pa.float64(), "95% paired-bootstrap CI of delta over items, lower"),
    ("ci_hi", pa.float64(), "upper"),
    ("result_id", pa.string(), "the evaluation (eval_results.result_id); NULL for summary means"),
    ("baseline_id", pa.string(), "the baseline evaluation (eval_results.result_id); NULL for summary means"),
))

SWEEP_SUMMARY = Table("sweep_summary", "per grid point, across seeds: dose-response, selectivity, sign and selector contrasts", (
    ("analysis_id", pa.string(), "the sweep (analyses.analysis_id)"),
    ("kind", pa.string(), "dose (a condition minus the baseline), selectivity, sign (mode A minus mode B) or selector (by A minus by B)"),
    ("selector", pa.string(), "statistic the set was ranked by (for selector contrasts: A-B, e.g. w_dist-std)"),
    ("direction", pa.string(), "top or bottom"),
    ("fraction", pa.float64(), "share of each layer's neurons"),
    ("mode", pa.string(), "mode (for sign contrasts: A-B)"),
    ("condition", pa.string(), "dose: ablation, random or ppl-matched; sign, selector: ablation; selectivity: ablation-ppl-matched"),
    ("benchmark", pa.string(), "benchmark, grammar or suite (means); selectivity rows: selectivity (the index), grammar, suite"),
    ("metric", pa.string(), "metric; mean for summaries; si for the index, loss_w_minus_pm for its parts"),
    ("value", pa.float64(), "the difference (a delta or a contrast), averaged across seeds (docs/ANALYSES.md)"),
    ("ci_lo", pa.float64(), "95% paired-bootstrap CI over items within seeds, lower"),
    ("ci_hi", pa.float64(), "upper"),
    ("n", pa.int64(), "items (windows) per seed behind the value"),
    ("n_seeds", pa.int32(), "seeds behind the value"),
))

ANALYSIS_TABLES = (POS_SURPRISAL, LAYER_EFFECTS, TRAINING_DYNAMICS, DIFF_PAIRS, NEG_SHARE, SWEEP_POINTS, SWEEP_SUMMARY)


# ------------------------------------------------------------------------------------ the neurons view

NEURONS_VIEW = """
CREATE OR REPLACE VIEW neurons AS
SELECT s.model_id, s.revision, c.step, c.tokens_seen, l.dataset, s.slice_id, s.spec_id,
       p.w_reference, s.* EXCLUDE (model_id, revision, slice_id, spec_id)
FROM neuron_stats s
LEFT JOIN checkpoints c USING (model_id, revision)
LEFT JOIN slices l USING (slice_id)
LEFT JOIN stat_specs p USING (spec_id)
"""
NEURONS_DOC = ("per-neuron statistics (neuron_stats) with the checkpoint's step and tokens seen, the slice's "
               "dataset and the spec's W1 reference: the view to query")
# where the neurons view's columns come from, for their meanings (first table that has the column)
NEURONS_SOURCES = ("neuron_stats", "checkpoints", "slices", "stat_specs")


def neurons_meaning(column: str) -> str:
    """The meaning of a column of the ``neurons`` view: that of the first of ``NEURONS_SOURCES`` that has it."""
    tables = {t.name: t for t in all_tables()}
    return next((m for s in NEURONS_SOURCES for c, _, m in tables[s].columns if c == column), "")


def view_docs() -> dict[str, str]:
    """One line per view of the catalog (every table and ``neurons``): what one row is."""
    return {"neurons": NEURONS_DOC, **{t.name: t.doc for t in all_tables()}}


def all_tables() -> tuple[Table, ...]:
    return (MODELS, CHECKPOINTS, SLICES, STAT_SPECS, ACTIVATIONS, RUNS, neuron_stats_table(), NEURON_SETS,
            NEURON_SET_MEMBERS, EVAL_RESULTS, EVAL_METRICS, EVAL_ITEMS, EVAL_TOKENS, ABLATIONS, ANALYSES,
            *ANALYSIS_TABLES)
