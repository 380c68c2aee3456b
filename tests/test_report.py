"""``negdb report`` end to end on a tiny ingested store with a tiny ablation, a tiny sweep and synthetic analyses:
every figure is a real, non-blank PNG linked from the page, every caption names the model and the data, the key
numbers match references computed here from the stored segments, missing analyses give notes naming their
commands, a re-render stores nothing and a failed render leaves the earlier report in place."""

from __future__ import annotations

import math
import re
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest

from negdb.analyze.record import analysis_id, publish
from negdb.errors import BadArgument, NotFound, StoreError
from negdb.evals import registry
from negdb.report import build
from negdb.report.captions import num
from negdb.store.layout import StoreLayout
from negdb.store.tables import DIFF_PAIRS, LAYER_EFFECTS, NEG_SHARE, POS_SURPRISAL, TRAINING_DYNAMICS
from tests.ablate_helpers import short_wikitext_loader
from tests.ingest_helpers import assert_one_error, cli, ingest_into, store_files
from tests.tiny_models import save_tiny

pytestmark = pytest.mark.timeout(300)

ABLATE = ["--top", "10%", "--evals", "blimp,copa,ppl", "--limit", "1", "--ppl-tokens", "256", "--probe-tokens",
          "256", "--seeds", "2", "--window", "64", "--controls", "random,ppl-matched", "--quiet"]
SWEEP = ["--fractions", "10", "--by", "w_dist,std", "--modes", "neg,pos", "--seeds", "1", "--controls", "ppl-matched",
         "--evals", "blimp,copa,ppl", "--limit", "1", "--ppl-tokens", "256", "--probe-tokens", "256", "--window", "64",
         "--resolution", "0.1", "--max-fraction", "0.4", "--n-boot", "100", "--quiet"]
"""The smallest sweep with every kind of figure (two selectors and modes, one fraction and seed): its neg runs
are the ablation's own evaluations, read back."""
ALL_FIGURES = ("wdist", "neuron", "ablation", "dissociation", "pos", "layers", "training", "negshare")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TD_TEXT = '<td class="t">'


def _read(store: Path, table: str) -> pl.DataFrame:
    files = sorted((store / "tables" / table).rglob("*.parquet"))
    return pl.concat([pl.from_arrow(pq.read_table(f)) for f in files], how="diagonal_relaxed")


def _store_state(store: Path) -> dict[str, int]:
    """Every stored file and its modification time, but the catalog manifest (``_catalog/``: readers keep what they
    learned about the segments there, docs/STORE.md; it stores no result)."""
    return {p: (store / p).stat().st_mtime_ns for p in store_files(store)
            if not str(p).startswith("_catalog/")}


# ------------------------------------------------------------------------------------------ synthetic analyses


