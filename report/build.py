"""``negdb report`` as a function: one HTML page with PNG figures beside it, drawn only from stored results.

Per model: the w_dist distribution per layer, an example Wasserstein neuron, the ablation against controls,
the double dissociation, the stored analyses (pos, layers, training, pairs) and every stored sweep (newest first):
the latest stored ablation and analysis of each kind, and every sweep, unless pinned by id. Nothing is computed
into the store and no model is loaded. The page and figures are written into a temporary folder beside ``out`` and
then renamed into place, so a failed render leaves the previous report (or nothing) behind.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from negdb.errors import BadArgument, NotFound, StoreError
from negdb.report import data, sections
from negdb.report.page import Section, render
from negdb.store.catalog import Catalog
from negdb.store.layout import StoreLayout

PAGE = "index.html"
KINDS = data.REPORTED_KINDS
_NEURON = re.compile(r"^\s*(\d+)\s*:\s*(\d+)\s*$")


@dataclass(frozen=True)
class Report:
    """What :func:`build` wrote: the folder, the page, the figures (in page order) and the notes shown."""

    out: Path
    page: Path
    figures: list[Path]
    notes: list[str]
    models: list[str]


def parse_neuron(spec: str | tuple[int, int] | None) -> tuple[int, int] | None:
    """``"7:824"`` -> ``(7, 824)``."""
    if spec is None or isinstance(spec, tuple):
        return spec
    m = _NEURON.match(str(spec))
    if not m:
        raise BadArgument(f"bad --neuron {spec!r}: use LAYER:INDEX, e.g. 7:824")
    return int(m.group(1)), int(m.group(2))


def _pins(cat: Catalog, ablations: Iterable[str], analyses: Iterable[str]
          ) -> tuple[dict[str, str], dict[tuple[str, str], list[str]]]:
    """--ablation ids by model, --analysis ids by (model, kind); one per model (and kind), sweeps excepted."""
    abl: dict[str, str] = {}
    for aid in ablations:
        model = data.ablation_model(cat, aid)
        if abl.setdefault(model, aid) != aid:
            raise BadArgument(f"--ablation {abl[model]} and {aid} are both of model {model}: give one per model")
    ana: dict[tuple[str, str], list[str]] = {}
    for aid in dict.fromkeys(analyses):
        head = data.analysis_head(cat, aid)
        key = (head["model_id"], head["kind"])
        ids = ana.setdefault(key, [])
        if ids and key[1] != data.SWEEP_KIND:
            raise BadArgument(f"--analysis {ids[0]} and {aid} are both {key[1]} analyses of {key[0]}: "
                             "give one per model and kind (several only for sweeps)")
        ids.append(aid)
    return abl, ana


def _models(cat: Catalog, models: Sequence[str] | None, pinned: list[str]) -> list[str]:
    known = data.known_models(cat)
    if not known:
        raise NotFound(f"nothing to report: {cat.layout.location} holds no statistics, ablations or analyses; "
                         "run `negdb ingest --model MODEL` first")
    if not models:
        return list(dict.fromkeys(pinned)) or known
    chosen = list(dict.fromkeys(data.resolve_model(cat, m, known) for m in models))
    for m in pinned:
        if m not in chosen:
            raise BadArgument(f"--ablation/--analysis refer to model {m}, which is not among --model: add it")
    return chosen


def _section(cat: Catalog, store: Path | str, folder: Path, i: int, model_id: str, *, checkpoint: str | None,
             ablation_id: str | None, analyses: dict[str, str | None], sweeps: list[str],
             neuron: tuple[int, int] | None, bins: int) -> tuple[Section, list[Path]]:
    facts = data.model_facts(cat, model_id)
    ctx = sections.Context(cat, store, facts, f"m{i}", folder)
    preferred = checkpoint
    if preferred is None and ablation_id is not None:
        preferred = str(cat.sql("SELECT any_value(revision) AS r FROM ablations WHERE ablation_id = ?",
                                [ablation_id])["r"][0])
    revision = data.stats_revision(cat, model_id, preferred)
    if checkpoint is not None and revision != checkpoint:
        raise NotFound(f"{model_id} has no statistics for checkpoint '{checkpoint}': "
                         f"`negdb sql \"SELECT DISTINCT revision FROM neurons\"` lists the stored ones")
    blocks = [*sections.statistics(ctx, revision, neuron, bins), *sections.ablation(ctx, ablation_id),
              *sections.pos(ctx, analyses["pos"]), *sections.layers(ctx, analyses["layers"]),
              *sections.training(ctx, analyses["training"]), *sections.pairs(ctx, analyses["pairs"]),
              *sections.sweep(ctx, sweeps)]
    ck = facts.checkpoints
    facts_rows = [("model", model_id), ("family", facts.family or "–"),
                  ("layers x MLP neurons", f"{facts.n_layers} x {facts.d_mlp}" if facts.n_layers else "–"),
                  ("activation", facts.activation or "–"),
                  ("stored checkpoints", ", ".join(ck["revision"].to_list()) if ck.height <= 12 else
                   f"{ck.height}: {ck['revision'][0]} ... {ck['revision'][-1]}"),
                  ("statistics shown for", revision or "–"), ("ablation", ablation_id or "none stored"),
                  *[(f"{k} analysis", v or "none stored") for k, v in analyses.items()],
                  ("sweeps", ", ".join(sweeps) or "none stored")]
    return Section(f"m{i}", f"Model {model_id}", facts_rows, blocks), ctx.figures


def _replace_dir(tmp: Path, out: Path) -> None:
    """Move the finished ``tmp`` folder to ``out``, replacing an earlier report there."""
    if out.exists():
        if not out.is_dir():
            raise BadArgument(f"--out {out} is a file: give a folder for the report")
        if any(out.iterdir()) and not (out / PAGE).exists():
            raise BadArgument(f"--out {out} holds other files and no earlier report: give a new or empty folder")
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.rename(out, old / "r")
        os.rename(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, out)


def build(store: str | Path, out: str | Path, models: Sequence[str] | None = None, *, checkpoint: str | None = None,
          ablations: Iterable[str] = (), analyses: Iterable[str] = (),
          neuron: str | tuple[int, int] | None = None, bins: int = 60) -> Report:
    """Write the report of ``models`` (default: every stored model) in ``store`` to the folder ``out``.

    Args:
        checkpoint: the checkpoint whose statistics are shown (default: the ablation's, else the latest step).
        ablations, analyses: stored ids to show instead of the latest of their model (and kind).
        neuron: ``"LAYER:INDEX"`` of the example neuron (default: the highest w_dist).
        bins: histogram bins of the example neuron.
    Raises:
        NegdbError (StoreError, NotFound, BadArgument): not a store, nothing stored, an unknown model or id, or a bad ``out``/``neuron``/``bins``.
    """
    if bins < 1:
        raise BadArgument("--bins must be at least 1")
    pick = parse_neuron(neuron)
    layout = StoreLayout.at(store)
    if not layout.is_store():
        raise StoreError(f"{store} is not a negdb store: run `negdb ingest --model MODEL` first")
    where = layout.url or layout.root.absolute()  # a folder store or an object store's URL: read the same way
    out = Path(out).expanduser().absolute()
    if out.exists() and not out.is_dir():
        raise BadArgument(f"--out {out} is a file: give a folder for the report")
    with Catalog(layout.location) as cat:
        abl_pins, ana_pins = _pins(cat, ablations, analyses)
        chosen = _models(cat, models, [*abl_pins, *(m for m, _ in ana_pins)])
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
        tmp.chmod(0o755)  # mkdtemp makes it private; a report is for reading
        try:
            secs, figs = [], []
            for i, model_id in enumerate(chosen, start=1):
                kinds = {k: (ana_pins.get((model_id, k)) or [data.latest_analysis(cat, model_id, k)])[0]
                         for k in KINDS if k != data.SWEEP_KIND}
                sweeps = (ana_pins.get((model_id, data.SWEEP_KIND))
                          or data.analyses_of(cat, model_id, data.SWEEP_KIND))
                sec, f = _section(cat, where, tmp, i, model_id, checkpoint=checkpoint,
                                  ablation_id=abl_pins.get(model_id) or data.latest_ablation(cat, model_id),
                                  analyses=kinds, sweeps=sweeps, neuron=pick, bins=bins)
                secs.append(sec)
                figs.extend(f)
            title = "negdb report: " + ", ".join(sections.short_name(m) for m in chosen)
            meta = [f"Drawn only from the stored results of the store {where} (no model was loaded, "
                    "nothing was computed into the store).",
                    "Ablations are rebuilt with `negdb results --show ID`; analyses are rows of the `analyses` "
                    "table (`negdb sql \"SELECT * FROM analyses\"`)."]
            (tmp / PAGE).write_text(render(title, meta, secs), encoding="utf-8")
            notes = [f"{s.title}: {b.title}: {b.note}" for s in secs for b in s.blocks if b.note]
            _replace_dir(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return Report(out, out / PAGE, [out / p.name for p in figs], notes, chosen)
