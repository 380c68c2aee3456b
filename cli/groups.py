"""One click decorator per option group: it adds the group's flags and hands the command one typed value.

``@scoring_options()`` adds ``--bos-policy`` (alias ``--bos``), ``--window`` and ``--batch-tokens`` and passes
``scoring=Scoring(...)``; likewise :func:`set_options` (``neurons=SetSpec``), :func:`controls_options`
(``controls=Controls``), :func:`sampling_options` (``sampling=Sampling``), :func:`bootstrap_options`
(``bootstrap=Bootstrap``). The flags' strings are parsed by :mod:`negdb.cli.parse`; each group validates itself
(a bad value is a one-line ``error:``, exit code 2).

Keyword arguments set a command's defaults (``controls_options(kinds="random", seeds=1)``), ``only=`` keeps a
subset of a group's flags (the others take the group's defaults) and ``helps=`` overrides help texts.

``--seed`` (:func:`seed_option`) is a shorthand: it seeds every random stream of the command that has no flag of
its own given (``--control-seed``, ``--bootstrap-seed``); put ``@seed_option(...)`` below the groups it serves.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import click

from negdb.cli import parse

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Flag:
    """One flag of a group: its key (the group's raw argument), click declarations and keyword arguments."""

    key: str
    decls: tuple[str, ...]
    kw: Mapping[str, Any]


def _group(dest: str, flags: list[Flag], build: Callable[[dict[str, Any]], Any], *, only: tuple[str, ...] | None,
           defaults: Mapping[str, Any], helps: Mapping[str, str], fixed: Mapping[str, Any] | None = None
           ) -> Callable[[F], F]:
    keys = {f.key for f in flags}
    unknown = [k for k in [*(only or ()), *defaults, *helps] if k not in keys]
    if unknown:
        raise KeyError(f"no flag {', '.join(unknown)} in the {dest} group: {', '.join(sorted(keys))}")
    used = [f for f in flags if only is None or f.key in only]
    params = {f.key: f"{dest}__{f.key}" for f in used}

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kw: Any) -> Any:
            raw = {key: kw.pop(name) for key, name in params.items()}
            for f in flags:
                if f.key not in raw:
                    raw[f.key] = defaults.get(f.key, f.kw.get("default"))
            raw["_seed"] = kw.get("seed")
            raw.update(fixed or {})
            kw[dest] = build(raw)
            return fn(*args, **kw)

        out: Any = wrapper
        for f in reversed(used):
            kw = dict(f.kw)
            if f.key in defaults:
                kw["default"] = defaults[f.key]
                if defaults[f.key] is not None and not kw.get("is_flag"):
                    kw["show_default"] = True
            if f.key in helps:
                kw["help"] = helps[f.key]
            out = click.option(*f.decls, params[f.key], **kw)(out)
        return out  # type: ignore[no-any-return]

    return decorate


# ------------------------------------------------------------------------------------------ the neurons

SET_FLAGS = [
    Flag("model", ("--model",), {"required": True,
                                 "help": "Model key, alias, folder or hub id (as given to `negdb ingest`)."}),
    Flag("checkpoint", ("--checkpoint",), {"default": None,
                                           "help": "Checkpoint (default: the one the set's statistics come from)."}),
    Flag("where", ("--where",), {"default": None,
                                 "help": "Ablate the neurons matching this SQL expression, e.g. 'w_dist > 0.9'."}),
    Flag("set_name", ("--set",), {"default": None, "help": "Ablate a saved neuron set (`negdb sets`)."}),
    Flag("top", ("--top",), {"default": None, "help": "Ablate the top K per layer by --by: 1%, 0.01 or a count."}),
    Flag("by", ("--by",), {"default": "w_dist", "show_default": True, "help": "Statistic ranked by --top."}),
    Flag("layers", ("--layers",), {"default": None, "help": "Restrict the set to layers, e.g. 0-3,7."}),
]


def _set_spec(raw: dict[str, Any]) -> Any:
    from negdb.query.setspec import SetSpec

    return SetSpec(model=raw["model"], checkpoint=raw["checkpoint"], where=raw["where"], set_name=raw["set_name"],
                   top=parse.k(raw["top"]), by=raw["by"], layers=parse.layers(raw["layers"]))


def set_options(*, only: tuple[str, ...] | None = None, helps: Mapping[str, str] | None = None,
                **defaults: Any) -> Callable[[F], F]:
    """``--model --checkpoint --where --set --top --by --layers`` -> ``neurons=SetSpec(...)``."""
    return _group("neurons", SET_FLAGS, _set_spec, only=only, defaults=defaults, helps=helps or {})