def _publish_analyses(store: Path, model: str, ablation_id: str) -> dict[str, str]:
    """One stored analysis of each kind, with made-up numbers, naming the ablation's stored evaluations."""
    layout = StoreLayout(store)
    abl = _read(store, "ablations").filter(pl.col("ablation_id") == ablation_id)
    res = _read(store, "eval_results")
    bench = dict(zip(res["result_id"].to_list(), res["benchmark"].to_list()))

    def wiki(cond: str, i: int = 0) -> str:
        ids = abl.filter(pl.col("condition") == cond).sort("seed")["result_ids"].to_list()[i]
        return next(r for r in ids if bench[r] == "wikitext2")

    out = {}
    tags = [("ALL", False, 1000), ("DET", True, 120), ("ADP", True, 110), ("PUNCT", True, 150), ("NOUN", False, 250),
            ("VERB", False, 160), ("ADJ", False, 90)]
    pos_rows = []
    for k, (cond, seed) in enumerate([("ablation", None), ("random", 0), ("random", 1), ("ppl-matched", None)]):
        for j, (tag, fw, n) in enumerate(tags):
            ex = (0.3 if fw else 0.05) / (k + 1) + 0.01 * j
            pos_rows.append({"condition": cond, "seed": seed, "result_id": wiki(cond, seed or 0),
                             "baseline_id": wiki("baseline"), "tag": tag, "function_word": fw, "n_tokens": n,
                             "baseline_nll": 3.0, "ablated_nll": 3.0 + ex, "excess": ex, "excess_total": ex * n,
                             "share": n / 1000, "token_share": n / 1000, "ci_lo": ex - 0.02, "ci_hi": ex + 0.02})
    config = {"mode": "neg", "n_boot": 500, "seed": 3, "ppl_tokens": 256}
    aid = analysis_id("pos", config)
    publish(layout, aid, kind="pos", model_id=model, revision="final", config=config,
            summary={"ablation_id": ablation_id}, seconds=1.0, tables={POS_SURPRISAL: pos_rows})
    out["pos"] = aid

    layer_rows = []
    for variant in ("alone", "cumulative"):
        for g in range(3):
            layers = [g] if variant == "alone" else list(range(g + 1))
            for b, m, level, base, d in (("blimp", "acc_sum", "macro", 0.6, -0.01 * (g + 1)),
                                         ("blimp", "acc_sum", "overall", 0.61, -0.5),
                                         ("wikitext2", "ppl", "overall", 300.0, 0.5 * (g + 1))):
                if variant == "cumulative":
                    d *= 1.5
                layer_rows.append({"variant": variant, "group_index": g, "layers": layers, "set_id": "s",
                                   "n_neurons": 6 * len(layers), "benchmark": b, "metric": m, "level": level,
                                   "grp": None, "baseline": base, "value": base + d, "delta": d,
                                   "ci_lo": d - abs(d) / 2, "ci_hi": d + abs(d) / 2, "result_id": None})
            layer_rows.append({"variant": variant, "group_index": 0, "layers": [0], "benchmark": "blimp",
                               "metric": "acc_sum", "level": "UID", "grp": "anaphor", "baseline": 0.5,
                               "value": 0.0, "delta": -0.5})  # a per-group row: not on the curves
    config = {"mode": "neg", "groups": 3, "n_boot": 200, "seed": 0}
    aid = analysis_id("layers", config)
    publish(layout, aid, kind="layers", model_id=model, revision="final", config=config, summary={},
            seconds=1.0, tables={LAYER_EFFECTS: layer_rows})
    out["layers"] = aid

    train = []
    for i, step in enumerate((0, 1000, 10000, 143000)):
        rev = f"step{step}"
        base = {"model_id": model, "revision": rev, "step": step, "tokens_seen": step * 2048}
        for q, v in (("w_dist_p50", 0.1 + 0.01 * i), ("w_dist_p99", 0.3 + 0.1 * i), ("w_dist_max", 0.5 + 0.2 * i),
                     ("top_w_dist_mean", 0.4 + 0.1 * i), ("cohort_w_dist_mean", 0.2 + 0.15 * i),
                     ("overlap_final", i / 3), ("overlap_prev", 0.2 * i)):
            train.append({**base, "layer": None, "quantity": q, "value": v, "n": 192})
        for b, m, d in (("blimp", "acc_sum", -0.01 * i), ("wikitext2", "ppl", 2.0 * i)):
            eff = {**base, "layer": None, "benchmark": b, "metric": m, "n": 134}
            train.append({**eff, "quantity": "baseline", "value": 0.6})
            for cond, f in (("ablation", 1.0), ("random", 0.2)):
                train.append({**eff, "quantity": f"delta_{cond}", "value": f * d, "ci_lo": f * d - 0.005,
                              "ci_hi": f * d + 0.005})
        for layer in range(3):  # stored per layer only: the report averages over layers
            train.append({**base, "layer": layer, "quantity": "w_dist_mean", "value": 0.1 * (layer + 1) + i,
                          "n": 64})
    config = {"checkpoints": "all", "n_boot": 100, "seed": 0}
    aid = analysis_id("training", config)
    publish(layout, aid, kind="training", model_id=model, revision="final", config=config, summary={},
            seconds=1.0, tables={TRAINING_DYNAMICS: train})
    out["training"] = aid

    share, pairs = [], []
    for sel, v in (("top1", 0.75), ("rest", 0.45), ("all", 0.46)):  # all layers pooled
        share.append({"model_id": model, "revision": "final", "layer": None, "selection": sel, "n_neurons": 192,
                      "share_mean": v, "share_pooled": v, "neg_mass_mean": 0.5, "ci_lo": v - 0.01, "ci_hi": v + 0.01})
    for layer in range(3):
        for sel, v in (("top1", 0.7 + 0.05 * layer), ("rest", 0.45), ("all", 0.46)):
            share.append({"model_id": model, "revision": "final", "layer": layer, "selection": sel,
                          "n_neurons": 6 if sel == "top1" else 58, "share_mean": v, "share_pooled": v - 0.01,
                          "neg_mass_mean": 0.5, "ci_lo": v - 0.05, "ci_hi": v + 0.05})
        for rank in (1, 2):
            pairs.append({"model_id": model, "revision": "final", "layer": layer, "neuron": 5, "rank": rank,
                          "token_a": rank, "token_b": 100 + rank, "x_a": -0.2, "x_b": -0.01, "d_in": 0.1,
                          "d_out": 2.0, "ratio": 20.0 / rank, "signs": "neg", "text_a": " the",
                          "text_b": " a", "context_a": "of [[ the]] cat", "context_b": "in [[ a]] box"})
    config = {"k": 2, "n_boot": 100, "seed": 0}
    aid = analysis_id("pairs", config)
    publish(layout, aid, kind="pairs", model_id=model, revision="final", config=config, summary={},
            seconds=1.0, tables={NEG_SHARE: share, DIFF_PAIRS: pairs})
    out["pairs"] = aid
    return out


