"""Screenshots of every page kind of the neuron browser, for docs/GALLERY.md.

    .venv/bin/python bench/browser_screenshots.py --store negdb-store [--synthetic /tmp/negdb-synth] \\
        --out docs/gallery

Starts ``negdb serve`` on the store (a SmolLM2-135M store with an ablation and analyses: ``make demo`` makes
one), loads each page kind in headless Chromium (tests/chromium.py), waits until every chart is drawn, checks
the console has no errors and saves a PNG of the whole page (height capped). ``--synthetic`` adds the neuron page
of the 20-million-row synthetic catalog, whose w_dist trajectory spans 154 checkpoints. Writes the gallery page
``GALLERY.md`` one folder above ``--out``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote, urlencode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def shrink(path: Path, width: int) -> None:
    """Keep the gallery small: scale the PNG to ``width`` pixels and 128 colours (text stays readable)."""
    from PIL import Image

    with Image.open(path) as im:
        rgb = im.convert("RGB")
    w, h = rgb.size
    if width < w:
        rgb = rgb.resize((width, round(h * width / w)), Image.LANCZOS)
    rgb.quantize(colors=128, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(path, optimize=True)


def shoot(drv, url: str, path: Path, *, click: str | None = None, max_height: int = 2600, width: int = 1000) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from tests import chromium

    drv.set_window_size(1360, 1000)
    drv.get(url)
    ready = ("return document.readyState === 'complete' && !document.querySelector('[hx-trigger=\"load\"]') && "
             "[...document.querySelectorAll('[data-chart]')].every(e => e.dataset.drawn === '1')")
    WebDriverWait(drv, 300).until(lambda d: d.execute_script(ready))
    if click:
        drv.find_element(By.CSS_SELECTOR, click).click()
        time.sleep(0.5)
    height = min(max_height, drv.execute_script("return document.documentElement.scrollHeight"))
    drv.set_window_size(1360, height)
    time.sleep(0.3)
    drv.save_screenshot(str(path))
    shrink(path, width)
    errors = chromium.console_errors(drv)
    if errors:
        raise SystemExit(f"{url}: console errors {errors}")
    print(f"{path}  <- {url}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", type=Path, required=True)
    ap.add_argument("--synthetic", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "gallery")
    ap.add_argument("--width", type=int, default=1000, help="width of the saved PNGs (pages render at 1360)")
    args = ap.parse_args()
    import negdb
    from tests import chromium
    from tests.serving import serving

    with negdb.connect(args.store) as cat:
        model = cat.sql("SELECT model_id FROM models LIMIT 1")["model_id"][0]
        pair = cat.sql("SELECT revision, layer, neuron FROM diff_pairs LIMIT 1").to_dicts()
        top = cat.sql("SELECT revision, layer, neuron FROM neurons ORDER BY w_dist DESC LIMIT 1").to_dicts()[0]
        neuron = pair[0] if pair else top
        ablation = cat.sql("SELECT ablation_id FROM ablations ORDER BY created_at LIMIT 1")["ablation_id"].to_list()
        result = cat.sql("SELECT result_id FROM eval_results WHERE benchmark = 'blimp' AND mode <> 'none' "
                         "ORDER BY created_at LIMIT 1")["result_id"].to_list()
        lm = cat.sql("SELECT result_id FROM eval_results WHERE benchmark LIKE 'lm-eval:%' AND mode <> 'none' "
                     "ORDER BY created_at LIMIT 1")["result_id"].to_list()
        analyses = cat.sql("SELECT analysis_id, kind FROM analyses ORDER BY created_at").to_dicts()
        sets = cat.sql("SELECT name FROM neuron_sets ORDER BY created_at")["name"].to_list()
        head = cat.sql("SELECT n, dataset FROM neurons LIMIT 1").to_dicts()[0]
        tokens, dataset = head["n"], head["dataset"]
    m = quote(model, safe="")
    n_url = f"/m/{m}/{quote(neuron['revision'], safe='')}/{neuron['layer']}/{neuron['neuron']}"
    pages = [("home", "Home: the store's models, counts, and the w_dist distribution per layer", "/ui", None),
             ("search", "Search: a --where filter and a sort over neurons, paged; each row links to its neuron",
              "/search?" + urlencode({"model": model, "where": "w_dist > 0.3", "order": "w_dist"}), None),
             ("neuron", "A neuron: every statistic, the histogram against the fitted Gaussian (negative region shaded),"
              " token contexts, differentiating pairs, neighbours; an SQL link per panel", n_url, None),
             ("neuron-log", "The same histogram on a log scale", n_url, ".scale-toggle"),
             ("sets-and-results", "Sets and results: saved sets, ablations, lm-eval tasks under an intervention, "
              "analyses, every evaluation", "/browse", None)]
    if "wass1" in sets or sets:
        name = "wass1" if "wass1" in sets else sets[0]
        pages.append(("set", f"A saved set ({name}): members per layer, its evaluations, its members",
                      f"/browse/set/{quote(name, safe='')}", None))
    if ablation:
        pages.append(("ablation", "An ablation: differences from the baseline per benchmark and condition, with 95% "
                      "paired-bootstrap CIs (hover shows them)", f"/browse/ablation/{ablation[0]}", None))
    if result:
        pages.append(("result", "An evaluation (BLiMP under the ablation): accuracy per paradigm against the "
                      "baseline, the difference with its CI", f"/browse/result/{result[0]}", None))
    if lm:
        pages.append(("lm-eval-result", "An lm-evaluation-harness task run under the intervention (negdb lm-eval)",
                      f"/browse/result/{lm[0]}", None))
    for a in analyses:
        if a["kind"] in ("layers", "pairs", "pos", "sweep", "training"):
            pages.append((f"analysis-{a['kind']}", f"A stored analysis ({a['kind']})",
                          f"/browse/analysis/{a['analysis_id']}", None))
    pages.append(("sql", "The SQL page: any panel's statement, or your own, with the walls of POST /sql",
                  "/browse/sql?" + urlencode({"q": "SELECT layer, count(*) AS n, max(w_dist) AS max_w FROM neurons "
                                                   "GROUP BY layer ORDER BY n DESC LIMIT 10"}), None))
    args.out.mkdir(parents=True, exist_ok=True)
    shots = []
    with tempfile.TemporaryDirectory() as profile:
        drv = chromium.start(Path(profile))
        try:
            with serving(args.store) as (base, _):
                for name, caption, url, click in pages:
                    shoot(drv, base + url, args.out / f"{name}.png", click=click, width=args.width)
                    shots.append((name, caption, url))
            if args.synthetic:
                with serving(args.synthetic) as (base, _):
                    url = "/m/pythia-1b/step143000/7/1234"
                    shoot(drv, base + url, args.out / "neuron-154-checkpoints.png", width=args.width)
                    shots.append(("neuron-154-checkpoints", "A neuron of the 20-million-row synthetic catalog (Pythia-1b"
                                  " shape, 154 checkpoints): its w_dist trajectory is fetched after the page loads; "
                                  "no activations are stored there, so no histogram", url))
        finally:
            drv.quit()
    rel = os.path.relpath(args.out, args.out.parent)
    lines = ["# The neuron browser: a gallery", "",
             f"Screenshots of `negdb serve` on a store of {model} ({tokens:,} tokens of {dataset}; "
             "what the store holds is on the home page), taken in headless Chromium by "
             f"`bench/browser_screenshots.py` on {time.strftime('%Y-%m-%d')}. Every "
             "chart is also a plain table on its page (without JavaScript); every panel links to its SQL. "
             "See docs/SERVICE.md.", ""]
    for name, caption, url in shots:
        lines += [f"## {caption}", "", f"`{url}`", "", f"![{name}]({rel}/{name}.png)", ""]
    (args.out.parent / "GALLERY.md").write_text("\n".join(lines))
    print(f"wrote {args.out.parent / 'GALLERY.md'}")


if __name__ == "__main__":
    main()