# ------------------------------------------------------------------------------------------ controls

CONTROL_FLAGS = [
    Flag("kinds", ("--controls",), {"default": "random,ppl-matched", "show_default": True,
                                    "help": "Controls: random, ppl-matched, or none (comma-separated)."}),
    Flag("seeds", ("--seeds",), {"default": 3, "show_default": True, "type": int,
                                 "help": "Random control sets (seeds --control-seed, +1, ...)."}),
    Flag("seed", ("--control-seed",), {"default": None, "type": int,
                                       "help": "First random-control seed (default: --seed)."}),
    Flag("probe_tokens", ("--probe-tokens",), {"default": 16384, "show_default": True, "type": int,
                                               "help": "WikiText-2 tokens of each perplexity-matching probe."}),
    Flag("tolerance", ("--tolerance",), {"default": 0.05, "show_default": True, "type": float,
                                         "help": "ppl-matched: accept within this share of the ablation's "
                                                 "perplexity increase."}),
    Flag("resolution", ("--resolution",), {"default": 0.005, "show_default": True, "type": float,
                                           "help": "ppl-matched: grid of fractions searched (0.005 = 0.5% of each "
                                                   "layer)."}),
    Flag("max_fraction", ("--max-fraction",), {"default": 0.9, "show_default": True, "type": float,
                                               "help": "ppl-matched: largest fraction."}),
]


def _controls(raw: dict[str, Any]) -> Any:
    from negdb.ablate.options import Controls

    seed = raw["seed"] if raw["seed"] is not None else (raw["_seed"] or 0)
    return Controls(kinds=parse.controls(raw["kinds"]), seeds=raw["seeds"], seed=seed,
                    tolerance=raw["tolerance"], resolution=raw["resolution"], max_fraction=raw["max_fraction"],
                    probe_tokens=raw["probe_tokens"])


def controls_options(*, only: tuple[str, ...] | None = None, helps: Mapping[str, str] | None = None,
                     **defaults: Any) -> Callable[[F], F]:
    """``--controls --seeds --control-seed --probe-tokens --tolerance --resolution --max-fraction`` ->
    ``controls=Controls(...)``."""
    return _group("controls", CONTROL_FLAGS, _controls, only=only, defaults=defaults, helps=helps or {})


# ------------------------------------------------------------------------------------------ sampling

_LIMIT = ("Items per group (BLiMP paradigm, TSE phenomenon; per benchmark otherwise), seeded subsample: "
          "N, or N,suite=200,tse=20 to set some benchmarks apart.")

SAMPLING_FLAGS = [
    Flag("limit", ("--limit",), {"default": None, "help": _LIMIT}),
    Flag("seed", ("--sample-seed",), {"default": 0, "show_default": True, "type": int,
                                      "help": "Seed of the --limit subsample."}),
    Flag("ppl_tokens", ("--ppl-tokens",), {"default": None, "type": int,
                                           "help": "WikiText-2 test tokens for perplexity (default: all)."}),
]


def _sampling(raw: dict[str, Any]) -> Any:
    from negdb.evals.options import Sampling

    return Sampling(limit=parse.limit(raw["limit"]), ppl_tokens=raw["ppl_tokens"], seed=raw["seed"])


def sampling_options(*, only: tuple[str, ...] | None = None, helps: Mapping[str, str] | None = None,
                     **defaults: Any) -> Callable[[F], F]:
    """``--limit --sample-seed --ppl-tokens`` -> ``sampling=Sampling(...)``."""
    return _group("sampling", SAMPLING_FLAGS, _sampling, only=only, defaults=defaults, helps=helps or {})


# ------------------------------------------------------------------------------------------ scoring

def _scoring_flags(bos_aliases: tuple[str, ...]) -> list[Flag]:
    return [
        Flag("bos_policy", ("--bos-policy", *bos_aliases),
             {"default": "lm-eval", "show_default": True, "type": click.Choice(["lm-eval", "model"]),
              "help": "BOS policy of the evaluations: lm-eval (BOS only before an empty context) or model (the "
                      "family's policy)."}),
        Flag("window", ("--window",), {"default": None, "type": int,
                                       "help": "Perplexity window in tokens (default: the model's context)."}),
        Flag("batch_tokens", ("--batch-tokens",), {"default": 8192, "show_default": True, "type": int,
                                                   "help": "Padded tokens per forward pass (speed only)."}),
        Flag("dtype", ("--dtype",), {"default": "float32", "show_default": True,
                                     "type": click.Choice(["float32", "bfloat16", "float16"]),
                                     "help": "Forward dtype of the evaluations (bfloat16 for GPUs); part of every "
                                             "result's key when not float32."}),
    ]


