"""``negdb lm-eval``: any lm-evaluation-harness task on a checkpoint under a negdb intervention, stored.

The neurons are picked as for ``negdb ablate`` (``--set``, ``--where``, ``--top``; none: only the unablated
model), the model runs as :class:`negdb.ablate.lmeval_model.NegdbLM` (lm-eval's ``HFLM`` with the intervention's
hooks around every forward pass and generation), and each lm-eval task becomes one stored evaluation:

- ``eval_results``: one row per task, ``benchmark = 'lm-eval:<task>'``, with the intervention's ``mode`` and
  ``set_id`` (so it joins ``neuron_sets``, ``neuron_set_members`` and ``neurons``), the task's first metric as
  the primary one, and lm-eval's settings in ``scoring_json``;
- ``eval_metrics``: every metric lm-eval reports for the task (``acc``, ``acc_norm``, their ``_stderr``, ...;
  a filter other than ``none`` is appended as ``acc[filter]``), level ``overall``;
- ``eval_items``: one row per document (``item`` = lm-eval's ``doc_id``), ``correct`` = the first metric's
  per-document value when it is 0/1 (``correct_alt`` the second's), ``logprobs`` = each request's
  log-likelihood, ``greedy``, and every per-document metric in ``meta_json``.

The key of a result (:class:`negdb.store.results.EvalKey`) hashes the checkpoint, mode, set, the task's
configuration (and the bytes of its local data files), lm-eval's version, ``--num-fewshot``, the few-shot seed,
``--limit`` and the chat-template settings: a repeated command reads everything back and loads no model.
lm-eval's response cache (``use_cache``) is one SQLite file per intervention, named by negdb's result id of the
intervention (model, checkpoint commit, mode and set; no task): ``<store>/cache/lm-eval/<id>_rank0.db``. So
responses are never shared between two interventions, and an interrupted run resumes from the responses it
already has.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from negdb.ablate.evaluate import Target
from negdb.ablate.lmeval_target import Selection, resolve_target
from negdb.errors import BadArgument, NegdbError
from negdb.store.catalog import Catalog
from negdb.store.layout import StoreLayout
from negdb.store.results import EvalKey, StoredResult, lookup, publish
from negdb.store.runs import library_versions, now

PREFIX = "lm-eval:"
"""``eval_results.benchmark`` of an lm-eval task: ``lm-eval:<task>``."""


@dataclass(frozen=True)
class LmEvalOptions:
    """lm-eval's settings for ``negdb lm-eval`` (the ones that change numbers are part of each result's key)."""

    tasks: str
    include_path: tuple[str, ...] = ()
    num_fewshot: int | None = None
    limit: int | None = None
    batch_size: int = 8
    fewshot_seed: int = 1234
    apply_chat_template: bool = False
    gen_kwargs: str | None = None
    baseline: bool = True
    device: str = "auto"

    def scoring(self) -> tuple[tuple[str, Any], ...]:
        import lm_eval  # noqa: F401
        from importlib.metadata import version

        return (("harness", "lm-eval"), ("lm_eval", version("lm_eval")), ("num_fewshot", self.num_fewshot),
                ("fewshot_seed", self.fewshot_seed), ("apply_chat_template", self.apply_chat_template),
                ("gen_kwargs", self.gen_kwargs), ("dtype", "float32"))


@dataclass
class TaskResult:
    """One task on one condition: its stored result and whether this call computed it."""

    condition: str
    task: str
    stored: StoredResult
    computed: bool


@dataclass
class LmEvalRun:
    """What :func:`run` did."""

    model_id: str
    revision: str
    mode: str
    set_name: str | None
    set_id: str | None
    results: list[TaskResult] = field(default_factory=list)

    def rows(self, n_boot: int = 1000, seed: int = 0) -> list[dict[str, Any]]:
        """Per task and metric: baseline, ablated, delta and (0/1 metrics) a 95% paired-bootstrap CI."""
        from negdb.evals.metrics import paired_bootstrap

        by = {(r.condition, r.task): r.stored for r in self.results}
        tasks = list(dict.fromkeys(r.task for r in self.results))
        out = []
        for task in tasks:
            base, abl = by.get(("baseline", task)), by.get(("ablation", task))
            main = abl or base
            assert main is not None
            for m in main.metrics().filter(main.metrics()["level"] == "overall").iter_rows(named=True):
                if m["metric"].endswith("_stderr"):
                    continue
                row: dict[str, Any] = {"task": task, "metric": m["metric"], "n": m["n"],
                                       "baseline": None, "ablated": None, "delta": None, "ci_lo": None,
                                       "ci_hi": None, "result_id": main.result_id}
                for cond, res in (("baseline", base), ("ablated", abl)):
                    if res is not None:
                        vals = res.metrics().filter((res.metrics()["metric"] == m["metric"])
                                                    & (res.metrics()["level"] == "overall"))["value"]
                        row[cond] = float(vals[0]) if len(vals) else None
                if row["baseline"] is not None and row["ablated"] is not None:
                    row["delta"] = row["ablated"] - row["baseline"]
                    if base is not None and abl is not None and m["metric"] == main.row["primary_metric"]:
                        a, b = _decisions(abl), _decisions(base)
                        if a is not None and b is not None and len(a) == len(b) and len(a):
                            _, row["ci_lo"], row["ci_hi"] = paired_bootstrap(a, b, n_boot, seed)
                out.append(row)
        return out

    def render(self, fmt: str = "table") -> str:
        rows = self.rows()
        if fmt == "json":
            return json.dumps({"model_id": self.model_id, "revision": self.revision, "mode": self.mode,
                               "set": self.set_name, "set_id": self.set_id, "rows": rows}, indent=2)
        cols = ["task", "metric", "n", "baseline", "ablated", "delta", "ci_lo", "ci_hi", "result_id"]
        if fmt == "csv":
            import csv
            import io

            buf = io.StringIO()
            w = csv.DictWriter(buf, fieldnames=cols)
            w.writeheader()
            w.writerows(rows)
            return buf.getvalue().rstrip("\n")
        head = (f"{self.model_id}@{self.revision}: lm-eval under {self.mode} on "
                f"{self.set_name or 'no neurons'} ({'set ' + self.set_id[:12] if self.set_id else 'baseline'})")

        def cell(v: Any, c: str) -> str:
            if v is None:
                return "-"
            if c == "result_id":
                return str(v)[:12]
            if isinstance(v, float):
                return f"{v:+.4f}" if c in ("delta", "ci_lo", "ci_hi") else f"{v:.4f}"
            return str(v)

        table = [[cell(r[c], c) for c in cols] for r in rows]
        widths = [max(len(c), *(len(t[i]) for t in table)) if table else len(c) for i, c in enumerate(cols)]
        lines = [head, "  ".join(c.ljust(w) for c, w in zip(cols, widths))]
        lines += ["  ".join(v.ljust(w) for v, w in zip(t, widths)) for t in table]
        return "\n".join(lines)


def _decisions(res: StoredResult) -> Any:
    items = res.items()
    if items.height == 0 or items["correct"].null_count() == items.height:
        return None
    return items["correct"].cast(float).fill_null(0.0).to_numpy()


# ------------------------------------------------------------------------------------------ the cache


def intervention_id(target: Target, opts: LmEvalOptions) -> str:
    """negdb's result id of ``target`` with no task: names the lm-eval response cache of this intervention."""
    return EvalKey(target.model_id, target.revision, target.commit, target.mode, target.set_id, "lm-eval", "",
                   (("dtype", "float32"),), None, 0).result_id