# ------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    out = tmp_path_factory.mktemp("reports")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(registry, "load_items", short_wikitext_loader(registry.load_items))
        model = save_tiny(tmp_path_factory.mktemp("m") / "neox", "gpt_neox", seed=0)
        store = ingest_into(tmp_path_factory, model)
        res = cli(store, "ablate", "--model", str(model), *ABLATE)
        assert res.exit_code == 0, res.output
        ablation_id = _read(store, "ablations")["ablation_id"][0]
        bare = build(store, out / "bare")  # before any analysis or sweep is stored
        sw = cli(store, "sweep", "--model", str(model), *SWEEP)
        assert sw.exit_code == 0, sw.output
    model_id = str(model.resolve())
    analyses = _publish_analyses(store, model_id, ablation_id)
    analyses["sweep"] = _read(store, "analyses").filter(pl.col("kind") == "sweep")["analysis_id"].to_list()[0]
    before = _store_state(store)
    full = cli(store, "report", "--model", str(model), "--out", str(out / "full"))
    assert full.exit_code == 0, full.output
    return {"store": store, "model": model_id, "ablation_id": ablation_id, "analyses": analyses, "bare": bare,
            "full_dir": out / "full", "full_cli": full, "before": before, "out": out}


def _html(folder: Path) -> str:
    return (folder / "index.html").read_text(encoding="utf-8")


def _captions(html: str) -> dict[str, str]:
    """image file -> its caption text (tags stripped)."""
    found = re.findall(r'<img src="([^"]+)" alt="([^"]+)"><figcaption>(.*?)</figcaption>', html, flags=re.S)
    return {src: re.sub(r"<[^>]+>", " ", cap) for src, alt, cap in found if alt.strip()}


def _check_png(path: Path) -> None:
    from matplotlib.image import imread

    raw = path.read_bytes()
    assert raw[:8] == PNG_SIGNATURE, path
    assert len(raw) > 1024, path
    img = imread(path)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    rgba = np.round(img[..., :3] * 255).astype(np.uint32)
    colours = np.unique(rgba[..., 0] << 16 | rgba[..., 1] << 8 | rgba[..., 2])
    assert len(colours) > 10, f"{path.name} is (nearly) blank: {len(colours)} colours"