def _scoring(raw: dict[str, Any]) -> Any:
    from negdb.evals.options import Scoring

    return Scoring(bos_policy=raw["bos_policy"], window=raw["window"], batch_tokens=raw["batch_tokens"],
                   dtype=raw.get("dtype", "float32"))


def scoring_options(*, bos_aliases: tuple[str, ...] = ("--bos",), only: tuple[str, ...] | None = None,
                    helps: Mapping[str, str] | None = None, **defaults: Any) -> Callable[[F], F]:
    """``--bos-policy`` (alias ``--bos``) ``--window --batch-tokens --dtype`` -> ``scoring=Scoring(...)``."""
    return _group("scoring", _scoring_flags(bos_aliases), _scoring, only=only, defaults=defaults,
                  helps=helps or {})


# ------------------------------------------------------------------------------------------ bootstrap

BOOTSTRAP_FLAGS = [
    Flag("n_boot", ("--n-boot",), {"default": 1000, "show_default": True, "type": int,
                                   "help": "Bootstrap draws of the CIs."}),
    Flag("seed", ("--bootstrap-seed",), {"default": None, "type": int,
                                         "help": "Seed of the bootstrap (default: --seed)."}),
]


def _bootstrap(raw: dict[str, Any]) -> Any:
    from negdb.evals.options import Bootstrap

    return Bootstrap(n_boot=raw["n_boot"], seed=raw["seed"] if raw["seed"] is not None else (raw["_seed"] or 0))


def bootstrap_options(*, only: tuple[str, ...] | None = None, helps: Mapping[str, str] | None = None,
                      **defaults: Any) -> Callable[[F], F]:
    """``--n-boot --bootstrap-seed`` -> ``bootstrap=Bootstrap(...)``."""
    return _group("bootstrap", BOOTSTRAP_FLAGS, _bootstrap, only=only, defaults=defaults, helps=helps or {})


# ------------------------------------------------------------------------------------------ ingest

INGEST_FLAGS = [
    Flag("model", ("--model",), {"default": "smollm2-135m", "show_default": True,
                                 "help": "Alias (see `negdb models`), hub id, local model folder, folder of step<N>/ "
                                         "checkpoints, or .gguf."}),
    Flag("checkpoints", ("--checkpoints",), {"default": "final", "show_default": True,
                                             "help": "all | final | step1000,step2000 | every:K | first:N"}),
    Flag("dataset", ("--dataset",), {"default": "wikitext-2", "show_default": True,
                                     "help": "wikitext-2 (bundled validation split), wikitext-2:test, a .txt/.jsonl "
                                             "file, or hf:NAME[:CONFIG][:SPLIT]."}),
    Flag("text_field", ("--text-field",), {"default": "text", "show_default": True,
                                           "help": "Field of a .jsonl corpus holding the text."}),
    Flag("tokens", ("--tokens",), {"default": 16384, "show_default": True, "type": int,
                                   "help": "Token budget per checkpoint."}),
    Flag("seq_len", ("--seq-len",), {"default": 512, "show_default": True, "type": int, "help": "Tokens per window."}),
    Flag("prepend_bos", ("--prepend-bos/--no-prepend-bos", "--bos/--no-bos"),
         {"default": False, "show_default": True,
          "help": "Prepend the tokenizer's BOS to each ingest window (--bos: the former name)."}),
    Flag("layers", ("--layers",), {"default": "all", "show_default": True,
                                   "help": "all or e.g. 0-3,7 (negative counts from the end)."}),
    Flag("activations", ("--activations",), {"default": "auto", "show_default": True,
                                             "help": "Which ingested layers keep their activations: auto (all layers "
                                                     "of the last checkpoint of the run, none of the others; "
                                                     "statistics for all) | all | none | layers=0,5."}),
    Flag("w_reference", ("--w-reference",), {"type": click.Choice(["exact", "sample"]), "default": "exact",
                                             "show_default": True,
                                             "help": "exact: analytic N(0,1) quantiles (deterministic); sample: the "
                                                     "authors' seeded N(0,1) sample."}),
    Flag("seed", ("--seed",), {"default": 0, "show_default": True, "type": int,
                               "help": "Seed of the md token pairs and of --w-reference sample."}),
    Flag("md_pairs", ("--md-pairs",), {"default": 50_000, "show_default": True, "type": int,
                                       "help": "Token pairs for mapping difficulty (at most tokens/2). md is "
                                               "computed for every checkpoint; the pairs' MLP inputs are stored only "
                                               "where activations are kept (--activations: the final checkpoint by "
                                               "default)."}),
    Flag("dtype", ("--dtype",), {"type": click.Choice(["float32", "bfloat16", "float16"]), "default": "float32",
                                 "show_default": True,
                                 "help": "Dtype of the model's forward pass (bfloat16 for GPUs, with --activations "
                                         "none); part of the statistics' spec when not float32."}),
    Flag("store_dtype", ("--store-dtype",), {"type": click.Choice(["float16", "float32"]), "default": "float16",
                                             "show_default": True,
                                             "help": "Dtype of stored pre-activations (statistics are computed from "
                                                     "the stored values)."}),
]