# ------------------------------------------------------------------------------------------ tasks


def _leaves(task_dict: dict[Any, Any]) -> dict[str, Any]:
    """Task name -> Task of every task in lm-eval's (possibly nested, grouped) task dict."""
    out: dict[str, Any] = {}
    for key, value in task_dict.items():
        if isinstance(value, dict):
            out.update(_leaves(value))
        else:
            out[str(key)] = value
    return out


def _local_files(config: dict[str, Any]) -> list[Path]:
    files = ((config.get("dataset_kwargs") or {}).get("data_files")) or []
    if isinstance(files, dict):
        files = [f for v in files.values() for f in (v if isinstance(v, list) else [v])]
    elif isinstance(files, str):
        files = [files]
    return [Path(f) for f in files if isinstance(f, str) and Path(f).is_file()]


def task_hash(task: Any) -> str:
    """SHA-256 of the task's configuration and the bytes of its local data files."""
    config = task.dump_config()
    h = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    for f in _local_files(config):
        h.update(f.read_bytes())
    return h.hexdigest()


def load_tasks(opts: LmEvalOptions) -> dict[str, Any]:
    """The leaf tasks of ``--tasks`` (comma-separated names, groups, tags) with ``--include-path`` folders."""
    from lm_eval.tasks import TaskManager, get_task_dict

    names = [t.strip() for t in opts.tasks.split(",") if t.strip()]
    if not names:
        raise BadArgument("--tasks is empty: name lm-eval tasks, e.g. --tasks blimp_anaphor_gender_agreement")
    for p in opts.include_path:
        if not Path(p).exists():
            raise BadArgument(f"--include-path {p} does not exist")
    tm = TaskManager(include_path=list(opts.include_path) or None)
    unknown = [n for n in names if n not in tm.all_tasks]
    if unknown:
        raise BadArgument(f"unknown lm-eval task {', '.join(unknown)}: `lm-eval ls tasks` lists them "
                          "(with --include_path for your own YAML tasks)")
    return _leaves(get_task_dict(names, tm))