def _sweep_pngs(env) -> list[str]:
    """The sweep's figures, in page order, from the kinds of its stored summary rows."""
    rows = _read(env["store"], "sweep_summary").filter(pl.col("analysis_id") == env["analyses"]["sweep"])
    tag = env["analyses"]["sweep"][:8]
    kinds = set(rows["kind"].to_list())
    modes = sorted(set(rows.filter(pl.col("kind") == "dose")["mode"].to_list()))
    return ([f"sweep-{tag}-dose-{m}.png" for m in modes]
            + [f"sweep-{tag}-{k}.png" for k in ("selectivity", "sign", "selector") if k in kinds])


# ------------------------------------------------------------------------------------------ the full report


def test_every_figure_is_a_non_blank_png_linked_from_the_page(env):
    folder = env["full_dir"]
    assert env["full_cli"].stdout.strip() == str(folder / "index.html")
    html = _html(folder)
    pngs = sorted(p.name for p in folder.glob("*.png"))
    sweep = _sweep_pngs(env)
    tag = env["analyses"]["sweep"][:8]
    assert {f"sweep-{tag}-{k}.png" for k in ("dose-neg", "dose-pos", "selectivity", "sign", "selector")} == set(sweep)
    assert pngs == sorted([*(f"m1-{k}.png" for k in ALL_FIGURES), *sweep])
    caps = _captions(html)
    for name in pngs:
        _check_png(folder / name)
        assert name in caps, f"{name} is not on the page with alt text and a caption"
    assert "<script" not in html.lower() and "http://" not in html and "https://" not in html
    assert 'class="note"' not in html  # everything is stored: no section falls back to a note
    assert sorted(folder.parent.iterdir()) == sorted(p for p in folder.parent.iterdir() if not p.name.startswith("."))


def test_every_caption_names_the_model_checkpoint_and_data(env):
    caps = _captions(_html(env["full_dir"]))
    need = {"wdist": ["wikitext-2:valid", "512 tokens"], "neuron": ["wikitext-2:valid"],
            "ablation": ["BLiMP [blimp]: 67 items", "COPA", "WikiText-2 (raw test) [wikitext2]: 4 windows",
                         "first 256 tokens", "BOS policy lm-eval", "windows of 64 tokens", "1,000 draws, seed 0"],
            "dissociation": ["BLiMP", "x: delta of blimp acc_sum", "y: delta of copa acc"],
            "pos": ["WikiText-2 (raw test) [wikitext2]", "500 draws, seed 3", env["analyses"]["pos"],
                    f"reading ablation {env['ablation_id']}", "wikitext-2:valid"],
            "layers": ["200 draws, seed 0", env["analyses"]["layers"], "wikitext-2:valid"],
            "training": ["step0", "step143000", "training step", "wikitext-2:valid"],
            "negshare": ["100 draws, seed 0", "wikitext-2:valid"]}
    for key, phrases in need.items():
        cap = caps[f"m1-{key}.png"]
        assert f"Model {env['model']}" in cap, key
        assert "checkpoint" in cap, key
        for p in phrases:
            assert p in cap, (key, p, cap)


def test_wdist_table_matches_a_reference_from_the_stored_statistics(env):
    stats = _read(env["store"], "neuron_stats")
    html = _html(env["full_dir"])
    table = html.split('id="m1-wdist"')[1].split("</table>")[0]
    best = (-1.0, None)
    for layer in sorted(set(stats["layer"].to_list())):
        w = sorted(float(x) for x in stats.filter(pl.col("layer") == layer)["w_dist"].to_list())
        n = len(w)
        k = max(1, round(0.01 * n))

        def q(p: float) -> float:  # linear interpolation between closest ranks
            h = (n - 1) * p
            lo = math.floor(h)
            return w[lo] + (h - lo) * (w[min(lo + 1, n - 1)] - w[lo])

        cells = [layer, n, k, sum(w) / n, q(0.5), q(0.9), q(0.99), w[-1], w[n - k]]
        row = "<tr>" + "".join(f"<td>{num(c)}</td>" for c in cells) + "</tr>"
        assert row in table, (layer, row)
        for neuron, v in zip(stats.filter(pl.col("layer") == layer)["neuron"].to_list(),
                             stats.filter(pl.col("layer") == layer)["w_dist"].to_list()):
            if v > best[0]:
                best = (v, (layer, neuron))
    layer, neuron = best[1]
    assert f"Example neuron: layer {layer}, neuron {neuron} (the highest w_dist" in html


