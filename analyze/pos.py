"""Excess surprisal of an ablation per part-of-speech tag (``negdb analyze pos``).

The perplexity evaluations of ``negdb ablate --evals ppl`` (re-used when stored) give every WikiText-2 test
token's surprisal under the baseline and under each condition (the ablation, each random-control seed, the
perplexity-matched control). Each token is tagged with a spaCy universal POS tag by character overlap
(:mod:`negdb.analyze.postag`), and per condition and tag :func:`aggregate` reports the mean excess surprisal
(condition minus baseline), its share of the total excess, token counts and a bootstrap CI over windows.
The rows are stored in ``pos_surprisal`` under an analysis key (:mod:`negdb.analyze.record`), so a repeated
command reads them back and computes nothing.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from negdb.ablate.conditions import stderr
from negdb.ablate.experiment import Experiment
from negdb.ablate.experiment import run as run_experiment
from negdb.ablate.options import AblateSpec, Controls, mode_name
from negdb.analyze import postag
from negdb.analyze.record import Timer, analysis_id, lookup, publish
from negdb.errors import BadArgument, NotFound, StoreDamaged
from negdb.evals import registry
from negdb.evals.options import Bootstrap, Sampling, Scoring
from negdb.evals.registry import PERPLEXITY_BENCHMARK as PPL_BENCHMARK
from negdb.query.setspec import SetSpec
from negdb.store.layout import StoreLayout
from negdb.store.results import StoredResult
from negdb.store.tables import POS_SURPRISAL

KIND = "pos"
ALL = "ALL"
FUNCTION_TAGS = frozenset({"DET", "ADP", "AUX", "PART", "PRON", "CCONJ", "SCONJ", "PUNCT"})
"""Universal POS classes counted as function words (closed classes and punctuation)."""
COLUMNS = [c for c, _, _ in POS_SURPRISAL.columns]


@dataclass(frozen=True)
class PosSpec:
    """``negdb analyze pos`` as one value: the set, mode and controls of ``negdb ablate --evals ppl`` whose stored
    perplexity evaluations it reads, and the bootstrap of its CIs.

    ``ppl_tokens``: WikiText-2 test tokens analysed (``None``: all); ``controls`` default to one random set and the
    perplexity-matched control.
    """

    neurons: Any
    mode: str = "neg"
    controls: Controls = field(default_factory=lambda: Controls(seeds=1))
    ppl_tokens: int | None = None
    scoring: Scoring = field(default_factory=Scoring)
    bootstrap: Bootstrap = field(default_factory=Bootstrap)

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", mode_name(self.mode))
        Sampling(ppl_tokens=self.ppl_tokens)
        if not isinstance(self.controls, Controls):
            raise BadArgument(f"controls must be a Controls, got {type(self.controls).__name__}")

    def ablate_spec(self) -> AblateSpec:
        """The ``negdb ablate --evals ppl`` run whose stored perplexity evaluations this analysis reads."""
        return AblateSpec(self.neurons, mode=self.mode, evals=("ppl",), controls=self.controls,
                          sampling=Sampling(ppl_tokens=self.ppl_tokens), scoring=self.scoring,
                          bootstrap=self.bootstrap)


@dataclass
class PosAnalysis:
    """A stored POS analysis: its ``pos_surprisal`` rows (condition order, tags by share) and ``analyses`` row."""

    analysis_id: str
    model_id: str
    revision: str
    rows: pl.DataFrame
    config: dict[str, Any]
    summary: dict[str, Any]
    computed: bool = False
    experiment: Experiment | None = field(default=None, repr=False)

    def frame(self) -> pl.DataFrame:
        """The ``pos_surprisal`` rows: per condition (and random seed) and tag, the excess surprisal and its CI."""
        return self.rows

    def render(self, fmt: str = "table") -> str:
        if fmt == "json":
            return json.dumps({"analysis_id": self.analysis_id, "model_id": self.model_id,
                               "revision": self.revision, "config": self.config, "summary": self.summary,
                               "rows": self.rows.to_dicts()}, indent=2)
        if fmt == "csv":
            buf = io.StringIO()
            w = csv.DictWriter(buf, fieldnames=self.rows.columns)
            w.writeheader()
            w.writerows(self.rows.to_dicts())
            return buf.getvalue()
        if fmt != "table":
            raise BadArgument(f"unknown format {fmt!r}: use table, json or csv")
        return _table(self)


# ------------------------------------------------------------------------------------------ pure parts


def aggregate(frame: pl.DataFrame, *, n_boot: int = 1000, seed: int = 0) -> pl.DataFrame:
    """Per tag (and ``ALL``) the excess surprisal of ``frame`` (columns window, tag, baseline_nll, ablated_nll).

    ``excess`` is the mean of ``ablated_nll - baseline_nll`` over the tag's tokens, ``excess_total`` its sum,
    ``share`` = excess_total / the summed excess of every token (NULL when that is 0), ``token_share`` = the tag's
    tokens / all tokens. The 95% CI of ``excess`` resamples windows: the distinct windows in ascending order are
    drawn with replacement (``numpy.random.default_rng(seed).integers(0, W, size=(n_boot, W))``, the same draws
    for every tag); each draw's mean is the summed excess of the tag's tokens in the drawn windows over their
    count (draws without the tag are skipped); the interval is the 2.5th and 97.5th percentiles. Rows: tags by
    share (descending), then ``ALL``.
    """
    if n_boot < 1:
        raise BadArgument(f"n_boot must be >= 1, got {n_boot}")
    if frame.height == 0:
        raise BadArgument("no scored tokens to aggregate")
    base = frame["baseline_nll"].cast(pl.Float64).to_numpy()
    abl = frame["ablated_nll"].cast(pl.Float64).to_numpy()
    excess = abl - base
    _, w_idx = np.unique(frame["window"].to_numpy(), return_inverse=True)
    tags, t_idx = np.unique(np.asarray(frame["tag"].to_list(), dtype=object).astype(str), return_inverse=True)
    n_win, n_tag = int(w_idx.max()) + 1, len(tags)
    # per (window, tag) summed excess and counts; the last column is ALL
    sums = np.zeros((n_win, n_tag + 1))
    counts = np.zeros((n_win, n_tag + 1))
    np.add.at(sums, (w_idx, t_idx), excess)
    np.add.at(counts, (w_idx, t_idx), 1.0)
    sums[:, n_tag], counts[:, n_tag] = sums[:, :n_tag].sum(1), counts[:, :n_tag].sum(1)
    rng = np.random.default_rng(seed)
    draw = rng.integers(0, n_win, size=(n_boot, n_win))
    times = np.zeros((n_boot, n_win))
    np.add.at(times, (np.arange(n_boot)[:, None], draw), 1.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        boots = (times @ sums) / (times @ counts)
    labels = [*tags.tolist(), ALL]
    idx = np.concatenate([t_idx, np.full(len(t_idx), n_tag)])
    n = np.bincount(idx, minlength=n_tag + 1)
    b_sum = np.bincount(idx, weights=np.concatenate([base, base]), minlength=n_tag + 1)
    a_sum = np.bincount(idx, weights=np.concatenate([abl, abl]), minlength=n_tag + 1)
    e_sum = np.bincount(idx, weights=np.concatenate([excess, excess]), minlength=n_tag + 1)
    total = float(e_sum[n_tag])
    rows = []
    for k, tag in enumerate(labels):
        valid = boots[:, k][np.isfinite(boots[:, k])]
        lo, hi = np.percentile(valid, [2.5, 97.5]) if valid.size else (math.nan, math.nan)
        rows.append({"tag": tag, "function_word": None if tag == ALL else tag in FUNCTION_TAGS,
                     "n_tokens": int(n[k]), "baseline_nll": b_sum[k] / n[k], "ablated_nll": a_sum[k] / n[k],
                     "excess": e_sum[k] / n[k], "excess_total": float(e_sum[k]),
                     "share": float(e_sum[k]) / total if total != 0 else None,
                     "token_share": n[k] / n[n_tag], "ci_lo": _num(lo), "ci_hi": _num(hi)})
    rows[:n_tag] = sorted(rows[:n_tag], key=lambda r: (-(r["share"] or 0.0), r["tag"]))
    return _typed(pl.DataFrame(rows, infer_schema_length=None))


def _num(x: Any) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def _typed(df: pl.DataFrame) -> pl.DataFrame:
    types = {"tag": pl.Utf8, "function_word": pl.Boolean, "n_tokens": pl.Int64}
    return df.with_columns([pl.col(c).cast(types.get(c, pl.Float64)) for c in df.columns])


def check_ids(ids: list[int], tokens: pl.DataFrame, result_id: str = "") -> None:
    """NegdbError unless the stored ``tokens`` (position, token_id) equal ``ids`` (the text re-tokenized)."""
    pos = tokens["position"].to_numpy().astype(np.int64)
    stored = tokens["token_id"].to_numpy().astype(np.int64)
    if pos.size and (pos.min() < 0 or pos.max() >= len(ids)):
        raise StoreDamaged(f"evaluation {result_id[:12]} holds positions beyond the {len(ids)} tokens of the text: "
                         "the text or the tokenizer changed since it was stored")
    bad = np.flatnonzero(np.asarray(ids, dtype=np.int64)[pos] != stored)
    if bad.size:
        p = int(pos[bad[0]])
        raise StoreDamaged(f"the stored token at position {p} of evaluation {result_id[:12]} ({int(stored[bad[0]])}) "
                         f"is not the re-tokenized one ({ids[p]}): the text or the tokenizer changed since it was "
                         "stored")


def tag_tokens(text: str, offsets: np.ndarray, tagged: postag.Tagged, tokens: pl.DataFrame) -> pl.DataFrame:
    """``tokens`` (stored eval_tokens rows) with the ``tag`` of each ``position`` (its span in ``offsets``)."""
    pos = tokens["position"].to_numpy().astype(np.int64)
    return tokens.with_columns(pl.Series("tag", postag.align(text, offsets[pos], tagged), dtype=pl.Utf8))


def paired(tagged_base: pl.DataFrame, cond: StoredResult) -> pl.DataFrame:
    """window, tag, baseline_nll, ablated_nll of the baseline's tokens under ``cond`` (the same positions)."""
    other = cond.tokens().select("position", pl.col("nll").alias("ablated_nll"))
    joined = tagged_base.select("window", "position", "tag", pl.col("nll").alias("baseline_nll")).join(
        other, on="position", how="inner")
    if not (joined.height == tagged_base.height == other.height):
        raise StoreDamaged(f"evaluation {cond.result_id[:12]} scored other tokens than the baseline "
                         "(other --ppl-tokens or --window?): compare evaluations of the same tokens only")
    return joined


