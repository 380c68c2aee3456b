"""The HTTP query service, end to end: the real `negdb serve` in a subprocess on a store filled by the real ingest.

Only loopback addresses are used. The last test reads through the service while another process ingests.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pyarrow as pa
import pyarrow.ipc
import pytest

import negdb
from tests.ingest_helpers import TINY, cli, cli_subprocess, store_files
from tests.serving import free_port as _free_port  # noqa: F401  (tests/test_service_limits.py imports it here)
from tests.tiny_models import save_step_run, save_tiny

ARROW = "application/vnd.apache.arrow.stream"
SERVER_MAX_ROWS = 1000
SERVER_TIMEOUT_S = 2.0
PER_CHECKPOINT = 3 * 64  # tiny models: 3 layers x 64 neurons

pytestmark = pytest.mark.timeout(120)


# ------------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("models")
    return {"neox": save_tiny(tmp / "neox", "gpt_neox", seed=3),
            "run": save_step_run(tmp, steps=(0, 1000), name="run")}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, models: dict[str, Path]) -> Path:
    store = tmp_path_factory.mktemp("store")
    for args in (("--model", str(models["neox"])), ("--model", str(models["run"]), "--checkpoints", "step0")):
        res = cli(store, "ingest", *args, *TINY)
        assert res.exit_code == 0, res.output
    return store


@pytest.fixture(scope="module")
def server(store: Path) -> Iterator[httpx.Client]:
    from tests.serving import serving

    with serving(store, "--max-rows", str(SERVER_MAX_ROWS), "--timeout", str(SERVER_TIMEOUT_S), timeout_s=60) as (
            base, _proc), httpx.Client(base_url=base, timeout=30.0) as client:
        yield client


def catalog_table(store: Path, sql: str, params: list | None = None) -> pa.Table:
    with negdb.connect(str(store)) as cat:
        return cat.arrow(sql, params)


def sql(client: httpx.Client, text: str, **extra: object) -> httpx.Response:
    return client.post("/sql", json={"sql": text, **extra})


# ----------------------------------------------------------------------------------------------- the tests


def test_health_docs_and_openapi(server: httpx.Client, store: Path) -> None:
    health = server.get("/health").json()
    assert health["status"] == "ok"
    assert Path(health["store"]) == store.resolve()
    ns = health["tables"]["neuron_stats"]
    assert ns == {"segments": 2, "rows": 2 * PER_CHECKPOINT}
    assert health["snapshot"]["segments"] >= 2 and health["snapshot"]["age_s"] >= 0
    assert health["limits"] == {"max_rows": SERVER_MAX_ROWS, "timeout_s": SERVER_TIMEOUT_S}
    spec = server.get("/openapi.json").json()
    for path in ("/sql", "/models", "/checkpoints", "/sets", "/neurons", "/health", "/neuron/{model_path}"):
        assert path in spec["paths"], path
    docs = server.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


def test_models_and_checkpoints(server: httpx.Client, models: dict[str, Path]) -> None:
    neox, run = str(models["neox"]), str(models["run"])
    got = server.get("/models").json()["models"]
    assert sorted(m["model_id"] for m in got) == sorted([neox, run])
    assert {m["model_id"]: m["n_checkpoints"] for m in got} == {neox: 1, run: 1}
    assert all(m["n_layers"] == 3 and m["d_mlp"] == 64 for m in got)
    cks = server.get("/checkpoints", params={"model": run}).json()["checkpoints"]
    assert [(c["model_id"], c["revision"], c["step"]) for c in cks] == [(run, "step0", 0)]
    assert len(server.get("/checkpoints").json()["checkpoints"]) == 2
    missing = server.get("/checkpoints", params={"model": "no/such-model"})
    assert missing.status_code == 404 and "no/such-model" in missing.json()["error"]


def test_schema_lists_the_views_like_the_cli(server: httpx.Client, store: Path) -> None:
    views = server.get("/schema").json()["views"]
    with negdb.connect(str(store)) as cat:
        described = cat.describe()
    assert [v["name"] for v in views] == list(dict.fromkeys(r[0] for r in described))
    assert views[0]["name"] == "neurons" and views[0]["doc"]
    cols = {(v["name"], c["name"], c["type"]) for v in views for c in v["columns"]}
    assert cols == {(view, col, typ) for view, col, typ, _ in described}
    one = server.get("/schema", params={"view": "models"}).json()["views"]
    assert [v["name"] for v in one] == ["models"]
    missing = server.get("/schema", params={"view": "nope"})
    assert missing.status_code == 404 and "neurons" in missing.json()["error"]


def test_sql_json_and_arrow_equal_the_catalog(server: httpx.Client, store: Path) -> None:
    query = ("SELECT model_id, revision, layer, neuron, w_dist, skew, frac_neg FROM neurons "
             "ORDER BY model_id, revision, layer, neuron")
    expected = catalog_table(store, query)
    res = sql(server, query)
    assert res.status_code == 200
    body = res.json()
    assert body["columns"] == expected.column_names and body["truncated"] is False
    assert body["row_count"] == expected.num_rows == 2 * PER_CHECKPOINT and body["elapsed_ms"] >= 0
    assert [tuple(r) for r in body["rows"]] == [tuple(r.values()) for r in expected.to_pylist()]

    res = server.post("/sql", json={"sql": query}, headers={"Accept": ARROW})
    assert res.status_code == 200 and res.headers["content-type"].startswith(ARROW)
    assert res.headers["x-negdb-truncated"] == "false"
    table = pa.ipc.open_stream(res.content).read_all()
    assert table.equals(expected)

    params = sql(server, "SELECT count(*) AS n FROM neuron_stats WHERE layer = ? AND w_dist > ?", params=[1, 0.0])
    assert params.json()["rows"] == [[2 * 64]]


def test_hostile_sql_is_refused_and_changes_nothing(server: httpx.Client, store: Path, tmp_path: Path) -> None:
    before = store_files(store)
    leak, evil = tmp_path / "leak.csv", tmp_path / "evil.duckdb"
    hostile = [
        "SELECT 1; DROP VIEW neurons",
        "SELECT count(*) FROM neurons; CREATE TABLE x AS SELECT 1",
        f"COPY (SELECT * FROM neuron_stats) TO '{leak}'",
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT * FROM read_text('/etc/hostname')",
        f"ATTACH '{evil}' AS evil",
        "INSTALL httpfs",
        "SET enable_external_access = true",
        "CREATE VIEW neurons AS SELECT 1 AS x",
        "WITH t AS (SELECT * FROM read_csv('/etc/passwd')) SELECT * FROM t",
    ]
    for text in hostile:
        res = sql(server, text)
        assert res.status_code == 400, (text, res.status_code, res.text)
        assert res.json()["error"], text
    assert not leak.exists() and not evil.exists()
    assert store_files(store) == before
    ok = sql(server, "SELECT count(*) AS n FROM neurons")
    assert ok.status_code == 200 and ok.json()["rows"] == [[2 * PER_CHECKPOINT]]
    bad = server.post("/sql", json={"nosql": 1})
    assert bad.status_code == 400 and "error" in bad.json()


def test_row_limit_truncates(server: httpx.Client) -> None:
    body = sql(server, "SELECT layer, neuron FROM neuron_stats ORDER BY 1, 2", max_rows=5).json()
    assert body["row_count"] == 5 and body["truncated"] is True
    assert body["rows"] == [[0, 0], [0, 0], [0, 1], [0, 1], [0, 2]]
    capped = sql(server, "SELECT a.neuron FROM neuron_stats a, neuron_stats b").json()  # the server's limit

    assert capped["row_count"] == SERVER_MAX_ROWS and capped["truncated"] is True
    exact = sql(server, "SELECT neuron FROM neuron_stats WHERE layer = 0 AND neuron < 3", max_rows=6).json()
    assert exact["row_count"] == 6 and exact["truncated"] is False
    arrow = server.post("/sql", json={"sql": "SELECT * FROM neuron_stats", "max_rows": 7}, headers={"Accept": ARROW})
    assert arrow.headers["x-negdb-truncated"] == "true"
    assert pa.ipc.open_stream(arrow.content).read_all().num_rows == 7
    too_many = sql(server, "SELECT 1", max_rows=SERVER_MAX_ROWS + 1)
    assert too_many.status_code == 400 and str(SERVER_MAX_ROWS) in too_many.json()["error"]


def test_time_limit(server: httpx.Client) -> None:
    start = time.monotonic()
    res = sql(server, "SELECT count(*) FROM neuron_stats a, neuron_stats b, neuron_stats c, neuron_stats d "
                      "WHERE hash(a.neuron, b.neuron, c.neuron, d.w_dist) % 1000003 = 7")  # ~2e10 rows
    assert res.status_code in (408, 400), res.text
    assert "time" in res.json()["error"].lower()
    assert time.monotonic() - start < SERVER_TIMEOUT_S + 8
    assert sql(server, "SELECT 42 AS x").json()["rows"] == [[42]]  # the service goes on


def test_neurons_where(server: httpx.Client, store: Path, models: dict[str, Path]) -> None:
    model = str(models["neox"])
    expected = catalog_table(store, "SELECT layer, neuron, w_dist FROM neurons WHERE model_id = ? AND "
                                    "revision = 'final' AND w_dist > 0.15 AND layer < 2 ORDER BY layer, neuron",
                             [model])
    assert 0 < expected.num_rows < 2 * 64
    res = server.get("/neurons", params={"model": model, "checkpoint": "final",
                                         "where": "w_dist > 0.15 AND layer < 2"})
    assert res.status_code == 200, res.text
    body = res.json()
    cols = body["columns"]
    got = [(r[cols.index("layer")], r[cols.index("neuron")], r[cols.index("w_dist")]) for r in body["rows"]]
    assert got == [tuple(r.values()) for r in expected.to_pylist()] and body["truncated"] is False
    assert {"step", "dataset", "w_reference", "md"} <= set(cols)

    limited = server.get("/neurons", params={"model": model, "limit": 3}).json()
    assert limited["row_count"] == 3 and limited["truncated"] is True
    arrow = server.get("/neurons", params={"model": model, "where": "layer = 2"}, headers={"Accept": ARROW})
    assert pa.ipc.open_stream(arrow.content).read_all().num_rows == 64

    for where in ("w_dist > 0.1; DROP VIEW neurons", "w_dist > (SELECT max(w_dist) FROM read_csv('/etc/passwd'))",
                  "1=1) OR (1=1"):
        bad = server.get("/neurons", params={"model": model, "where": where})
        assert bad.status_code == 400, (where, bad.text)
    assert server.get("/neurons", params={"model": "nope"}).status_code == 404
    assert server.get("/neurons", params={"model": model, "checkpoint": "step999"}).status_code == 404


def test_neuron_report(server: httpx.Client, store: Path, models: dict[str, Path]) -> None:
    model = str(models["run"])  # an absolute path: the model id contains '/'
    expected = catalog_table(store, "SELECT w_dist, n FROM neuron_stats WHERE model_id = ? AND layer = 1 "
                                    "AND neuron = 5", [model]).to_pylist()[0]
    by_path = server.get(f"/neuron/{model}/step0/1/5")
    assert by_path.status_code == 200, by_path.text
    rep = by_path.json()
    assert rep["stats"]["w_dist"] == pytest.approx(expected["w_dist"])
    assert rep["layer"] == 1 and rep["neuron"] == 5
    hist = rep["histogram"]
    assert sum(hist["counts"]) == expected["n"] and len(hist["edges"]) == len(hist["counts"]) + 1
    assert rep["contexts"] and all(isinstance(v, list) for v in rep["contexts"].values())
    encoded = server.get(f"/neuron/{quote(model, safe='')}/step0/1/5")
    by_query = server.get("/neuron", params={"model": model, "checkpoint": "step0", "layer": 1, "index": 5})
    assert encoded.json()["stats"] == by_query.json()["stats"] == rep["stats"]

    assert server.get(f"/neuron/{model}/step0/1/64").status_code == 404
    assert server.get(f"/neuron/{model}/step0/7/0").status_code == 404
    assert server.get(f"/neuron/{model}/step7/1/5").status_code == 404
    assert server.get("/neuron/no/such/model/final/0/0").status_code == 404
    assert server.get(f"/neuron/{model}/step0/one/5").status_code == 400


def test_sets(server: httpx.Client, store: Path, models: dict[str, Path]) -> None:
    from negdb.query import sets

    assert server.get("/sets").json() == {"sets": []}
    with negdb.connect(str(store)) as cat:
        chosen = sets.select(cat, str(models["neox"]), where="w_dist > 0.15")
        sets.save(cat, chosen, "wide")
    deadline = time.monotonic() + 5
    while not (listed := server.get("/sets").json()["sets"]) and time.monotonic() < deadline:
        time.sleep(0.1)  # the service notices the new segments within its check interval
    assert [s["name"] for s in listed] == ["wide"] and listed[0]["n_members"] == chosen.n_members
    one = server.get("/sets/wide").json()
    assert one["members"] == [list(r) for r in chosen.members.rows()]
    assert server.get("/sets/missing").status_code == 404


def test_reads_during_an_ingest_are_complete(server: httpx.Client, store: Path, models: dict[str, Path]) -> None:
    """While another process ingests a checkpoint, every answer is 200 and every count is all-or-nothing."""
    query = ("SELECT count(*) AS n, count(*) FILTER (WHERE revision = 'step1000') AS new, "
             "count(DISTINCT layer) FILTER (WHERE revision = 'step1000') AS new_layers FROM neurons")
    before = sql(server, query).json()["rows"][0]
    assert before[1] == 0
    proc = cli_subprocess(store, "ingest", "--model", str(models["run"]), "--checkpoints", "step1000",
                          "--tokens", "4096", "--seq-len", "32", "--batch-tokens", "64", "--md-pairs", "100",
                          "--quiet", wait=False)
    seen, during = [], 0
    try:
        while True:
            running = proc.poll() is None
            res = sql(server, query)
            assert res.status_code == 200, res.text
            assert server.get("/health").status_code == 200
            seen.append(tuple(res.json()["rows"][0]))
            during += running
            if not running:
                break
            time.sleep(0.02)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        deadline = time.monotonic() + 5  # the next listing check (every 0.5 s) shows the new segment
        while seen[-1][1] == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
            seen.append(tuple(sql(server, query).json()["rows"][0]))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    after = (before[0] + PER_CHECKPOINT, PER_CHECKPOINT, 3)
    print(f"{during} reads while the ingest ran; counts seen: {sorted(set(seen))}")
    assert during >= 5, f"only {during} reads while the ingest ran"
    assert set(seen) <= {tuple(before), after}, sorted(set(seen))
    assert seen[-1] == after
    assert [s[0] for s in seen] == sorted(s[0] for s in seen)  # never back to the old snapshot
    cks = server.get("/checkpoints", params={"model": str(models["run"])}).json()["checkpoints"]
    assert [c["revision"] for c in cks] == ["step0", "step1000"]
    assert server.get("/health").json()["tables"]["neuron_stats"]["rows"] == after[0]