def test_ablation_table_is_the_stored_comparison(env):
    from negdb.ablate.stored import stored_comparison
    from negdb.store.catalog import Catalog

    with Catalog(env["store"]) as cat:
        rows = stored_comparison(cat, env["ablation_id"]).to_records()
    html = _html(env["full_dir"])
    table = html.split('id="m1-ablation"')[1].split("</table>")[0]
    for r in rows:
        assert f"{num(r['value'])} ({r['delta']:+.4g} [{r['lo']:+.4g}, {r['hi']:+.4g}])" in table, r
    dd = html.split('id="m1-dissociation"')[1].split("</table>")[0]
    by = {(r["benchmark"], r["metric"], r["condition"]): r for r in rows}
    for cond, label in (("ablation", "neg-ablation"), ("random", "random"), ("ppl-matched", "ppl-matched")):
        x, y = by[("blimp", "acc_sum", cond)], by[("copa", "acc", cond)]
        cells = [label, "blimp acc_sum", x["delta"], x["lo"], x["hi"], "copa acc", y["delta"], y["lo"], y["hi"]]
        row = "<tr>" + "".join((TD_TEXT if isinstance(c, str) else "<td>") + f"{num(c)}</td>"
                               for c in cells) + "</tr>"
        assert row in dd, row


def test_training_curves_use_all_layer_rows_else_the_layer_mean(env):
    html = _html(env["full_dir"])
    table = html.split('id="m1-training"')[1].split("</table>")[0]
    head = re.findall(r"<th>([^<]+)</th>", table)
    assert head[:2] == ["training step", "revision"]
    td = _read(env["store"], "training_dynamics")
    col = head.index("w_dist_mean")
    body = re.findall(r"<tr>(.*?)</tr>", table.split("<tbody>")[1])
    assert len(body) == 4
    for step, tr in zip((0, 1000, 10000, 143000), body):
        cells = re.findall(r"<td[^>]*>([^<]*)</td>", tr)
        vals = [v for s, q, v in zip(td["step"].to_list(), td["quantity"].to_list(), td["value"].to_list())
                if s == step and q == "w_dist_mean"]
        assert cells[0] == num(float(step)) and cells[1] == f"step{step}"
        assert cells[col] == num(sum(vals) / len(vals))
        d = [v for s, q, b, v in zip(td["step"].to_list(), td["quantity"].to_list(), td["benchmark"].to_list(),
                                     td["value"].to_list()) if s == step and q == "delta_random" and b == "wikitext2"]
        assert cells[head.index("delta_random wikitext2 ppl")] == num(d[0])
        p99 = [v for s, q, v in zip(td["step"].to_list(), td["quantity"].to_list(), td["value"].to_list())
               if s == step and q == "w_dist_p99"]
        assert cells[head.index("w_dist_p99")] == num(p99[0])


def test_pos_and_layer_sections(env):
    html = _html(env["full_dir"])
    pos = html.split('id="m1-pos"')[1].split('id="m1-layers"')[0]
    for series in ("neg-ablation", "random s0", "random s1", "ppl-matched"):
        assert f'<td class="t">{series}</td>' in pos
    assert "Over all tokens: neg-ablation: 0.05 nats/token; random s0: 0.025 nats/token" in pos
    layers = html.split('id="m1-layers"')[1].split('id="m1-training"')[0]
    # per benchmark the headline level only (macro for blimp), no per-group rows
    assert '<td class="t">macro</td>' in layers and '<td class="t">UID</td>' not in layers
    assert '<td class="t">blimp</td><td class="t">acc_sum</td><td class="t">overall</td>' not in layers
    assert '<td class="t">0-2</td>' in layers  # the third cumulative group's layers