def make_key(target: Target, task: str, thash: str, opts: LmEvalOptions) -> EvalKey:
    return EvalKey(target.model_id, target.revision, target.commit, target.mode, target.set_id, PREFIX + task, thash,
                   opts.scoring(), opts.limit, 0)


def blimp_tasks(folder: str | Path, paradigms: list[str] | None = None, limit: int | None = None) -> list[str]:
    """Write lm-eval YAML tasks over negdb's bundled BLiMP items into ``folder``; return the task names.

    One task ``negdb_blimp_<paradigm>`` per paradigm (all 67 by default), with the first ``limit`` items in file
    order and lm-eval's own BLiMP template (empty context, the two sentences as choices, accuracy), reading a
    local JSON file: the items negdb scores as ``blimp``, for ``--include-path``.
    """
    from negdb.evals import registry

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    by: dict[str, list[Any]] = {}
    for it in registry.load_items("blimp"):
        by.setdefault(str(it.group), []).append(it)
    names = []
    for p in paradigms or sorted(by):
        if p not in by:
            raise BadArgument(f"unknown BLiMP paradigm {p!r}: use one of {', '.join(sorted(by)[:5])}, ...")
        data = (folder / f"{p}.jsonl").resolve()
        with data.open("w") as fh:
            for it in by[p][:limit]:
                fh.write(json.dumps({"sentence_good": it.choices[0], "sentence_bad": it.choices[1], "pairID": it.id,
                                     "UID": it.group}) + "\n")
        name = f"negdb_blimp_{p}"
        (folder / f"{name}.yaml").write_text(
            f"task: {name}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    train: {json.dumps(str(data))}\n"
            "output_type: multiple_choice\ntest_split: train\ndoc_to_text: \"\"\ndoc_to_target: 0\n"
            "doc_to_choice: \"{{[sentence_good, sentence_bad]}}\"\nnum_fewshot: 0\n"
            "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\nmetadata:\n  version: 1.0\n")
        names.append(name)
    return names


# ------------------------------------------------------------------------------------------ storing


