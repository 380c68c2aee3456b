"""The neuron browser of ``negdb serve``: every page kind, server-side (TestClient) and in headless Chromium.

The store: a tiny two-checkpoint run ingested for real, a saved set, a real ablation (COPA, 3 items, a random
control), a pairs analysis and an lm-eval comparison published as rows. The Chromium tests (tests/chromium.py)
skip with the reason when no browser can be had, except under ``CI=true``.
"""

from __future__ import annotations

import html
import os
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient

import negdb
from negdb.service.app import create_app
from tests import chromium
from tests.ingest_helpers import TINY, cli, store_files
from tests.tiny_models import save_step_run

pytestmark = pytest.mark.timeout(300)
HTML = {"accept": "text/html"}


# ------------------------------------------------------------------------------------------------ fixtures


def _publish_lm_eval_pair(store: Path, model: str, set_id: str, n_members: int) -> None:
    """A baseline and an ablated result of one lm-eval task, as `negdb lm-eval` stores them."""
    from negdb.store.layout import StoreLayout
    from negdb.store.results import publish

    items = [True, False, True, True, False, True]
    for mode, sid, correct in (("none", None, items), ("neg", set_id, [False, False, True, True, False, False])):
        rows = [{"benchmark": "lm-eval:demo_task", "item": i, "item_id": str(i), "grp": None, "meta_json": None,
                 "correct": c, "correct_alt": None, "logprobs": [-1.0, -2.0], "n_tokens": None, "greedy": None,
                 "prefix_id": None} for i, c in enumerate(correct)]
        acc = sum(correct) / len(correct)
        rid = ("a" if mode == "none" else "b") * 64
        publish(StoreLayout(store), {
            "result_id": rid, "model_id": model, "revision": "step1000", "commit": None, "mode": mode, "set_id": sid,
            "n_neurons": 0 if sid is None else n_members, "benchmark": "lm-eval:demo_task", "bench_hash": "h",
            "scoring_json": '{"harness": "lm-eval"}', "item_limit": 6, "sample_seed": 0, "n_items": len(rows),
            "primary_metric": "acc", "primary_value": acc, "seconds": 0.1, "created_at": None,
            "versions_json": "{}"}, rows, [{"benchmark": "lm-eval:demo_task", "metric": "acc", "level": "overall",
                                            "grp": None, "value": acc, "n": len(rows)}])


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("browser")
    run = save_step_run(tmp, steps=(0, 1000), name="run")
    store = tmp / "store"
    for args in (("ingest", "--model", str(run), "--checkpoints", "all", *TINY),
                 ("select", "--model", str(run), "--top", "10%", "--save", "w10"),
                 ("ablate", "--model", str(run), "--set", "w10", "--evals", "copa", "--limit", "3", "--controls",
                  "random", "--seeds", "1", "--quiet"),
                 ("analyze", "pairs", "--model", str(run), "--layer", "1", "--index", "3", "--k", "5",
                  "--n-boot", "50")):
        res = cli(store, *args)
        assert res.exit_code == 0, (args, res.output)
    with negdb.connect(store) as cat:
        model = cat.sql("SELECT model_id FROM models")["model_id"][0]
        s = cat.sql("SELECT set_id, n_members FROM neuron_sets WHERE name = 'w10'").to_dicts()[0]
        ablation = cat.sql("SELECT DISTINCT ablation_id FROM ablations")["ablation_id"][0]
        analysis = cat.sql("SELECT analysis_id FROM analyses WHERE kind = 'pairs'")["analysis_id"][0]
        top = cat.sql("SELECT layer, neuron FROM neuron_stats WHERE revision = 'step1000' ORDER BY w_dist DESC, "
                      "layer, neuron LIMIT 1").to_dicts()[0]
    _publish_lm_eval_pair(store, model, s["set_id"], s["n_members"])
    return {"store": store, "model": model, "ablation": ablation, "analysis": analysis, "top": top}