def test_rerendering_stores_nothing_and_gives_the_same_page(env):
    html = _html(env["full_dir"])
    again = build(env["store"], env["full_dir"], [env["model"]])
    assert _store_state(env["store"]) == env["before"]
    assert again.page == env["full_dir"] / "index.html"
    assert [p.name for p in again.figures] == [*(f"m1-{k}.png" for k in ALL_FIGURES), *_sweep_pngs(env)]
    assert again.notes == []
    assert _html(env["full_dir"]) == html


def test_sweep_section_shows_the_stored_summary(env):
    html = _html(env["full_dir"])
    caps = _captions(html)
    sid = env["analyses"]["sweep"]
    rows = _read(env["store"], "sweep_summary").filter(pl.col("analysis_id") == sid)
    sections = {}
    for name in _sweep_pngs(env):
        assert f"Model {env['model']}" in caps[name] and "checkpoint final" in caps[name]
        assert f"Sweep {sid} (negdb sweep" in caps[name] and "100 draws" in caps[name]
        block = html.split(f'<img src="{name}"')[1].split("<h3")[0]
        sections[name.removeprefix(f"sweep-{sid[:8]}-").removesuffix(".png")] = block
    for r in rows.iter_rows(named=True):  # every selectivity index, and the primary metrics of the others
        if r["kind"] != "selectivity" and (r["benchmark"], r["metric"]) not in (("blimp", "acc_sum"), ("copa", "acc"),
                                                                                ("wikitext2", "ppl")):
            continue
        key = f"dose-{r['mode']}" if r["kind"] == "dose" else r["kind"]
        cell = f"{r['value']:+.4g} [{r['ci_lo']:+.4g}, {r['ci_hi']:+.4g}]"
        assert f"{TD_TEXT}{cell}</td>" in sections[key], (key, r)
    assert rows.filter(pl.col("kind") == "selectivity").height > 0


def test_pinned_ids_and_neuron(env, tmp_path):
    rep = build(env["store"], tmp_path / "r", ablations=[env["ablation_id"]],
                analyses=[env["analyses"]["pos"], env["analyses"]["sweep"]], neuron="2:7", bins=10)
    html = _html(tmp_path / "r")
    assert "Example neuron: layer 2, neuron 7 (chosen with --neuron)" in html
    assert "in 10 bins" in html
    assert rep.models == [env["model"]]
    assert [p.name for p in rep.figures][-len(_sweep_pngs(env)):] == _sweep_pngs(env)


def test_every_stored_sweep_is_drawn_newest_first_unless_pinned(env, tmp_path, monkeypatch):
    store = tmp_path / "store"
    shutil.copytree(env["store"], store)
    monkeypatch.setattr(registry, "load_items", short_wikitext_loader(registry.load_items))
    res = cli(store, "sweep", "--model", env["model"], *SWEEP[:-3], "--n-boot", "50", "--quiet")
    assert res.exit_code == 0, res.output
    first = env["analyses"]["sweep"]
    ids = _read(store, "analyses").filter(pl.col("kind") == "sweep").sort("created_at")["analysis_id"].to_list()
    assert len(ids) == 2 and ids[0] == first
    second = ids[1]
    tags = [f"sweep-{a[:8]}-" for a in (second, first)]

    def sweep_tags(rep) -> list[str]:
        return list(dict.fromkeys(p.name[:15] for p in rep.figures if p.name.startswith("sweep-")))

    every = build(store, tmp_path / "all")
    assert sweep_tags(every) == tags  # newest first
    html = _html(tmp_path / "all")
    assert f"Sweep {second} (negdb sweep" in html and f"Sweep {first} (negdb sweep" in html
    assert f"{second}, {first}" in html  # the facts table lists both
    only = build(store, tmp_path / "one", analyses=[first])
    assert sweep_tags(only) == tags[1:]
    both = build(store, tmp_path / "two", analyses=[first, second])
    assert sweep_tags(both) == tags[::-1]
    with pytest.raises(BadArgument, match="one per model and kind"):
        build(store, tmp_path / "bad", analyses=[env["analyses"]["pos"], _other_pos(store, env)])