def _metric_name(key: str) -> tuple[str, bool]:
    """lm-eval's ``acc,none`` -> (``acc``, is a stderr); other filters -> ``acc[filter]``."""
    name, _, filt = key.partition(",")
    stderr = name.endswith("_stderr")
    return (name if filt in ("", "none") else f"{name}[{filt}]"), stderr


def _finite(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _item_rows(task: str, samples: list[dict[str, Any]], metrics: list[str]) -> list[dict[str, Any]]:
    rows = []
    for s in sorted(samples, key=lambda s: s["doc_id"]):
        values = {m: _finite(s.get(m)) for m in metrics if m in s}
        decisions = [v for v in values.values() if v in (0.0, 1.0)]
        resps = s.get("resps") or []
        lps, greedy = [], []
        for r in resps:
            first = r[0] if isinstance(r, (list, tuple)) and r else r
            if isinstance(first, (list, tuple)) and len(first) == 2:
                lps.append(_finite(first[0]))
                greedy.append(bool(first[1]))
            elif isinstance(first, (int, float)):
                lps.append(_finite(first))
        doc = s.get("doc") or {}
        item_id = next((str(doc[k]) for k in ("pairID", "id", "idx") if isinstance(doc, dict) and k in doc),
                       str(s["doc_id"]))
        group = str(doc["UID"]) if isinstance(doc, dict) and "UID" in doc else None
        rows.append({"benchmark": PREFIX + task, "item": int(s["doc_id"]), "item_id": item_id, "grp": group,
                     "meta_json": json.dumps({"metrics": values, "target": str(s.get("target"))}, sort_keys=True),
                     "correct": bool(decisions[0]) if decisions else None,
                     "correct_alt": bool(decisions[1]) if len(decisions) > 1 else None,
                     "logprobs": lps or None, "n_tokens": None, "greedy": greedy or None, "prefix_id": None})
    return rows


def _publish(layout: StoreLayout, key: EvalKey, target: Target, task: Any, opts: LmEvalOptions,
             task_results: dict[str, Any], samples: list[dict[str, Any]], seconds: float) -> StoredResult:
    config = task.dump_config()
    listed = [m["metric"] for m in (config.get("metric_list") or []) if isinstance(m, dict) and "metric" in m]
    metrics, order = [], []
    for k, v in task_results.items():
        if k == "alias" or "," not in k:
            continue
        name, _ = _metric_name(k)
        value = _finite(v)
        if value is None:
            continue
        metrics.append({"benchmark": key.benchmark, "metric": name, "level": "overall", "grp": None,
                        "value": value, "n": len(samples)})
        if not name.endswith("_stderr"):
            order.append(name)
    primary = next((m for m in listed if m in order), order[0] if order else None)
    per_doc = [m for m in listed if m in order] + [m for m in order if m not in listed]
    items = _item_rows(key.benchmark.removeprefix(PREFIX), samples, per_doc)
    value = next((m["value"] for m in metrics if m["metric"] == primary), None)
    scoring = {**dict(opts.scoring()), "rule": "lm-evaluation-harness task, HFLM with the intervention's hooks",
               "task_config": config, "limit": opts.limit}
    row = {"result_id": key.result_id, "model_id": key.model_id, "revision": key.revision, "commit": key.commit,
           "mode": key.mode, "set_id": key.set_id, "n_neurons": target.n_neurons, "benchmark": key.benchmark,
           "bench_hash": key.bench_hash, "scoring_json": json.dumps(scoring, sort_keys=True, default=str),
           "item_limit": opts.limit, "sample_seed": 0, "n_items": len(items), "primary_metric": primary,
           "primary_value": value, "seconds": round(seconds, 3), "created_at": now(),
           "versions_json": json.dumps(library_versions(), sort_keys=True)}
    return publish(layout, row, items, metrics)


# ------------------------------------------------------------------------------------------ running


def evaluate_tasks(layout: StoreLayout, target: Target, get_lm: Callable[[], Any], tasks: dict[str, Any],
                   opts: LmEvalOptions, *, condition: str = "ablation") -> list[TaskResult]:
    """Stored results of ``tasks`` on ``target``; runs lm-eval once on the tasks not yet stored."""
    import time

    from negdb.ablate.lmeval_model import NegdbLM

    keys = {name: make_key(target, name, task_hash(task), opts) for name, task in tasks.items()}
    out: dict[str, TaskResult] = {}
    missing = []
    for name, key in keys.items():
        found = lookup(layout, key.result_id)
        if found is not None:
            out[name] = TaskResult(condition, name, found, False)
        else:
            missing.append(name)
    if missing:
        import lm_eval

        import logging

        quiet = logging.getLogger("lm_eval")
        level = quiet.level
        quiet.setLevel(logging.ERROR)  # its warning about a pre-initialised model is expected here
        try:
            lm = NegdbLM(lm=get_lm(), intervention=target.intervention, batch_size=opts.batch_size)
        finally:
            quiet.setLevel(level)
        cache = layout.root / "cache" / "lm-eval" / intervention_id(target, opts)
        cache.parent.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        res = lm_eval.simple_evaluate(
            model=lm, tasks=[tasks[n] for n in missing], num_fewshot=opts.num_fewshot, limit=opts.limit,
            use_cache=str(cache), log_samples=True, fewshot_random_seed=opts.fewshot_seed,
            apply_chat_template=opts.apply_chat_template, gen_kwargs=opts.gen_kwargs, bootstrap_iters=1000,
            verbosity="ERROR")
        seconds = (time.perf_counter() - start) / len(missing)
        if res is None:  # pragma: no cover - only non-zero ranks of a distributed run
            raise NegdbError("lm-eval returned no results")
        for name in missing:
            stored = _publish(layout, keys[name], target, tasks[name], opts, res["results"].get(name, {}),
                              res["samples"].get(name, []), seconds)
            out[name] = TaskResult(condition, name, stored, True)
    return [out[n] for n in tasks]


def run(sel: Selection, opts: LmEvalOptions, store: str | Path | None = None, *,
        log: Callable[[str], None] | None = None) -> LmEvalRun:
    """``negdb lm-eval``: the tasks on the ablated checkpoint (and on the baseline unless ``opts.baseline`` is
    False), each stored; a repeated call reads everything back."""

    if opts.limit is not None and opts.limit < 1:
        raise BadArgument("--limit must be at least 1")
    if opts.num_fewshot is not None and opts.num_fewshot < 0:
        raise BadArgument("--num-fewshot must not be negative")
    if opts.batch_size < 1:
        raise BadArgument("--batch-size must be at least 1")
    layout = StoreLayout.at(store)
    root = layout.location
    sel.validate()
    tasks = load_tasks(opts)  # first: a bad task name saves no set
    target, loader = resolve_target(root, sel, device=opts.device, log=log)
    set_name = sel.neurons.set_name if sel.neurons is not None else None  # the name asked for, else the first
    if target.set_id is not None and set_name is None:
        with Catalog(root) as cat:
            names = cat.sql("SELECT name FROM neuron_sets WHERE set_id = ? ORDER BY created_at LIMIT 1",
                            [target.set_id])["name"].to_list()
        set_name = names[0] if names else None
    out = LmEvalRun(target.model_id, target.revision, target.mode, set_name, target.set_id)
    conditions = []
    if target.intervention is not None:
        if opts.baseline:
            conditions.append(("baseline", Target(target.model_id, target.revision, target.commit, None, None)))
        conditions.append(("ablation", target))
    else:
        conditions.append(("baseline", target))
    from negdb.ablate.conditions import stderr

    say = log or stderr
    for name, t in conditions:
        say(f"{t.model_id}@{t.revision}: {len(tasks)} lm-eval task(s) under "
            f"{'no intervention' if t.intervention is None else f'{t.mode} on {t.n_neurons} neurons'}")
        out.results += evaluate_tasks(layout, t, loader, tasks, opts, condition=name)
    return out
