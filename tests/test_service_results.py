"""The query service exposes stored evaluations and ablations (in-process, FastAPI's TestClient)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from negdb.service.app import create_app
from tests.ingest_helpers import cli, ingest_into
from tests.tiny_models import save_tiny

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = save_tiny(tmp_path_factory.mktemp("m") / "neox", "gpt_neox", seed=5)
    store = ingest_into(tmp_path_factory, model)
    res = cli(store, "ablate", "--model", str(model), "--top", "10%", "--evals", "copa,ppl", "--limit", "4",
              "--ppl-tokens", "128", "--controls", "random", "--seeds", "1", "--window", "32", "--format", "json",
              "--quiet")
    assert res.exit_code == 0, res.output
    return store


def test_results_ablations_and_metrics_endpoints(store: Path) -> None:
    with TestClient(create_app(store)) as client:
        res = client.get("/results").json()["results"]
        # baseline, ablation and one random set, each on copa and wikitext2
        assert len(res) == 6
        assert {(r["mode"], r["benchmark"]) for r in res} == {(m, b) for m in ("none", "neg")
                                                               for b in ("copa", "wikitext2")}
        assert sum(r["set_id"] is None for r in res) == 2
        only = client.get("/results", params={"benchmark": "copa"}).json()["results"]
        assert len(only) == 3 and {r["benchmark"] for r in only} == {"copa"}
        rid = next(r["result_id"] for r in res if r["benchmark"] == "copa")
        metrics = client.get(f"/results/{rid[:12]}/metrics").json()["metrics"]
        acc = next(m for m in metrics if m["metric"] == "acc" and m["level"] == "overall")
        stored = next(r for r in res if r["result_id"] == rid)
        assert acc["value"] == pytest.approx(stored["primary_value"])
        assert json.loads(stored["scoring_json"])["bos_policy"] == "lm-eval"
        assert client.get("/results/nope/metrics").status_code == 404
        abl = client.get("/ablations").json()["ablations"]
        assert sorted(a["condition"] for a in abl) == ["ablation", "baseline", "random"]
        assert {rid for a in abl for rid in a["result_ids"]} == {r["result_id"] for r in res}
        # joinable with the neurons through the set members, from user SQL
        body = {"sql": "SELECT r.benchmark, count(*) AS n FROM eval_results r JOIN neuron_set_members m "
                       "USING (set_id) JOIN neurons n ON n.layer = m.layer AND n.neuron = m.neuron "
                       "AND n.model_id = r.model_id WHERE r.mode = 'neg' GROUP BY 1 ORDER BY 1"}
        rows = client.post("/sql", json=body).json()
        assert rows["rows"], rows