def _ingest_spec(raw: dict[str, Any]) -> Any:
    from negdb.ingest.plan import IngestSpec

    ck = raw["checkpoints"]
    words = ("all", "final", "main")
    checkpoints = ck if ck.strip() in words or ":" in ck else parse.names(ck)
    seed = raw["seed"] if raw["seed"] is not None else (raw["_seed"] or 0)
    return IngestSpec(model=raw["model"], checkpoints=checkpoints, dataset=raw["dataset"],
                      text_field=raw["text_field"], tokens=raw["tokens"], seq_len=raw["seq_len"],
                      prepend_bos=raw["prepend_bos"], layers=parse.layers(raw["layers"]),
                      activations=parse.activations(raw["activations"]), w_reference=raw["w_reference"], seed=seed,
                      md_pairs=raw["md_pairs"], dtype=raw["dtype"], store_dtype=raw["store_dtype"])


def ingest_options(*, only: tuple[str, ...] | None = None, helps: Mapping[str, str] | None = None,
                   decls: Mapping[str, tuple[str, ...]] | None = None, **defaults: Any) -> Callable[[F], F]:
    """The flags of ``negdb ingest`` -> ``ingest=IngestSpec(...)``; ``decls`` renames flags (``{"seed":
    ("--ingest-seed",)}``: an ingest seed falling back to ``--seed``)."""
    flags = [Flag(f.key, (decls or {}).get(f.key, f.decls), {**f.kw, **({"default": None} if f.key in (decls or {})
                                                                       and f.key == "seed" else {})})
             for f in INGEST_FLAGS]
    return _group("ingest", flags, _ingest_spec, only=only, defaults=defaults, helps=helps or {})


RESOURCE_FLAGS = [
    Flag("device", ("--device",), {"default": "auto", "show_default": True, "help": "auto | cpu | cuda | cuda:N"}),
    Flag("compression", ("--compression",), {"type": click.Choice(["zstd", "none"]), "default": "zstd",
                                             "show_default": True,
                                             "help": "Codec of stored activations (zstd level 1 saves ~10%; none "
                                                     "writes fastest)."}),
    Flag("batch_tokens", ("--batch-tokens",), {"type": int, "default": None,
                                               "help": "Tokens per forward batch (default: from --mem-budget)."}),
    Flag("mem_budget_mb", ("--mem-budget",), {"default": 1024, "show_default": True, "type": int,
                                              "help": "Working-memory budget in MB for captured batches and "
                                                      "statistics blocks."}),
    Flag("keep_weights", ("--keep-weights",), {"is_flag": True, "default": False,
                                               "help": "Keep hub checkpoints this run downloads in the Hugging Face "
                                                       "cache (default: remove each once ingested)."}),
    Flag("stats_backend", ("--stats-backend",), {"type": click.Choice(["auto", "numpy", "torch"]),
                                                 "default": "auto", "show_default": True,
                                                 "help": "Statistics kernel: auto = torch on the model's GPU, "
                                                         "numpy on CPUs (faster there)."}),
    Flag("overlap", ("--overlap/--no-overlap",), {"default": True, "show_default": True,
                                                  "help": "Compute a checkpoint's statistics while the next "
                                                          "checkpoint streams."}),
]