@pytest.fixture(scope="module")
def client(env: dict) -> Iterator[TestClient]:
    with TestClient(create_app(env["store"], check_interval=0.0)) as c:
        yield c


def neuron_path(env: dict, layer: int, neuron: int, revision: str = "step1000") -> str:
    return f"/m/{quote(env['model'], safe='')}/{revision}/{layer}/{neuron}"


def _text(html: str) -> str:
    return re.sub(r"<[^>]+>", " ", html)


# ------------------------------------------------------------------------------------------------ server side


def test_every_page_kind_renders(client: TestClient, env: dict) -> None:
    pages = ["/", "/ui", "/search", neuron_path(env, 1, 3), "/browse", "/browse/set/w10",
             f"/browse/ablation/{env['ablation']}", f"/browse/analysis/{env['analysis']}", "/browse/result/" + "b" * 64,
             "/browse/sql?q=" + quote("SELECT count(*) AS n FROM neurons")]
    for url in pages:
        r = client.get(url, headers=HTML)
        assert r.status_code == 200, (url, r.text[:500])
        assert r.headers["content-type"].startswith("text/html")
        assert "app;dur=" in r.headers["server-timing"]
    # API clients still get JSON at /
    assert client.get("/").json()["service"] == "negdb query service"


def test_every_chart_has_a_plain_table_and_its_sql(client: TestClient, env: dict) -> None:
    """Without JavaScript a page is tables: each chart's data is in a table, each panel links its SQL."""
    for url in ("/ui", neuron_path(env, 1, 3), f"/browse/ablation/{env['ablation']}", "/browse"):
        html = client.get(url, headers=HTML).text
        assert html.count("data-chart") >= 1, url
        assert html.count("<table") >= html.count("data-chart"), url
        assert 'class="sql"' in html, url


def test_search_matches_the_catalog_and_pages(client: TestClient, env: dict) -> None:
    where = "w_dist > 0.05 AND layer >= 1"
    r = client.get("/search", params={"model": env["model"], "checkpoint": "step1000", "where": where,
                                      "order": "w_dist", "dir": "desc", "per": 5}, headers=HTML)
    assert r.status_code == 200
    with negdb.connect(env["store"]) as cat:
        expected = cat.sql(f"SELECT layer, neuron FROM neurons WHERE revision = 'step1000' AND {where} "
                           "ORDER BY w_dist DESC, layer, neuron").rows()
    found = re.findall(r'href="/m/[^"]+/step1000/(\d+)/(\d+)"', r.text)
    assert [(int(a), int(b)) for a, b in found] == expected[:5]
    assert f'<span id="total">{len(expected)}</span>' in r.text
    assert 'rel="next"' in r.text
    page2 = client.get("/search", params={"model": env["model"], "checkpoint": "step1000", "where": where,
                                          "per": 5, "page": 2}, headers=HTML)
    found2 = re.findall(r'href="/m/[^"]+/step1000/(\d+)/(\d+)"', page2.text)
    assert [(int(a), int(b)) for a, b in found2] == expected[5:10]