# ------------------------------------------------------------------------------------------ the analysis


def _columns(exp: Experiment, seeds: list[int]) -> list[tuple[str, int | None, StoredResult]]:
    """(condition, seed, result) of every non-baseline condition and random seed, in the experiment's order."""
    out = []
    for c in exp.conditions[1:]:
        for i, res in enumerate(c.results[PPL_BENCHMARK]):
            out.append((c.name, seeds[i] if c.name == "random" else None, res))
    return out


def _config(spec: PosSpec, exp: Experiment, base: StoredResult, cols: list[Any]) -> dict[str, Any]:
    """Everything the numbers depend on (the analysis key): the evaluations read, tagger, bootstrap."""
    return {"model_id": base.row["model_id"], "revision": base.row["revision"], "mode": spec.mode,
            "set_id": exp.main.set_id, "baseline_id": base.result_id,
            "conditions": [[name, s, res.result_id] for name, s, res in cols], **postag.tagger_versions(),
            "align_rule": postag.ALIGN_RULE, "n_boot": spec.bootstrap.n_boot, "seed": spec.bootstrap.seed}


def _tokenizer(model_id: str, revision: str, cat_root: Path) -> Any:
    from negdb.query.neuron import slice_tokenizer
    from negdb.query.sets import Keys
    from negdb.store.catalog import Catalog

    with Catalog(cat_root) as cat:
        return slice_tokenizer(cat, Keys(model_id, revision, "", ""))