def _resources(raw: dict[str, Any]) -> Any:
    from negdb.ingest.plan import Resources

    return Resources(device=raw["device"], batch_tokens=raw["batch_tokens"], mem_budget_mb=raw["mem_budget_mb"],
                     compression=raw["compression"], stats_backend=raw.get("stats_backend", "auto"),
                     overlap=raw.get("overlap", True), keep_weights=bool(raw.get("keep_weights", False)))


def resource_options(*, only: tuple[str, ...] | None = None, helps: Mapping[str, str] | None = None,
                     **defaults: Any) -> Callable[[F], F]:
    """``--device --compression --batch-tokens --mem-budget --keep-weights`` -> ``resources=Resources(...)``."""
    return _group("resources", RESOURCE_FLAGS, _resources, only=only, defaults=defaults, helps=helps or {})


EXECUTOR_FLAGS = [
    Flag("kind", ("--executor",), {"type": click.Choice(["local", "dask", "slurm"]), "default": "local",
                                   "show_default": True,
                                   "help": "Where the work runs: this process, a Dask cluster (--address / "
                                           "--scheduler-file, else a local cluster of --workers processes), or "
                                           "Slurm jobs (dask-jobqueue)."}),
    Flag("address", ("--address",), {"default": None,
                                     "help": "--executor dask: the scheduler, e.g. tcp://10.0.0.5:8786."}),
    Flag("scheduler_file", ("--scheduler-file",), {"default": None, "type": click.Path(dir_okay=False),
                                                   "help": "--executor dask: the scheduler's file (dask scheduler "
                                                           "--scheduler-file)."}),
    Flag("workers", ("--workers",), {"default": None, "type": int,
                                     "help": "Local cluster worker processes (default 2), or Slurm jobs "
                                             "(default 1)."}),
    Flag("gpus_per_job", ("--gpus-per-job",), {"default": 0, "show_default": True, "type": int,
                                               "help": "--executor slurm: GPUs per job (--gres=gpu:N; tasks then "
                                                       "ask for one GPU)."}),
    Flag("partition", ("--partition",), {"default": None, "help": "--executor slurm: partition (sbatch -p)."}),
    Flag("account", ("--account",), {"default": None, "help": "--executor slurm: account (sbatch -A)."}),
    Flag("walltime", ("--walltime",), {"default": "04:00:00", "show_default": True,
                                       "help": "--executor slurm: time per job."}),
    Flag("memory", ("--job-memory",), {"default": "32GB", "show_default": True,
                                       "help": "--executor slurm: memory per job."}),
    Flag("cores", ("--job-cores",), {"default": 4, "show_default": True, "type": int,
                                     "help": "--executor slurm: CPU cores per job."}),
]


def _executor(raw: dict[str, Any]) -> Any:
    from negdb.cluster.executor import Executor

    return Executor(**{f.key: raw[f.key] for f in EXECUTOR_FLAGS})


def executor_options(**defaults: Any) -> Callable[[F], F]:
    """``--executor local|dask|slurm`` and its options -> ``executor=Executor(...)``."""
    return _group("executor", EXECUTOR_FLAGS, _executor, only=None, defaults=defaults, helps={})


# ------------------------------------------------------------------------------------------ single flags

def seed_option(help: str = "Seed of every random stream without a flag of its own given "
                            "(--control-seed, --bootstrap-seed).", default: int = 0) -> Callable[[F], F]:
    """``--seed``: the fallback of the groups' own seed flags; placed below them, it is consumed here."""

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kw: Any) -> Any:
            kw.pop("seed", None)
            return fn(*args, **kw)

        return click.option("--seed", "seed", default=default, show_default=True, type=int, help=help)(wrapper)

    return decorate


def mode_option(default: str = "neg", help: str | None = None) -> Callable[[F], F]:
    from negdb.ablate.interventions import modes

    return click.option("--mode", default=default, show_default=True,
                        help=help or f"Intervention: {', '.join(modes())} (neg: zero negative pre-activations).")


def evals_option(default: str = "ppl,blimp,tse,suite", help: str | None = None) -> Callable[[F], F]:
    """``--evals ppl,blimp`` -> ``evals=("ppl", "blimp")``."""
    return click.option("--evals", default=default, show_default=True,
                        callback=lambda _ctx, _p, v: parse.evals(v),
                        help=help or "Benchmarks and groups (ppl, grammar, suite, blimp, tse, arc_easy, ...), "
                                     "comma-separated.")


def device_option() -> Callable[[F], F]:
    return click.option("--device", default="auto", show_default=True,
                        help="cpu, cuda, cuda:N or auto (never part of a stored key).")