def test_search_over_every_checkpoint_reads_a_top_n_and_counts_after_load(client: TestClient, env: dict) -> None:
    """Over every checkpoint the page is one top-N over neuron_stats (keys, w_dist, the sort and the filter's
    columns); the count of all matches is a second request (htmx after load, or a link without JavaScript)."""
    where = "frac_neg > 0.3 AND layer >= 1"
    params = {"model": env["model"], "checkpoint": "*", "where": where, "order": "md", "dir": "asc", "per": 7}
    r = client.get("/search", params=params, headers=HTML)
    assert r.status_code == 200, r.text[:500]
    with negdb.connect(env["store"]) as cat:
        expected = cat.sql(f"SELECT revision, layer, neuron FROM neurons WHERE {where} "
                           "ORDER BY md ASC NULLS LAST, revision, layer, neuron").rows()
    assert len(expected) > 7 and len({e[0] for e in expected}) == 2  # matches at both checkpoints
    found = re.findall(r'href="/m/[^"]+/(step\d+)/(\d+)/(\d+)"', r.text.split('id="search-results"')[1])
    assert [(a, int(b), int(c)) for a, b, c in found] == expected[:7]
    head = re.findall(r"<th>([^<]+)</th>", r.text.split('id="search-results"')[1].split("</thead>")[0])
    assert head == ["model_id", "revision", "layer", "neuron", "w_dist", "md", "frac_neg"]
    sql = re.search(r'class="sql" href="/browse/sql\?q=([^"]+)"', r.text.split('class="counts"')[1]).group(1)
    assert "FROM+neuron_stats+WHERE" in sql  # the filter and the sort need none of the neurons view's joins
    assert 'id="total"' not in r.text and 'hx-trigger="load"' in r.text
    count_url = re.search(r'id="total-panel" hx-get="([^"]+)"', r.text).group(1).replace("&amp;", "&")
    fragment = client.get(count_url, headers={**HTML, "hx-request": "true"})
    assert fragment.status_code == 200 and "<html" not in fragment.text
    assert f'<span id="total">{len(expected):,}</span>' in fragment.text
    whole = client.get(count_url, headers=HTML).text  # without JavaScript: the page with its count
    assert f'<span id="total">{len(expected):,}</span>' in whole and 'id="search-results"' in whole
    # a filter on a column only the neurons view has (the checkpoint's step) runs there, with the same answer
    r2 = client.get("/search", params={**params, "where": "step >= 1000 AND layer = 1"}, headers=HTML)
    with negdb.connect(env["store"]) as cat:
        expected2 = cat.sql("SELECT revision, layer, neuron FROM neurons WHERE step >= 1000 AND layer = 1 "
                            "ORDER BY md ASC NULLS LAST, revision, layer, neuron LIMIT 7").rows()
    found2 = re.findall(r'href="/m/[^"]+/(step\d+)/(\d+)/(\d+)"', r2.text.split('id="search-results"')[1])
    assert [(a, int(b), int(c)) for a, b, c in found2] == expected2 and expected2
    assert "FROM+neurons+WHERE" in r2.text and "<th>step</th>" in r2.text
    bad = client.get(count_url.replace("frac_neg", "nope"), headers={**HTML, "hx-request": "true"})
    assert bad.status_code == 400


def test_ablation_charts_keep_perplexity_off_the_accuracy_axis() -> None:
    from negdb.service.browser import charts

    rows = [{"key": f"{b} {m}", "benchmark": b, "metric": m, "condition": c, "delta": d, "lo": d - 0.01,
             "hi": d + 0.01} for b, m, d in (("blimp", "acc_mean", -0.02), ("wikitext", "ppl", 4.5))
            for c in ("ablation", "random")]
    made = {cid: spec for cid, _, spec in charts.ablation(rows)}
    assert set(made) == {"ablation-chart", "ablation-ppl-chart"}
    assert made["ablation-chart"]["xlabels"] == ["blimp acc_mean"]
    assert made["ablation-ppl-chart"]["xlabels"] == ["wikitext ppl"]
    assert [s["y"] for s in made["ablation-ppl-chart"]["series"]] == [[4.5], [4.5]]
    assert [cid for cid, _, _ in charts.ablation(rows[:2])] == ["ablation-chart"]
    assert charts.ablation([]) == []


def test_the_service_start_compiles_every_template_before_the_first_request() -> None:
    """``warm`` (run by the service's start) leaves every template compiled in the environment's cache, so a
    template error stops the start instead of a page, and no first page load pays for compiling."""
    from negdb.service.browser.routes import make_templates, warm

    templates = make_templates()
    assert len(templates.env.cache or {}) == 0
    warm(templates)
    names = templates.env.list_templates()
    assert len(names) >= 10 and len(templates.env.cache) == len(names)