def _other_pos(store: Path, env) -> str:
    """A second stored pos analysis of the same model (a copy of the first under a new id)."""
    new_id = analysis_id("pos", {"copy": env["analyses"]["pos"]})
    publish(StoreLayout(store), new_id, kind="pos", model_id=env["model"], revision="final", config={}, summary={},
            seconds=0.0, tables={})
    return new_id


# ------------------------------------------------------------------------------------------ missing analyses


def test_missing_analyses_give_notes_with_their_commands(env):
    bare = env["bare"]
    html = bare.page.read_text(encoding="utf-8")
    assert sorted(p.name for p in bare.figures) == sorted(f"m1-{k}.png" for k in ALL_FIGURES[:4])
    for p in bare.figures:
        _check_png(p)
    store, model = str(env["store"]), env["model"]
    for kind, extra in (("pos", " --top 1%"), ("layers", " --top 1%"), ("training", ""), ("pairs", "")):
        cmd = f"negdb --store {store} analyze {kind} --model {model}{extra}"
        assert f"<code>{cmd}</code>" in html, cmd
        assert any(f"No stored {kind} analysis" in n for n in bare.notes)
    assert f"<code>negdb --store {store} sweep --model {model}</code>" in html
    assert any(f"No stored sweep of {model}" in n for n in bare.notes)
    assert len(bare.notes) == 5


def test_a_model_without_an_ablation_gets_its_own_section(env, tmp_path_factory, tmp_path):
    other = save_tiny(tmp_path_factory.mktemp("m2") / "gpt2", "gpt2", seed=1)
    store = ingest_into(tmp_path_factory, other)
    rep = build(store, tmp_path / "r")
    html = _html(tmp_path / "r")
    assert [p.name for p in rep.figures] == ["m1-wdist.png", "m1-neuron.png"]
    assert f"ablate --model {other.resolve()} --top 1% --mode neg" in html
    assert len(rep.notes) == 7


# ------------------------------------------------------------------------------------------ atomic writes


def test_a_failed_render_leaves_the_earlier_report(env, tmp_path, monkeypatch):
    out = tmp_path / "r"
    shutil.copytree(env["full_dir"], out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    from negdb.report import figures

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(figures, "training", boom)
    with pytest.raises(RuntimeError):
        build(env["store"], out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["r"]  # no temporary folder left


# ------------------------------------------------------------------------------------------ errors


def test_errors_are_one_line(env, tmp_path):
    store = env["store"]
    out = ["--out", str(tmp_path / "r")]
    assert_one_error(cli(tmp_path / "nowhere", "report", *out), StoreError)
    empty = tmp_path / "empty"
    StoreLayout(empty).init()
    res = cli(empty, "report", *out)
    assert_one_error(res, NotFound)
    assert "nothing to report" in res.stderr
    for args, kind in ((["--model", "no-such-model"], NotFound), (["--ablation", "0123456789abcdef"], NotFound),
                       (["--analysis", "nope"], NotFound), (["--neuron", "x"], BadArgument),
                       (["--neuron", "0:9999"], NotFound), (["--neuron", "99:0"], NotFound),
                       (["--bins", "0"], BadArgument), (["--checkpoint", "step5"], NotFound)):
        assert_one_error(cli(store, "report", *args, *out), kind)
    assert not (tmp_path / "r").exists()
    (tmp_path / "file").write_text("x")
    assert_one_error(cli(store, "report", "--out", str(tmp_path / "file")), BadArgument)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    assert_one_error(cli(store, "report", "--out", str(busy)), BadArgument)
    assert [p.name for p in busy.iterdir()] == ["keep.txt"]
    with pytest.raises(NotFound):
        build(store, tmp_path / "r2", ablations=[env["ablation_id"]], models=["no-such-model"])