def compute_rows(layout: StoreLayout, base: StoredResult, cols: list[tuple[str, int | None, StoredResult]], *,
                 n_boot: int, seed: int, tokenizer: Any, log: Callable[[str], None] = stderr
                 ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The ``pos_surprisal`` rows of every column against ``base``, and facts for the summary."""
    text = "\n".join(it.text or "" for it in registry.load_items(PPL_BENCHMARK))
    ids, offsets = postag.token_offsets(tokenizer, text)
    stored = base.tokens().sort("position")
    check_ids(ids, stored, base.result_id)
    if not postag.cache_path(layout.root, text).exists():
        log(f"tagging WikiText-2 test ({len(text)} characters) with spaCy {postag.SPACY_MODEL} ...")
    tagged, _ = postag.cached_tags(layout.root, text)
    tokens = tag_tokens(text, offsets, tagged, stored)
    rows: list[dict[str, Any]] = []
    for name, s, res in cols:
        agg = aggregate(paired(tokens, res), n_boot=n_boot, seed=seed)
        rows.extend({"condition": name, "seed": s, "result_id": res.result_id, "baseline_id": base.result_id, **r}
                    for r in agg.to_dicts())
    facts = {"text_sha256": postag.text_sha256(text), "n_tokens": tokens.height,
             "n_windows": tokens["window"].n_unique(), "pos_cache": postag.cache_path(layout.root, text).name}
    return rows, facts


def _summary(rows: pl.DataFrame, labels: dict[str, str]) -> dict[str, Any]:
    """Headline numbers per column: total excess, the function words' share of it and of the tokens."""
    out: dict[str, Any] = {}
    for key, g in _groups(rows):
        fw = g.filter(pl.col("function_word"))
        total = g.filter(pl.col("tag") == ALL).row(0, named=True)
        top = g.filter(pl.col("tag") != ALL).head(4)["tag"].to_list()
        out[_label(key, labels)] = {"condition": key[0], "seed": key[1], "excess": total["excess"],
                                    "ci": [total["ci_lo"], total["ci_hi"]],
                                    "function_share": float(fw["share"].sum()) if total["share"] is not None
                                    else None,
                                    "function_token_share": float(fw["token_share"].sum()), "top_tags": top}
    return out


def _groups(rows: pl.DataFrame) -> list[tuple[tuple[str, int | None], pl.DataFrame]]:
    keys = list(dict.fromkeys(zip(rows["condition"].to_list(), rows["seed"].to_list())))
    return [((c, s), rows.filter((pl.col("condition") == c) & (pl.col("seed").eq_missing(s)))) for c, s in keys]


def _label(key: tuple[str, int | None], labels: dict[str, str]) -> str:
    cond, seed = key
    name = labels.get(cond, cond)
    return name if seed is None else f"{name} s{seed}"


def _labels(config: dict[str, Any]) -> dict[str, str]:
    return {"ablation": f"{config.get('mode', 'neg')}-ablation"}


def read(layout: StoreLayout, aid: str) -> PosAnalysis:
    """The stored analysis ``aid`` (no model, tagger or evaluation is touched)."""
    row = lookup(layout, aid)
    if row is None or row["kind"] != KIND:
        raise NotFound(f"no stored POS analysis {aid}: run `negdb analyze pos ...`")
    path = layout.table_dir(POS_SURPRISAL.name) / f"{aid}.parquet"
    rows = pl.from_arrow(pq.read_table(path)) if path.exists() else pl.DataFrame(schema=POS_SURPRISAL.schema)
    assert isinstance(rows, pl.DataFrame)
    return PosAnalysis(aid, row["model_id"], row["revision"], rows, json.loads(row["config_json"]),
                       json.loads(row["summary_json"]))


def run(spec: PosSpec, store: str | Path, *, device: str = "auto", progress: bool = True,
        log: Callable[[str], None] = stderr) -> PosAnalysis:
    """Run (or read back) the POS analysis ``spec`` in ``store``; see the module docstring."""
    postag.tagger_versions()  # spaCy installed? (before any evaluation runs)
    exp = run_experiment(spec.ablate_spec(), store, device=device, progress=progress, log=log)
    layout = StoreLayout.at(store)  # an object store's cache of tags is in its local scratch folder
    base = exp.conditions[0].results[PPL_BENCHMARK][0]
    cols = _columns(exp, spec.controls.seed_list())
    config = _config(spec, exp, base, cols)
    aid = analysis_id(KIND, config)
    boot = spec.bootstrap
    if lookup(layout, aid) is None:
        with Timer() as t:
            tok = _tokenizer(config["model_id"], config["revision"], layout.root)
            rows, facts = compute_rows(layout, base, cols, n_boot=boot.n_boot, seed=boot.seed, tokenizer=tok,
                                       log=log)
            frame = pl.DataFrame(rows).select([c for c in COLUMNS if c != "analysis_id"])
            summary = {"ablation_id": exp.ablation_id, **facts, "columns": _summary(frame, _labels(config))}
        publish(layout, aid, kind=KIND, model_id=config["model_id"], revision=config["revision"],
                config={**config, "options": _options(spec)}, summary=summary, seconds=t.seconds,
                tables={POS_SURPRISAL: rows})
        out = read(layout, aid)
        out.computed = True
    else:
        out = read(layout, aid)
    out.experiment = exp
    return out


def _options(spec: PosSpec) -> dict[str, Any]:
    """How the analysis was asked for, flat (recorded in ``config_json`` under ``options``; not in its key)."""
    n = spec.neurons
    asked = asdict(n) if isinstance(n, SetSpec) else {"set_id": getattr(n, "set_id", None)}
    c = spec.controls
    return {**asked, "mode": spec.mode, "controls": c.describe(), "seeds": c.seeds, "control_seed": c.seed,
            "probe_tokens": c.probe_tokens, "ppl_tokens": spec.ppl_tokens,
            "bos_policy": spec.scoring.bos_policy.value, "window": spec.scoring.window, "dtype": spec.scoring.dtype,
            "n_boot": spec.bootstrap.n_boot, "bootstrap_seed": spec.bootstrap.seed}


# ------------------------------------------------------------------------------------------ the table


def _pct(x: float | None) -> str:
    return "" if x is None else f"{100 * x:.1f}%"


def _cell(r: dict[str, Any]) -> str:
    lo = "nan" if r["ci_lo"] is None else f"{r['ci_lo']:+.4f}"
    hi = "nan" if r["ci_hi"] is None else f"{r['ci_hi']:+.4f}"
    return f"{r['excess']:+.4f} [{lo}, {hi}]"


def _table(a: PosAnalysis) -> str:
    labels = _labels(a.config)
    groups = _groups(a.rows)
    if not groups:
        return "no rows"
    by = {key: {r["tag"]: r for r in g.to_dicts()} for key, g in groups}
    lead = next((k for k, _ in groups if k[0] == "ablation"), groups[0][0])
    tags = [t for t in dict.fromkeys([*by[lead], *(t for k in by for t in by[k])]) if t != ALL] + [ALL]
    head = ["tag", "fw", "n", "tokens"]
    for key, _ in groups:
        head += [f"{_label(key, labels)} excess [95% CI]", "share"]
    lines = [head]
    for tag in tags:
        first = next(by[k][tag] for k, _ in groups if tag in by[k])
        line = [tag, {True: "*", False: "", None: ""}[first["function_word"]], str(first["n_tokens"]),
                _pct(first["token_share"])]
        for key, _ in groups:
            r = by[key].get(tag)
            line += ["", ""] if r is None else [_cell(r), _pct(r["share"])]
        lines.append(line)
    widths = [max(len(row[i]) for row in lines) for i in range(len(head))]
    out = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in lines]
    out.insert(1, "  ".join("-" * w for w in widths))
    cfg, summ = a.config, a.summary
    out.append("")
    columns = summ.get("columns", {})
    for key, _ in groups:
        name = _label(key, labels)
        s = columns.get(name)
        if s is not None and s["function_share"] is not None:
            out.append(f"function words (*): {_pct(s['function_share'])} of the {name} excess on "
                       f"{_pct(s['function_token_share'])} of the tokens")
    out.append(f"{a.model_id}@{a.revision}, WikiText-2 test: {summ.get('n_tokens')} tokens in "
               f"{summ.get('n_windows')} windows. excess = mean surprisal under the condition minus baseline "
               f"(nats/token), 95% CI: bootstrap over windows ({cfg.get('n_boot')} draws, seed {cfg.get('seed')}); "
               "share = the tag's share of the summed excess.")
    out.append(f"tags: spaCy {cfg.get('spacy_model')} {cfg.get('spacy_model_version')} UPOS, each token the tag "
               f"of its {postag.ALIGN_RULE}.")
    return "\n".join(out)