def test_referenced_columns_uses_the_tokenizer() -> None:
    from negdb.service.browser.queries import referenced_columns

    cols = ["revision", "layer", "neuron", "w_dist", "w_pct", "step"]
    assert referenced_columns('w_pct > 99 AND "layer" < 3 AND lower(revision) = \'w_dist\'', cols) == \
        ["revision", "layer", "w_pct"]
    assert referenced_columns("1 = 1", cols) == []


@pytest.mark.parametrize("where", ["1=1; DROP TABLE neurons", "w_dist > (SELECT count(*) FROM read_csv('/etc/passwd'))",
                                   "getenv('HOME') IS NOT NULL", "layer = 1) OR (1=1"])
def test_search_has_the_walls_of_sql(client: TestClient, env: dict, where: str) -> None:
    before = store_files(env["store"])
    r = client.get("/search", params={"model": env["model"], "where": where}, headers=HTML)
    assert r.status_code == 400 and 'id="error"' in r.text
    assert "/m/" not in r.text.split('id="error"')[1]  # no result rows
    assert store_files(env["store"]) == before


def test_sql_page_and_panel_links_reproduce_the_panels(client: TestClient, env: dict) -> None:
    html = client.get(neuron_path(env, 1, 3), headers=HTML).text
    links = re.findall(r'class="sql" href="([^"]+)"', html)
    assert links
    for link in links:
        r = client.get(link.replace("&amp;", "&"), headers=HTML)
        assert r.status_code == 200, r.text[:300]
    stats_link = re.search(r'Statistics <a class="sql" href="([^"]+)"', html).group(1).replace("&amp;", "&")
    page = client.get(stats_link, headers=HTML).text
    assert 'id="sql-result"' in page and "w_dist" in page
    bad = client.get("/browse/sql", params={"q": "COPY neurons TO '/tmp/x.csv'"}, headers=HTML)
    assert bad.status_code == 400 and 'id="error"' in bad.text


def test_neuron_page(client: TestClient, env: dict) -> None:
    html = client.get(neuron_path(env, 1, 3), headers=HTML).text
    text = _text(html)
    assert "Neuron 3 of layer 1" in text
    with negdb.connect(env["store"]) as cat:
        w = cat.sql("SELECT w_dist FROM neurons WHERE revision = 'step1000' AND layer = 1 AND neuron = 3")["w_dist"][0]
    assert f"{w:.6g}" in text  # every statistic, to 6 digits
    assert 'id="hist-chart"' in html and 'id="traj-chart"' in html  # two checkpoints: a trajectory
    assert html.count("<mark>") >= 3 * 6  # token contexts with the token highlighted
    assert 'id="pairs"' in html  # the stored differentiating pairs of this neuron
    assert 'href="/browse/set/w10"' in html or "In no saved set" in html
    assert neuron_path(env, 1, 4) in html and neuron_path(env, 0, 3) in html  # neighbours
    assert client.get(neuron_path(env, 1, 10_000), headers=HTML).status_code == 404
    assert client.get(neuron_path(env, 1, 3, "step999"), headers=HTML).status_code == 404
    assert client.get("/m/nothing/final/0/0", headers=HTML).status_code == 404


def test_sets_and_results_pages(client: TestClient, env: dict) -> None:
    browse = client.get("/browse", headers=HTML).text
    for needle in ("/browse/set/w10", f"/browse/ablation/{env['ablation']}", f"/browse/analysis/{env['analysis']}",
                   "lm-eval:demo_task", 'id="lm-eval-chart"'):
        assert needle in browse
    ablation = client.get(f"/browse/ablation/{env['ablation']}", headers=HTML).text
    assert 'id="ablation-chart"' in ablation and "copa" in ablation and "random" in ablation
    result = client.get("/browse/result/" + "b" * 64, headers=HTML).text
    assert 'id="delta"' in result and "/browse/result/" + "a" * 64 in result  # against its baseline, with a CI
    s = client.get("/browse/set/w10", headers=HTML).text
    assert 'id="members-chart"' in s and 'id="members"' in s
    for kind, what in (("set", "neuron set named 'nope'"), ("result", "stored evaluation 'nope'"),
                       ("ablation", "stored ablation 'nope'"), ("analysis", "stored analysis 'nope'")):
        missing = client.get(f"/browse/{kind}/nope", headers=HTML)
        assert missing.status_code == 404 and f"no {what}" in html.unescape(missing.text)


def test_saving_a_set_needs_allow_writes(client: TestClient, env: dict) -> None:
    form = {"name": "from-browser", "model": env["model"], "checkpoint": "step1000", "where": "w_dist > 0.1"}
    page = client.get("/search", params={"where": "w_dist > 0.1"}, headers=HTML).text
    assert 'id="save-form"' not in page and "--allow-writes" in page
    before = store_files(env["store"])
    r = client.post("/search/save", data=form, headers=HTML)
    assert r.status_code == 403 and store_files(env["store"]) == before
    with TestClient(create_app(env["store"], allow_writes=True, check_interval=0.0)) as rw:
        assert 'id="save-form"' in rw.get("/search", params={"where": "w_dist > 0.1"}, headers=HTML).text
        r = rw.post("/search/save", data=form, headers=HTML, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/browse/set/from-browser"
        assert rw.get("/browse/set/from-browser", headers=HTML).status_code == 200
        bad = rw.post("/search/save", data={**form, "name": "x2", "where": "w_dist > (SELECT 1 FROM "
                                                                                 "read_csv('/etc/passwd'))"},
                      headers=HTML)
        assert bad.status_code == 400
    with negdb.connect(env["store"]) as cat:
        n = cat.sql("SELECT n_members FROM neuron_sets WHERE name = 'from-browser'")["n_members"][0]
        expected = cat.sql("SELECT count(*) AS n FROM neurons WHERE revision = 'step1000' AND w_dist > 0.1")["n"][0]
    assert n == expected


# ------------------------------------------------------------------------------------------------ Chromium


@pytest.fixture(scope="module")
def server(env: dict) -> Iterator[str]:
    from tests.serving import serving

    chromium.require()
    with serving(env["store"]) as (url, _proc):
        yield url


@pytest.fixture(scope="module")
def driver(server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    drv = chromium.start(tmp_path_factory.mktemp("chromium-profile"))
    drv.set_page_load_timeout(60)
    try:
        yield drv
    finally:
        drv.quit()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = os.environ.get("NEGDB_SCREENSHOTS")
    return Path(out) if out else tmp_path_factory.mktemp("screenshots")


def _visit(driver, url: str, shots: Path, name: str) -> list[dict]:
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    WebDriverWait(driver, 30).until(lambda d: d.execute_script(
        "return document.readyState === 'complete' && [...document.querySelectorAll('[data-chart]')]"
        ".every(e => e.dataset.drawn === '1')"))
    charts = driver.execute_script(chromium.CHART_STATE)
    shots.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(shots / f"{name}.png"))
    assert (shots / f"{name}.png").stat().st_size > 5000
    assert chromium.console_errors(driver) == [], url
    return charts


def _assert_drawn(charts: list[dict], *ids: str) -> None:
    by = {c["id"]: c for c in charts}
    for i in ids:
        assert i in by, (i, charts)
        c = by[i]
        assert c["drawn"] and c["canvas"] and c["width"] > 100 and c["points"] > 0, c
        assert c["inked"] > 50, c  # something was drawn on the canvas


def test_chromium_home_and_sets_and_results(driver, server: str, env: dict, shots: Path) -> None:
    _assert_drawn(_visit(driver, server + "/ui", shots, "home"), "layers-chart")
    _assert_drawn(_visit(driver, server + "/browse", shots, "sets-and-results"), "lm-eval-chart")
    _assert_drawn(_visit(driver, server + f"/browse/ablation/{env['ablation']}", shots, "ablation"),
                  "ablation-chart")
    _assert_drawn(_visit(driver, server + "/browse/set/w10", shots, "set"), "members-chart")
    _visit(driver, server + f"/browse/analysis/{env['analysis']}", shots, "analysis")
    _visit(driver, server + "/browse/result/" + "b" * 64, shots, "result")


def test_chromium_search_then_follow_a_link_to_a_neuron(driver, server: str, env: dict, shots: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    _visit(driver, server + "/search", shots, "search")
    box = driver.find_element(By.ID, "where")
    box.clear()
    box.send_keys("w_dist > 0.05 AND layer = 1")
    driver.find_element(By.ID, "search-button").click()
    # htmx swaps the results in place and pushes the URL
    WebDriverWait(driver, 30).until(lambda d: "layer+%3D+1" in d.current_url or "layer%20%3D%201" in d.current_url)
    WebDriverWait(driver, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#search-results a.neuron-link"))
    rows = driver.find_elements(By.CSS_SELECTOR, "#search-results tbody tr")
    assert rows and all(r.find_elements(By.TAG_NAME, "td")[2].text == "1" for r in rows)
    driver.save_screenshot(str(shots / "search-results.png"))
    assert chromium.console_errors(driver) == []
    first = driver.find_element(By.CSS_SELECTOR, "#search-results a.neuron-link")
    target = first.get_attribute("href")
    first.click()
    WebDriverWait(driver, 30).until(lambda d: d.current_url == target)
    charts = _visit(driver, target, shots, "neuron")
    _assert_drawn(charts, "hist-chart", "traj-chart")
    # the histogram switches to a log scale and back
    driver.find_element(By.CSS_SELECTOR, ".scale-toggle").click()
    WebDriverWait(driver, 10).until(lambda d: d.execute_script(
        "return document.getElementById('hist-chart').dataset.scale") == "log")
    _assert_drawn(driver.execute_script(chromium.CHART_STATE), "hist-chart")
    driver.save_screenshot(str(shots / "neuron-log.png"))
    # hovering a chart shows the values
    from selenium.webdriver.common.action_chains import ActionChains

    over = driver.find_element(By.CSS_SELECTOR, "#traj-chart .u-over")
    ActionChains(driver).move_to_element(over).perform()
    WebDriverWait(driver, 10).until(lambda d: d.find_element(By.CSS_SELECTOR, "#traj-chart .tip").is_displayed())
    assert "w_dist" in driver.find_element(By.CSS_SELECTOR, "#traj-chart .tip").text
    assert chromium.console_errors(driver) == []


def test_chromium_pages_work_without_javascript(server: str, env: dict, tmp_path: Path) -> None:
    """With JavaScript off the charts are not drawn, and the tables carry the same data."""
    from selenium.webdriver.common.by import By

    drv = chromium.start(tmp_path / "profile-nojs")
    try:
        drv.execute_cdp_cmd("Emulation.setScriptExecutionDisabled", {"value": True})
        drv.get(server + neuron_path(env, 1, 3))
        assert drv.find_elements(By.CSS_SELECTOR, "#hist-table tbody tr")
        assert drv.find_elements(By.CSS_SELECTOR, "#stats tr")
        assert not drv.find_elements(By.CSS_SELECTOR, "#hist-chart canvas")
        drv.get(server + "/search?where=w_dist+%3E+0.05")
        assert drv.find_elements(By.CSS_SELECTOR, "#search-results a.neuron-link")
    finally:
        drv.quit()


def test_chromium_saves_a_set_only_when_writes_are_allowed(driver, server: str, env: dict, shots: Path) -> None:
    """Clicked through: search, save the result as a set from the page's form, find it on the sets page and in the
    store; a read-only service offers no form, and a save posted to it anyway shows the user a 403 page."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from tests.serving import serving

    where = "w_dist > 0.05 AND layer = 1"
    name = "clicked-in-chromium"
    with serving(env["store"], "--allow-writes") as (rw, _proc):
        _visit(driver, rw + "/search", shots, "search-writable")
        assert "writes allowed" in driver.find_element(By.CSS_SELECTOR, "nav .mode").text
        box = driver.find_element(By.ID, "where")
        box.clear()
        box.send_keys(where)
        driver.find_element(By.ID, "search-button").click()
        WebDriverWait(driver, 30).until(lambda d: [e.get_attribute("value") for e in d.find_elements(
            By.CSS_SELECTOR, "#save-form input[name=where]")] == [where])  # htmx swapped the results in
        shown = driver.find_element(By.ID, "total").text
        driver.find_element(By.CSS_SELECTOR, "#save-form input[name=name]").send_keys(name)
        driver.save_screenshot(str(shots / "search-save.png"))
        driver.find_element(By.CSS_SELECTOR, "#save-form button[type=submit]").click()
        WebDriverWait(driver, 60).until(lambda d: d.current_url == rw + f"/browse/set/{name}")
        _assert_drawn(_visit(driver, driver.current_url, shots, "set-saved"), "members-chart")
        assert name in driver.find_element(By.TAG_NAME, "h1").text
        _visit(driver, rw + "/browse", shots, "sets-with-saved")
        assert driver.find_elements(By.CSS_SELECTOR, f'a[href="/browse/set/{name}"]')
    with negdb.connect(env["store"]) as cat:
        saved = cat.sql("SELECT s.revision, s.n_members, s.expression, m.layer, m.neuron FROM neuron_sets s "
                        "JOIN neuron_set_members m USING (set_id) WHERE s.name = ?", [name])
        expected = cat.sql(f"SELECT layer, neuron FROM neurons WHERE revision = 'step1000' AND {where}")
    assert saved.height == expected.height == int(shown.replace(",", "")) > 0
    assert set(saved["revision"]) == {"step1000"} and set(saved["n_members"]) == {expected.height}
    assert sorted(saved.select("layer", "neuron").rows()) == sorted(expected.rows())
    assert where in saved["expression"][0]

    # read-only (the module's server): no form to save with, and a save posted anyway is refused on the page
    before = store_files(env["store"])
    driver.get(server + "/search?" + "where=" + quote(where))
    WebDriverWait(driver, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#search-results a.neuron-link"))
    assert not driver.find_elements(By.ID, "save-form")
    assert "--allow-writes" in driver.find_element(By.ID, "results").text
    driver.execute_script(
        "const f = document.createElement('form'); f.method = 'post'; f.action = '/search/save';"
        "for (const [k, v] of Object.entries(arguments[0])) { const i = document.createElement('input');"
        " i.type = 'hidden'; i.name = k; i.value = v; f.appendChild(i); }"
        "document.body.appendChild(f); f.submit();",
        {"name": "refused-set", "model": env["model"], "checkpoint": "step1000", "where": where})
    WebDriverWait(driver, 30).until(lambda d: d.current_url.endswith("/search/save"))
    WebDriverWait(driver, 30).until(lambda d: "Read-only" in d.find_element(By.TAG_NAME, "body").text)
    assert "--allow-writes" in driver.find_element(By.TAG_NAME, "body").text
    status = driver.execute_script("return performance.getEntriesByType('navigation')[0].responseStatus")
    assert status in (403, None)  # Chromium reports the status where it supports responseStatus
    driver.save_screenshot(str(shots / "save-refused.png"))
    assert store_files(env["store"]) == before
    with negdb.connect(env["store"]) as cat:
        assert cat.sql("SELECT count(*) AS n FROM neuron_sets WHERE name = 'refused-set'")["n"][0] == 0
